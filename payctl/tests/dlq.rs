//! `payctl dlq` and `payctl compensate` where no stack is needed: usage errors exit 2 before any
//! AWS call, and an unreachable stack exits 1 without printing credentials. The commands against
//! a running stack are tested end to end in `tests/`.

#![allow(clippy::unwrap_used)]

use std::process::Command;

const SECRET_KEY: &str = "payctl-test-secret-do-not-print";

/// Runs payctl with only `env` of the variables it reads set; exit code, stdout, stderr.
fn payctl(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_payctl"));
    for name in ["COMPENSATIONS_TABLE", "EFFECTS_TABLES", "AWS_PROFILE"] {
        command.env_remove(name);
    }
    // An endpoint nothing listens on: no test here may reach a real account.
    command
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_MAX_ATTEMPTS", "1")
        .envs(env.iter().copied());
    let out = command.args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_empty_table_is_a_usage_error() {
    for args in [
        &["dlq", "list"][..],
        &["dlq", "redrive"],
        &["dlq", "redrive", "--id", "dead-letter:order-updater:m-1"],
    ] {
        let (code, stdout, stderr) = payctl(args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("--compensations-table"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stdout, "", "{args:?}");
        let (code, _, stderr) = payctl(args, &[("COMPENSATIONS_TABLE", "")]);
        assert_eq!(code, 2, "{args:?} with an empty variable: {stderr}");
    }
}

#[test]
fn compensate_needs_every_consumers_effects_table() {
    let table = [("COMPENSATIONS_TABLE", "compensations")];
    let (code, _, stderr) = payctl(&["compensate", "dead-letter:order-updater:m-1"], &table);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--effects-tables"), "{stderr}");

    for (tables, expected) in [
        ("order-updater=orders", "no entry for coupon-granter"),
        (
            "order-updater=o,coupon-granter=c,ledger=l",
            "unknown consumer",
        ),
        ("order-updater", "not consumer=value"),
    ] {
        let (code, stdout, stderr) = payctl(
            &[
                "compensate",
                "dead-letter:order-updater:m-1",
                "--effects-tables",
                tables,
            ],
            &table,
        );
        assert_eq!(code, 2, "{tables}: {stderr}");
        assert!(stderr.contains(expected), "{tables}: {stderr}");
        assert_eq!(stdout, "", "{tables}");
    }
}

#[test]
fn an_unreachable_stack_fails_without_printing_credentials() {
    let env = [
        ("COMPENSATIONS_TABLE", "compensations"),
        (
            "EFFECTS_TABLES",
            "order-updater=orders,coupon-granter=coupons",
        ),
    ];
    for args in [
        &["dlq", "list"][..],
        &["dlq", "list", "--json"],
        &["dlq", "redrive"],
        &["compensate", "dead-letter:order-updater:m-1"],
    ] {
        let (code, stdout, stderr) = payctl(args, &env);
        assert_eq!(code, 1, "{args:?}: {stdout}{stderr}");
        assert!(stderr.starts_with("payctl: "), "{args:?}: {stderr}");
        assert!(
            !stdout.contains(SECRET_KEY) && !stderr.contains(SECRET_KEY),
            "{args:?}"
        );
    }
    let (code, stdout, stderr) = payctl(
        &["dlq", "redrive", "--id", "dead-letter:order-updater:m-1"],
        &env,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.starts_with("dead-letter:order-updater:m-1  FAILED: reading it: "),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("redrive: 0 sent back, 1 failed, 0 left as they were\n"),
        "{stdout}"
    );
}
