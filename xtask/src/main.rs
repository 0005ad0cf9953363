//! `cargo xtask <task>`: see `--help`.

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use xtask::stack::{StackOptions, spawn};

mod bench;
mod demo;
mod load;

#[derive(Parser)]
#[command(about = "Dev tasks for the payment platform")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Boot the local stack and keep it up in the foreground (Ctrl-C stops it).
    Up {
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// Time runs this many times faster for the sandbox's notification resends, the poller's
        /// backoff and the template's schedules (at least 1 s a step).
        #[arg(long, default_value_t = 60)]
        time_scale: u32,
    },
    /// Boot the stack and push a demo batch of payments through it, under faults.
    Demo {
        #[arg(long, default_value_t = 40)]
        payments: usize,
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Which provider protocol the batch goes through; the sandbox plays each of them.
        #[arg(long, default_value = "sandbox", value_parser = ["sandbox", "alipay", "wechatpay", "unionpay"])]
        provider: String,
    },
    /// Drive N payments through the stack (the running one named by `PAYCORE_API_URL`, or a fresh
    /// one) under faults, duplicate creates, double pays and concurrent refunds; check the end
    /// state against the provider sandbox; print throughput and latency per route.
    Load {
        #[arg(long, default_value_t = 100)]
        payments: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value = "sandbox", value_parser = ["sandbox", "alipay", "wechatpay", "unionpay"])]
        provider: String,
    },
    /// Set up what the tests need and run every test against a fresh local stack.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Cold start, binary size and peak RSS of every function, plus in-process throughput.
    Bench {
        /// Cold starts measured per function (the median is reported).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Invocations served to one process before its peak RSS is read.
        #[arg(long, default_value_t = 100)]
        invocations: usize,
    },
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XTASK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logs();
    match Cli::parse().task {
        Task::Up { port, time_scale } => up(port, time_scale).await,
        Task::Demo {
            payments,
            port,
            provider,
        } => demo::run(payments, port, &provider).await,
        Task::Load {
            payments,
            concurrency,
            provider,
        } => load::run(payments, concurrency, &provider).await,
        Task::Test { cargo_args } => test(cargo_args).await,
        Task::Bench { runs, invocations } => bench::run(runs, invocations).await,
    }
}

async fn up(port: u16, time_scale: u32) -> anyhow::Result<()> {
    let stack = spawn(StackOptions {
        api_port: port,
        time_scale,
        ..StackOptions::default()
    })
    .await?;
    eprintln!("local stack is up");
    eprintln!("  API       {}", stack.api_url);
    eprintln!(
        "  sandbox   {}  (fault knobs: PUT {}/admin/faults)",
        stack.sandbox_url, stack.sandbox_url
    );
    eprintln!("  moto      {}", stack.moto_endpoint);
    eprintln!("  logs      {}", stack.log_dir.display());
    eprintln!("Ctrl-C to stop.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    stack.shutdown().await;
    Ok(())
}

/// Runs `cargo test`, passing its output through and adding up its `test result:` lines.
fn run_counting(mut command: Command) -> anyhow::Result<(std::process::ExitStatus, (u64, u64))> {
    use std::io::{BufRead as _, Write as _};
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut totals = (0, 0);
    let mut out = std::io::stdout().lock();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        if let Some(rest) = line.strip_prefix("test result: ") {
            totals.0 += count_before(rest, " passed");
            totals.1 += count_before(rest, " failed");
        }
        writeln!(out, "{line}").context("writing test output")?;
    }
    Ok((child.wait().context("waiting for cargo test")?, totals))
}

/// The number right before `label` in `ok. 12 passed; 0 failed; ...`.
fn count_before(text: &str, label: &str) -> u64 {
    text.split(';')
        .find_map(|part| {
            let part = part
                .trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ");
            part.strip_suffix(label)?.trim().parse().ok()
        })
        .unwrap_or(0)
}

async fn test(cargo_args: Vec<String>) -> anyhow::Result<()> {
    let root = xtask::venv::workspace_root();
    let work_dir = std::env::temp_dir().join(format!("paycore-test-{}", std::process::id()));
    let options = StackOptions {
        api_port: 0,
        time_scale: 1000,
        stack_name: "paytest".into(),
        work_dir: work_dir.clone(),
        ..StackOptions::default()
    };
    eprintln!("xtask: building and booting the local stack");
    let stack = spawn(options).await?;
    eprintln!(
        "xtask: stack up at {} (logs in {})",
        stack.api_url,
        stack.log_dir.display()
    );
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(&root)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(&cargo_args)
        .envs(stack.env());
    let (status, totals) = tokio::task::spawn_blocking(move || run_counting(command)).await??;
    stack.shutdown().await;
    // One closing line for the whole workspace: cargo's own last line is some crate's summary.
    {
        use std::io::Write as _;
        writeln!(
            std::io::stdout(),
            "tests: {} passed, {} failed",
            totals.0,
            totals.1
        )
        .context("stdout")?;
    }
    if !status.success() {
        bail!(
            "tests failed (stack logs: {})",
            work_dir.join("logs").display()
        );
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}
