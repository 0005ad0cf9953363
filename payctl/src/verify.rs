//! `payctl verify-callback`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use shared::crypto::RsaVerifier;
use shared::domain::Timestamp;
use shared::ports::{CallbackRejection, Clock, Notification};
use shared::provider::sandbox;

use crate::raw_request::{self, RawRequest};

#[derive(clap::Args)]
pub struct Args {
    /// Which provider sent it.
    #[arg(long, value_parser = ["sandbox", "alipay", "wechatpay", "unionpay"])]
    provider: String,
    /// The raw HTTP request as received: request line, headers, blank line, body.
    #[arg(long)]
    request: PathBuf,
    /// The provider's public key (PEM) that should verify it.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// Our merchant id (or app id) at the provider, for the cross-check.
    #[arg(long)]
    merchant_id: Option<String>,
    /// Check the replay window as of this unix time instead of now (to examine an old request).
    #[arg(long)]
    at_unix_s: Option<i64>,
}

/// What a provider's check produced, for printing.
struct Report {
    request_line: String,
    signed_content: Option<Vec<u8>>,
    outcome: Result<Notification, CallbackRejection>,
}

#[allow(clippy::print_stdout)]
pub fn run(args: &Args) -> ExitCode {
    let report = match check(args) {
        Ok(report) => report,
        Err(usage) => {
            eprintln!("payctl: {usage:#}");
            return ExitCode::from(2);
        }
    };
    println!("provider        {}", args.provider);
    println!("request         {}", report.request_line);
    if let Some(content) = &report.signed_content {
        println!(
            "signed content  ({} bytes; each line below is one line of it, \\n-terminated):",
            content.len()
        );
        for line in String::from_utf8_lossy(content).split_inclusive('\n') {
            println!("  | {}", line.strip_suffix('\n').unwrap_or(line));
        }
    }
    match report.outcome {
        Ok(n) => {
            println!("signature       valid");
            println!(
                "notification    payment_id={} status={:?} amount_minor={} currency={} notify_id={} provider_trade_no={}",
                n.payment_id,
                n.status,
                n.amount_minor,
                n.currency,
                n.notify_id,
                n.provider_trade_no.as_deref().unwrap_or("-")
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("signature       INVALID");
            println!("why             {why}");
            ExitCode::from(1)
        }
    }
}

fn check(args: &Args) -> anyhow::Result<Report> {
    let raw = std::fs::read(&args.request)
        .with_context(|| format!("reading {}", args.request.display()))?;
    let request = raw_request::parse(&raw)?;
    let now = match args.at_unix_s {
        Some(s) => Timestamp::from_unix_s(s),
        None => shared::clock::SystemClock.now(),
    };
    match args.provider.as_str() {
        "sandbox" => check_sandbox(args, &request, now),
        other => bail!(
            "verify-callback for {other} arrives with its adapter; only sandbox is supported so far"
        ),
    }
}

fn check_sandbox(args: &Args, request: &RawRequest, now: Timestamp) -> anyhow::Result<Report> {
    let key_path = args
        .public_key
        .as_ref()
        .context("--public-key <pem> is required for sandbox")?;
    let merchant_id = args
        .merchant_id
        .as_deref()
        .context("--merchant-id is required for sandbox")?;
    let pem = std::fs::read_to_string(key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let key = RsaVerifier::from_pem(&pem).context("--public-key")?;
    Ok(Report {
        request_line: format!("{} {}", request.method, request.target),
        signed_content: sandbox::signed_content(&request.headers, &request.body).ok(),
        outcome: sandbox::verify_notification(
            &key,
            merchant_id,
            &request.headers,
            &request.body,
            now,
        ),
    })
}
