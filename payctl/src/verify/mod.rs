//! `payctl verify-callback`: flags and printing here, one module per provider for the check.

mod alipay;
mod sandbox;
mod unionpay;
mod wechatpay;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use shared::domain::Timestamp;
use shared::ports::{CallbackRejection, Clock, Verified};

use crate::raw_request;

#[derive(clap::Args)]
pub struct Args {
    /// Which provider sent it.
    #[arg(long, value_parser = ["sandbox", "alipay", "wechatpay", "unionpay"])]
    provider: String,
    /// The raw HTTP request as received: request line, headers, blank line, body.
    #[arg(long)]
    request: PathBuf,
    /// sandbox, alipay: the provider's public key (PEM `PUBLIC KEY`).
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// sandbox: our merchant id; wechatpay: our mchid; unionpay: our merId.
    #[arg(long)]
    merchant_id: Option<String>,
    /// alipay: our app_id; wechatpay: our appid.
    #[arg(long)]
    app_id: Option<String>,
    /// alipay: the seller_id (2088...) notifications must name, if we check it.
    #[arg(long)]
    seller_id: Option<String>,
    /// wechatpay: a platform certificate bundle (PEM), each named by its serial. Repeatable.
    #[arg(long)]
    platform_cert: Vec<PathBuf>,
    /// wechatpay: a platform public key (PEM), paired in order with --public-key-id. Repeatable.
    #[arg(long)]
    platform_public_key: Vec<PathBuf>,
    /// wechatpay: the PUB_KEY_ID_... of the --platform-public-key at the same position.
    #[arg(long)]
    public_key_id: Vec<String>,
    /// wechatpay: a file holding the raw APIv3 key (a trailing newline is ignored).
    #[arg(long)]
    api_v3_key: Option<PathBuf>,
    /// unionpay: UnionPay's root certificate (PEM).
    #[arg(long)]
    root_cert: Option<PathBuf>,
    /// unionpay: UnionPay's intermediate certificate (PEM), signed by the root.
    #[arg(long)]
    intermediate_cert: Option<PathBuf>,
    /// unionpay: the company the signer certificate's CN must name.
    #[arg(long, default_value = unionpay::PRODUCTION_SIGNER_CN)]
    signer_cn: String,
    /// The clock for replay windows and certificate validity, instead of now (to examine an old
    /// request).
    #[arg(long)]
    at_unix_s: Option<i64>,
}

/// What a provider's check produced, for printing.
struct Report {
    request_line: String,
    /// The exact canonical content the signature covers, when it could be built.
    signed_content: Option<Vec<u8>>,
    /// When the signature is not over the content itself (UnionPay): the text it is over.
    signed_text: Option<String>,
    outcome: Result<Verified, CallbackRejection>,
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
        print_content(content);
    }
    if let Some(text) = &report.signed_text {
        println!("signed sha256   {text}  (SHA256withRSA is over these hex characters)");
    }
    match report.outcome {
        Ok(verified) => {
            println!("signature       valid");
            print_verified(&verified);
            ExitCode::SUCCESS
        }
        Err(why) => {
            match why {
                CallbackRejection::BadSignature(_) | CallbackRejection::StaleTimestamp { .. } => {
                    println!("signature       INVALID");
                }
                // Possibly after a valid signature: the content is not acceptable.
                CallbackRejection::Malformed(_) | CallbackRejection::WrongMerchant(_) => {
                    println!("callback        REJECTED");
                }
            }
            println!("why             {why}");
            ExitCode::from(1)
        }
    }
}

/// What a verified callback says, on one line: a payment or a refund notification.
#[allow(clippy::print_stdout)]
fn print_verified(verified: &Verified) {
    match verified {
        Verified::Payment(n) => println!(
            "notification    payment_id={} status={:?} amount_minor={} currency={} notify_id={} provider_trade_no={}",
            n.payment_id,
            n.status,
            n.amount_minor,
            n.currency,
            n.notify_id,
            n.provider_trade_no.as_deref().unwrap_or("-")
        ),
        Verified::Refund(r) => println!(
            "refund notice   payment_id={} refund_no={} state={:?} amount_minor={} notify_id={}",
            r.payment_id, r.refund_no, r.state, r.amount_minor, r.notify_id
        ),
    }
}

/// One line of output per line of the content; a carriage return shows as `\r`.
#[allow(clippy::print_stdout)]
fn print_content(content: &[u8]) {
    let ending = if content.ends_with(b"\n") {
        "each \\n-terminated"
    } else {
        "no final \\n"
    };
    println!(
        "signed content  ({} bytes; each line below is one line of it, {ending}):",
        content.len()
    );
    for line in String::from_utf8_lossy(content).split_inclusive('\n') {
        let line = line.strip_suffix('\n').unwrap_or(line);
        println!("  | {}", line.replace('\r', "\\r"));
    }
}

fn check(args: &Args) -> anyhow::Result<Report> {
    let raw = read(&args.request)?;
    let request = raw_request::parse(&raw)?;
    let now = match args.at_unix_s {
        Some(s) => Timestamp::from_unix_s(s),
        None => shared::clock::SystemClock.now(),
    };
    let (signed_content, signed_text, outcome) = match args.provider.as_str() {
        "sandbox" => sandbox::check(args, &request, now)?,
        "alipay" => alipay::check(args, &request)?,
        "wechatpay" => wechatpay::check(args, &request, now)?,
        "unionpay" => unionpay::check(args, &request, now)?,
        other => anyhow::bail!("unknown provider {other}"),
    };
    Ok(Report {
        request_line: format!("{} {}", request.method, request.target),
        signed_content,
        signed_text,
        outcome,
    })
}

/// What each provider module returns: see [`Report`].
type Checked = (
    Option<Vec<u8>>,
    Option<String>,
    Result<Verified, CallbackRejection>,
);

/// A flag the provider needs, or a usage error naming it.
fn required<'a, T: ?Sized>(
    value: Option<&'a T>,
    flag: &str,
    provider: &str,
) -> anyhow::Result<&'a T> {
    value.with_context(|| format!("{flag} is required for {provider}"))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
