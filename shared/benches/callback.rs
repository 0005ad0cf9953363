//! In-process throughput on one core (`cargo bench -p shared --bench callback`):
//! - callback verify-and-apply: `handle_callback` on the in-memory store with the sandbox adapter,
//!   over notifications signed beforehand for payments created beforehand;
//! - bare RSA-2048 SHA256withRSA verify with aws-lc-rs (`RsaVerifier`).
//!
//! Prints one parseable line (`cargo xtask bench` reads it):
//! `callback-bench callback_per_s=N verify_per_s=M notifications=.. verifies=.. rounds=..`

#![allow(clippy::print_stdout, reason = "the result line is the output")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use shared::app::Deps;
use shared::app::callback::{CallbackResult, handle_callback};
use shared::app::create::RECORD_TTL_S;
use shared::clock::{RandomIds, SystemClock};
use shared::crypto::{RsaSigner, RsaVerifier};
use shared::domain::idempotency::IdempotencyRecord;
use shared::domain::payment::INITIAL_VERSION;
use shared::domain::{
    AmountMinor, Currency, HistoryEntry, OrderId, Payment, PaymentId, PaymentStatus, ProviderName,
    Timestamp,
};
use shared::ports::{Clock, InsertOutcome, NewPayment, PaymentStore, Providers};
use shared::provider::{SandboxConfig, SandboxProvider};
use shared::store::MemoryStore;

/// Notifications per round (each round gets a fresh store with the same pending payments).
const NOTIFICATIONS: usize = 2000;
/// Bare verifies per round.
const VERIFIES: usize = 10_000;
const ROUNDS: usize = 5;
const MERCHANT_ID: &str = "M100000001";
const AMOUNT_MINOR: i64 = 1999;

/// One signed delivery, ready to hand to `handle_callback`.
struct Delivery {
    headers: http::HeaderMap,
    body: Vec<u8>,
    /// `timestamp\nnonce\nbody\n` and its raw signature, for the bare verify loop.
    message: Vec<u8>,
    signature: Vec<u8>,
}

/// A fresh RSA-2048 key pair as (PKCS#8 PEM, SPKI PEM).
fn key_pair_pem() -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate(KeySize::Rsa2048).map_err(|e| anyhow!("RSA keygen: {e}"))?;
    let private: Pkcs8V1Der<'_> = key.as_der().map_err(|e| anyhow!("PKCS#8: {e}"))?;
    let public: PublicKeyX509Der<'_> = key
        .public_key()
        .as_der()
        .map_err(|e| anyhow!("SPKI: {e}"))?;
    Ok((
        pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref().to_vec())),
        pem::encode(&pem::Pem::new("PUBLIC KEY", public.as_ref().to_vec())),
    ))
}

fn payment_id(n: usize) -> PaymentId {
    PaymentId::from_parts(1_800_000_000_000, u128::try_from(n).unwrap_or(0))
}

fn new_payment(n: usize, now: Timestamp) -> anyhow::Result<NewPayment> {
    let payment = Payment {
        payment_id: payment_id(n),
        order_id: OrderId::parse(&format!("bench-{n}"))?,
        amount_minor: AmountMinor::new(AMOUNT_MINOR)?,
        currency: Currency::Cny,
        provider: ProviderName::Sandbox,
        subject: "bench".into(),
        attempt: 1,
        status: PaymentStatus::Pending,
        version: INITIAL_VERSION,
        expires_at: now.plus_s(900),
        created_at: now,
        updated_at: now,
        pay_url: None,
        provider_trade_no: None,
        next_check_at: None,
        checks_done: 0,
        unknown_checks: 0,
        recent_checks: Vec::new(),
        create_unknown: false,
        refund_reserved_minor: 0,
        refunded_minor: 0,
        status_reason: None,
        effects_check_at: None,
        effects_republished: 0,
    };
    let claim = IdempotencyRecord::claim(
        format!("create-payment#bench-{n}"),
        "bench".into(),
        now.plus_s(30),
        now.plus_s(RECORD_TTL_S),
        payment.payment_id.to_string(),
    );
    let history = HistoryEntry::created(now);
    Ok(NewPayment {
        payment,
        history,
        claim,
        replaces: None,
    })
}

/// Signs the `PAID` notification for payment `n`, as the sandbox would send it.
fn delivery(signer: &RsaSigner, n: usize, now: Timestamp) -> anyhow::Result<Delivery> {
    let body = serde_json::json!({
        "notify_id": format!("N{n}"),
        "merchant_id": MERCHANT_ID,
        "out_trade_no": payment_id(n).as_str(),
        "trade_no": format!("T{n}"),
        "status": "PAID",
        "amount_minor": AMOUNT_MINOR,
        "currency": "CNY",
    })
    .to_string()
    .into_bytes();
    let timestamp = now.unix_s().to_string();
    let nonce = format!("{n:024x}");
    let mut message = format!("{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(&body);
    message.push(b'\n');
    let signature = signer.sign(&message);
    ensure!(!signature.is_empty(), "signing failed");
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse()?);
    headers.insert("x-sandbox-timestamp", timestamp.parse()?);
    headers.insert("x-sandbox-nonce", nonce.parse()?);
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &signature);
    headers.insert("x-sandbox-signature", b64.parse()?);
    Ok(Delivery {
        headers,
        body,
        message,
        signature,
    })
}

fn deps(provider_public: &str) -> anyhow::Result<(Deps, Arc<MemoryStore>)> {
    let (merchant_private, _) = key_pair_pem()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = SandboxConfig {
        base_url: "http://127.0.0.1:9".into(),
        merchant_id: MERCHANT_ID.into(),
        merchant_key: RsaSigner::from_pem(&merchant_private)?,
        provider_key: RsaVerifier::from_pem(provider_public)?,
        notify_url: "http://127.0.0.1:9/callbacks/sandbox".into(),
        timeout: Duration::from_secs(1),
    };
    let store = Arc::new(MemoryStore::new());
    let deps = Deps {
        store: store.clone(),
        providers: Providers::default()
            .with(Arc::new(SandboxProvider::new(config, clock.clone())?)),
        clock,
        ids: Arc::new(RandomIds),
        poll: Default::default(),
    };
    Ok((deps, store))
}

/// `count` operations in `elapsed`, per second (integer arithmetic).
fn per_second(count: usize, elapsed: Duration) -> u128 {
    let nanos = elapsed.as_nanos().max(1);
    u128::try_from(count).unwrap_or(0) * 1_000_000_000 / nanos
}

fn median(mut values: Vec<u128>) -> u128 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// One round: a fresh store with every payment pending, then every delivery timed.
async fn callback_round(
    provider_public: &str,
    deliveries: &[Delivery],
    now: Timestamp,
) -> anyhow::Result<u128> {
    let (deps, store) = deps(provider_public)?;
    for n in 0..deliveries.len() {
        let outcome = store.insert_payment(&new_payment(n, now)?, now).await?;
        ensure!(
            outcome == InsertOutcome::Inserted,
            "insert {n}: {outcome:?}"
        );
    }
    let started = Instant::now();
    for (n, d) in deliveries.iter().enumerate() {
        let outcome = handle_callback(&deps, ProviderName::Sandbox, &d.headers, &d.body)
            .await
            .context("sandbox provider not configured")?;
        if outcome.result != CallbackResult::Applied {
            bail!("delivery {n}: {:?} {}", outcome.result, outcome.reply.body);
        }
    }
    Ok(per_second(deliveries.len(), started.elapsed()))
}

fn verify_round(verifier: &RsaVerifier, deliveries: &[Delivery]) -> anyhow::Result<u128> {
    let started = Instant::now();
    for d in deliveries.iter().cycle().take(VERIFIES) {
        if !verifier.verify(black_box(&d.message), black_box(&d.signature)) {
            bail!("a valid signature did not verify");
        }
    }
    Ok(per_second(VERIFIES, started.elapsed()))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing to configure.
    let keys = key_pair_pem()?;
    let signer = RsaSigner::from_pem(&keys.0)?;
    let verifier = RsaVerifier::from_pem(&keys.1)?;
    let now = SystemClock.now();
    let deliveries = (0..NOTIFICATIONS)
        .map(|n| delivery(&signer, n, now))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("building the current-thread runtime")?;
    let mut callbacks = Vec::new();
    let mut verifies = Vec::new();
    verify_round(&verifier, &deliveries)?; // warm-up
    for _ in 0..ROUNDS {
        callbacks.push(runtime.block_on(callback_round(&keys.1, &deliveries, now))?);
        verifies.push(verify_round(&verifier, &deliveries)?);
    }
    println!(
        "callback-bench callback_per_s={} verify_per_s={} notifications={NOTIFICATIONS} verifies={VERIFIES} rounds={ROUNDS}",
        median(callbacks),
        median(verifies)
    );
    Ok(())
}
