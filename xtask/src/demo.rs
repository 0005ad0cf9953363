//! The demo: a batch of payments through the local stack under faults, with a readable summary.
//!
//! It speaks HTTP to the API as a merchant would, and to the sandbox's pay URLs and admin API as
//! the payer and the test operator would; then it reads the consumers' tables (the order and
//! marketing platforms' records) and the dead letters, as those platforms and an operator would.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use xtask::stack::{StackOptions, spawn};

/// What happens to one payment's notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    None,
    Dropped,
    Duplicated,
    Delayed,
    Tampered,
    Forged,
    Silent,
}

impl Fault {
    /// A fixed spread: about a fifth dropped, a seventh duplicated, a sixth delayed, one tampered,
    /// one forged, and one in ten never notified at all.
    fn for_index(i: usize) -> Self {
        match i {
            3 => Self::Tampered,
            8 => Self::Forged,
            _ if i % 10 == 9 => Self::Silent,
            _ if i % 5 == 1 => Self::Dropped,
            _ if i % 7 == 2 => Self::Duplicated,
            _ if i % 6 == 4 => Self::Delayed,
            _ => Self::None,
        }
    }

    fn knobs(self) -> Value {
        match self {
            Self::None => json!({}),
            Self::Dropped => json!({ "drop_first": 1 }),
            Self::Duplicated => json!({ "duplicate": 2 }),
            Self::Delayed => json!({ "delay_ms": 800 }),
            Self::Tampered => json!({ "tamper_amount": true }),
            Self::Forged => json!({ "forge": true }),
            Self::Silent => json!({ "never_notify": true }),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::None => "clean",
            Self::Dropped => "first delivery dropped",
            Self::Duplicated => "each delivery sent 3 times",
            Self::Delayed => "delivery delayed 800 ms",
            Self::Tampered => "amount tampered (re-signed)",
            Self::Forged => "signature forged",
            Self::Silent => "never notified",
        }
    }
}

struct Demo {
    http: reqwest::Client,
    api: String,
    sandbox: String,
    provider: String,
}

struct Created {
    order_id: String,
    payment_id: String,
    pay_url: String,
    fault: Fault,
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(what.to_owned());
    bar
}

impl Demo {
    async fn create(&self, run: &str, i: usize) -> anyhow::Result<Created> {
        let fault = Fault::for_index(i);
        let subject = format!("demo {run} #{i:03}");
        self.set_faults(&subject, fault).await?;
        let amount_minor = 100 + i64::try_from(i)? * 25;
        let order_id = format!("demo-{run}-{i:03}");
        let body = json!({
            "order_id": order_id,
            "amount_minor": amount_minor,
            "currency": "CNY",
            "provider": self.provider,
            "subject": subject,
        });
        let reply: Value = self
            .http
            .post(format!("{}/payments", self.api))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let field = |name: &str| {
            reply[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("create answered {reply}"))
        };
        let payment_id = field("payment_id")?;
        // UnionPay's consume carries no subject: its sandbox scopes knobs by order id (our
        // payment id) instead, so set them under that scope too, before anyone pays.
        self.set_faults(&payment_id, fault).await?;
        Ok(Created {
            order_id,
            payment_id,
            pay_url: field("pay_url")?,
            fault,
        })
    }

    /// Fault knobs apply to trades whose sandbox subject starts with `scope`.
    async fn set_faults(&self, scope: &str, fault: Fault) -> anyhow::Result<()> {
        set_faults(&self.http, &self.sandbox, scope, fault.knobs()).await
    }

    async fn payment(&self, payment_id: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/payments/{payment_id}", self.api))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn status(&self, payment_id: &str) -> anyhow::Result<String> {
        let reply = self.payment(payment_id).await?;
        Ok(reply["status"].as_str().unwrap_or("unknown").to_owned())
    }

    async fn trade(&self, payment_id: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/admin/trades/{payment_id}", self.sandbox))
            .send()
            .await?
            .json()
            .await?)
    }
}

#[derive(Default)]
struct Summary {
    statuses: BTreeMap<String, usize>,
    duplicates_absorbed: usize,
    rejected_callbacks: usize,
    found_by_poller: usize,
    by_fault: BTreeMap<Fault, BTreeMap<String, usize>>,
    effects: Effects,
}

/// What the consumers recorded for the batch's orders.
#[derive(Default)]
struct Effects {
    orders_paid: usize,
    coupons: usize,
    /// Orders whose effect names another payment than the paid one.
    mismatched: usize,
    dead_letters: usize,
}

/// The consumers' tables and the compensations table of the stack, read through moto.
struct Records {
    client: aws_sdk_dynamodb::Client,
    orders: String,
    coupons: String,
    compensations: String,
}

impl Records {
    async fn effect(&self, table: &str, pk: String) -> anyhow::Result<Option<String>> {
        let item = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
            .consistent_read(true)
            .send()
            .await?
            .item;
        Ok(item.and_then(|i| i.get("payment_id")?.as_s().ok().cloned()))
    }

    /// Every dead letter of the stack (it is the demo's own, fresh).
    async fn dead_letters(&self) -> anyhow::Result<usize> {
        crate::load::dead_letters(&self.client, &self.compensations).await
    }
}

pub async fn run(payments: usize, port: u16, provider: &str) -> anyhow::Result<()> {
    if payments == 0 {
        bail!("--payments must be at least 1");
    }
    let started = Instant::now();
    eprintln!("Booting the local stack (moto, cargo-lambda, provider sandbox)...");
    let work_dir = std::env::temp_dir().join(format!("paycore-demo-{}", std::process::id()));
    let stack = spawn(StackOptions {
        api_port: port,
        time_scale: 1000,
        work_dir: work_dir.clone(),
        ..StackOptions::default()
    })
    .await?;
    eprintln!(
        "Stack up in {:.1?}: API {}\n",
        started.elapsed(),
        stack.api_url
    );
    let table = |id: &str| {
        stack
            .tables
            .get(id)
            .cloned()
            .with_context(|| format!("the template has no {id}"))
    };
    let records = Records {
        client: aws_sdk_dynamodb::Client::new(&xtask::moto::sdk_config(&stack.moto_endpoint).await),
        orders: table("OrdersTable")?,
        coupons: table("CouponsTable")?,
        compensations: table("CompensationsTable")?,
    };
    let demo = Demo {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        api: stack.api_url.clone(),
        sandbox: stack.sandbox_url.clone(),
        provider: provider.to_owned(),
    };
    let result = push_batch(&demo, &records, payments).await;
    stack.shutdown().await;
    let summary = result?;
    print_summary(&summary, payments, provider, started.elapsed());
    let _ = std::fs::remove_dir_all(&work_dir);
    let paid = summary.statuses.get("paid").copied().unwrap_or(0);
    let effects = &summary.effects;
    if effects.orders_paid != paid
        || effects.coupons != paid
        || effects.mismatched > 0
        || effects.dead_letters > 0
    {
        bail!(
            "the downstream effects do not match the payments: {paid} paid, {} orders marked, {} \
             coupons, {} of another payment, {} dead letters",
            effects.orders_paid,
            effects.coupons,
            effects.mismatched,
            effects.dead_letters
        );
    }
    Ok(())
}

async fn push_batch(demo: &Demo, records: &Records, payments: usize) -> anyhow::Result<Summary> {
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let run = &run[run.len() - 6..];
    let creating = bar(payments, "created");
    let mut created = Vec::with_capacity(payments);
    for i in 0..payments {
        created.push(demo.create(run, i).await?);
        creating.inc(1);
    }
    creating.finish();
    let paying = bar(payments, "paid");
    for payment in &created {
        demo.http
            .post(&payment.pay_url)
            .send()
            .await?
            .error_for_status()?;
        paying.inc(1);
    }
    paying.finish();
    settle(demo, &created).await?;
    let mut summary = summarize(demo, &created).await?;
    summary.effects = effects(records, &created, &summary).await?;
    Ok(summary)
}

/// Waits (at most 30 s) until every paid payment's order is marked paid and has its coupon, then
/// counts what the consumers recorded and what died on the way.
async fn effects(
    records: &Records,
    created: &[Created],
    summary: &Summary,
) -> anyhow::Result<Effects> {
    let paid = summary.statuses.get("paid").copied().unwrap_or(0);
    let waiting = bar(paid, "effects");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut effects = Effects::default();
        for payment in created {
            let order = records
                .effect(&records.orders, format!("ORDER#{}", payment.order_id))
                .await?;
            let coupon = records
                .effect(&records.coupons, format!("COUPON#{}", payment.order_id))
                .await?;
            for (found, count) in [
                (order, &mut effects.orders_paid),
                (coupon, &mut effects.coupons),
            ] {
                match found {
                    Some(id) if id == payment.payment_id => *count += 1,
                    Some(_) => effects.mismatched += 1,
                    None => {}
                }
            }
        }
        waiting.set_position(effects.orders_paid.min(effects.coupons) as u64);
        if (effects.orders_paid >= paid && effects.coupons >= paid) || Instant::now() > deadline {
            waiting.finish();
            effects.dead_letters = records.dead_letters().await?;
            return Ok(effects);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every payment has left `pending` or nothing has changed for a while: a payment
/// whose every notification is refused stays pending until the poller's query finds it.
async fn settle(demo: &Demo, created: &[Created]) -> anyhow::Result<()> {
    let settling = bar(created.len(), "settled");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_since = Instant::now();
    let mut last = 0;
    loop {
        let mut settled = 0;
        for payment in created {
            if demo.status(&payment.payment_id).await? != "pending" {
                settled += 1;
            }
        }
        settling.set_position(settled as u64);
        if settled != last {
            last = settled;
            quiet_since = Instant::now();
        }
        let quiet_for = quiet_since.elapsed();
        if settled == created.len()
            || quiet_for > Duration::from_secs(3)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settling.finish();
    Ok(())
}

async fn summarize(demo: &Demo, created: &[Created]) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    for payment in created {
        let view = demo.payment(&payment.payment_id).await?;
        let status = view["status"].as_str().unwrap_or("unknown").to_owned();
        *summary.statuses.entry(status.clone()).or_default() += 1;
        let last_source = view["history"]
            .as_array()
            .and_then(|h| h.last())
            .and_then(|h| h["source"].as_str());
        if last_source == Some("poll") {
            summary.found_by_poller += 1;
        }
        *summary
            .by_fault
            .entry(payment.fault)
            .or_default()
            .entry(status.clone())
            .or_default() += 1;
        let trade = demo.trade(&payment.payment_id).await?;
        let log = trade["deliveries"].as_array().cloned().unwrap_or_default();
        let acked = log.iter().filter(|d| d["acked"] == true).count();
        summary.duplicates_absorbed += acked.saturating_sub(1);
        summary.rejected_callbacks += log
            .iter()
            .filter(|d| {
                d["http_status"]
                    .as_u64()
                    .is_some_and(|s| (400..500).contains(&s))
            })
            .count();
    }
    Ok(summary)
}

#[allow(clippy::print_stdout)]
fn print_summary(summary: &Summary, payments: usize, provider: &str, elapsed: Duration) {
    let count = |s: &str| summary.statuses.get(s).copied().unwrap_or(0);
    println!();
    println!("Demo summary ({payments} payments through create -> pay -> {provider} callback)");
    println!("  created                 {payments}");
    println!("  paid                    {}", count("paid"));
    println!(
        "  duplicates absorbed     {}  (acknowledged deliveries that changed nothing)",
        summary.duplicates_absorbed
    );
    println!(
        "  rejected callbacks      {}  (refused before any write: bad signature)",
        summary.rejected_callbacks
    );
    println!(
        "  exceptions              {}  (verified but inconsistent: needs a human)",
        count("exception")
    );
    println!(
        "  settled by the poller   {}  (no usable notification: it asked the provider)",
        summary.found_by_poller
    );
    println!(
        "  still pending           {}  (not resolved yet)",
        count("pending")
    );
    println!(
        "  orders marked paid      {}  (order-updater: once per paid order, via outbox -> SQS)",
        summary.effects.orders_paid
    );
    println!(
        "  coupons granted         {}  (coupon-granter: at most one per order)",
        summary.effects.coupons
    );
    println!(
        "  dead letters            {}  (messages given up on: consumers, relay)",
        summary.effects.dead_letters
    );
    if summary.effects.mismatched > 0 {
        println!(
            "  effects of another payment {}  (should be 0)",
            summary.effects.mismatched
        );
    }
    println!("  time taken              {:.1?}", elapsed);
    println!();
    println!("  by fault injected:");
    for (fault, statuses) in &summary.by_fault {
        let outcome: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!("    {:<30} {}", fault.label(), outcome.join(", "));
    }
}

/// Sets the sandbox's fault knobs for trades whose subject (or id) starts with `scope`.
pub(crate) async fn set_faults(
    http: &reqwest::Client,
    sandbox: &str,
    scope: &str,
    mut knobs: Value,
) -> anyhow::Result<()> {
    knobs["scope"] = json!(scope);
    http.put(format!("{sandbox}/admin/faults"))
        .json(&knobs)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}
