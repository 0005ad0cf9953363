//! `cargo xtask load`: N payments through the stack under faults, duplicate creates, double pays
//! and concurrent refunds, then the end state checked against the provider sandbox's truth, with
//! throughput, latency per route and moto's per-request cost at the start and the end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, TransactWriteItem};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use xtask::stack::{Stack, StackOptions, spawn};

/// Every request's own bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
/// Bound on waiting for the end state after the last request.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Concurrent creates of a duplicated order, and concurrent refunds of a refunded payment.
const DUPLICATE_CREATES: usize = 4;
const CONCURRENT_REFUNDS: usize = 6;
/// Tries at a create answered `in_progress` (another create of the order is running).
const CREATE_TRIES: usize = 30;
/// moto probes per measurement (the median is reported).
const PROBES: usize = 21;
/// Rounds of probes, at most, while the stack settles before the first measurement.
const QUIET_PROBE_ROUNDS: usize = 10;

/// What happens to one payment: its notification fault and what the load does with it.
#[derive(Debug, Clone, Copy)]
struct Plan {
    knobs: &'static str,
    duplicate_creates: bool,
    pay: bool,
    double_pay: bool,
    refund: bool,
    tampered: bool,
}

impl Plan {
    fn for_index(i: usize) -> Self {
        let knobs = match i % 20 {
            1 | 11 => r#"{"drop_first":1}"#,
            2 => r#"{"duplicate":2}"#,
            4 | 14 => r#"{"delay_ms":500}"#,
            6 => r#"{"reorder":true}"#,
            9 | 19 => r#"{"never_notify":true}"#,
            13 => r#"{"forge":true}"#,
            // Paid (i % 10 is not 7), so the tampered notification is sent.
            3 if i % 40 == 3 => r#"{"tamper_amount":true}"#,
            _ => "{}",
        };
        let tampered = knobs.contains("tamper");
        let pay = i % 10 != 7;
        Self {
            knobs,
            duplicate_creates: i.is_multiple_of(5),
            pay,
            double_pay: pay && i.is_multiple_of(6),
            refund: pay && !tampered && i.is_multiple_of(3),
            tampered,
        }
    }
}

/// Latencies and statuses per route.
#[derive(Default)]
struct Calls {
    by_route: Mutex<BTreeMap<&'static str, Vec<(Duration, u16)>>>,
}

impl Calls {
    fn record(&self, route: &'static str, took: Duration, status: u16) {
        let mut by_route = self.by_route.lock().unwrap_or_else(PoisonError::into_inner);
        by_route.entry(route).or_default().push((took, status));
    }
}

struct Load {
    http: reqwest::Client,
    api: String,
    sandbox: String,
    provider: String,
    run: String,
    calls: Calls,
}

/// One payment as the load saw it.
struct Driven {
    order_id: String,
    payment_id: String,
    amount_minor: i64,
    plan: Plan,
    /// Payment ids the order's creates answered (all equal when idempotent).
    create_ids: Vec<String>,
}

impl Load {
    async fn call(
        &self,
        route: &'static str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(u16, Value)> {
        let started = Instant::now();
        let response = request.timeout(REQUEST_TIMEOUT).send().await;
        let (status, body) = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(e) => {
                self.calls.record(route, started.elapsed(), 0);
                return Err(e).with_context(|| format!("{route}: no answer"));
            }
        };
        self.calls.record(route, started.elapsed(), status);
        Ok((status, body))
    }

    async fn create(&self, body: &Value) -> anyhow::Result<String> {
        for _ in 0..CREATE_TRIES {
            let request = self.http.post(format!("{}/payments", self.api)).json(body);
            let (status, reply) = self.call("POST /payments", request).await?;
            match (status, reply["payment_id"].as_str()) {
                (200 | 201, Some(id)) => return Ok(id.to_owned()),
                (409, _) if reply["error"]["code"] == "in_progress" => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                _ => bail!("create answered {status} {reply}"),
            }
        }
        bail!("create stayed in progress")
    }

    async fn drive(&self, i: usize) -> anyhow::Result<Driven> {
        let plan = Plan::for_index(i);
        let subject = format!("load {} #{i:05}", self.run);
        let order_id = format!("load-{}-{i:05}", self.run);
        self.set_faults(&subject, plan.knobs).await?;
        let amount_minor = 1000 + i64::try_from(i)? * 7;
        let body = json!({
            "order_id": order_id, "amount_minor": amount_minor, "currency": "CNY",
            "provider": self.provider, "subject": subject,
        });
        let creates = if plan.duplicate_creates {
            DUPLICATE_CREATES
        } else {
            1
        };
        let answers = join_all((0..creates).map(|_| self.create(&body))).await;
        let create_ids = answers.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let payment_id = create_ids[0].clone();
        // UnionPay scopes knobs by order id (our payment id): set them there too.
        self.set_faults(&payment_id, plan.knobs).await?;
        let driven = Driven {
            order_id,
            payment_id,
            amount_minor,
            plan,
            create_ids,
        };
        if plan.pay {
            let pays = if plan.double_pay { 2 } else { 1 };
            let pay_url = self.pay_url(&driven.payment_id).await?;
            for result in join_all((0..pays).map(|_| self.pay(&pay_url))).await {
                result?;
            }
        }
        if plan.refund {
            self.refund_concurrently(&driven).await?;
        }
        Ok(driven)
    }

    async fn set_faults(&self, scope: &str, knobs: &str) -> anyhow::Result<()> {
        let knobs: Value = serde_json::from_str(knobs)?;
        crate::demo::set_faults(&self.http, &self.sandbox, scope, knobs).await
    }

    async fn payment(&self, payment_id: &str) -> anyhow::Result<Value> {
        let request = self.http.get(format!("{}/payments/{payment_id}", self.api));
        let (status, body) = self.call("GET /payments/{id}", request).await?;
        anyhow::ensure!(status == 200, "GET payment answered {status} {body}");
        Ok(body)
    }

    async fn pay_url(&self, payment_id: &str) -> anyhow::Result<String> {
        let trade = self.trade(payment_id).await?;
        trade["pay_url"]
            .as_str()
            .map(str::to_owned)
            .context("trade without pay_url")
    }

    async fn pay(&self, pay_url: &str) -> anyhow::Result<()> {
        let (status, body) = self.call("pay (sandbox)", self.http.post(pay_url)).await?;
        anyhow::ensure!(status == 200, "pay answered {status} {body}");
        Ok(())
    }

    async fn trade(&self, payment_id: &str) -> anyhow::Result<Value> {
        let url = format!("{}/admin/trades/{payment_id}", self.sandbox);
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Waits for the payment to be paid here, then sends six refunds of a quarter of it at once:
    /// at most four fit.
    async fn refund_concurrently(&self, driven: &Driven) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.payment(&driven.payment_id).await?["status"] != "paid" {
            if Instant::now() > deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let url = format!("{}/payments/{}/refunds", self.api, driven.payment_id);
        let refunds = (0..CONCURRENT_REFUNDS).map(|n| {
            let body = json!({ "refund_id": format!("rf-{n}"), "amount_minor": driven.amount_minor / 4 + 1, "reason": "load" });
            self.call("POST /payments/{id}/refunds", self.http.post(&url).json(&body))
        });
        for answer in join_all(refunds).await {
            let (status, body) = answer?;
            let refused = status == 409 && body["error"]["code"] == "refund_exceeds_payment";
            anyhow::ensure!(
                (200..=202).contains(&status) || refused,
                "refund answered {status} {body}"
            );
        }
        Ok(())
    }
}

/// Runs the futures at once, answers in order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs = Vec::with_capacity(futures.len());
    let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
    // Poll them together: each is short, so a simple select over all is enough.
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => {
                        *result = Some(output);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.extend(results.into_iter().flatten());
    outputs
}

/// Where the stack is: booted here, or an already running one (`PAYCORE_*` and
/// `AWS_ENDPOINT_URL`, as `cargo xtask test` sets them).
struct Target {
    api: String,
    sandbox: String,
    moto: String,
    tables: BTreeMap<&'static str, String>,
    booted: Option<Stack>,
}

const TABLES: [&str; 4] = [
    "PaymentsTable",
    "OrdersTable",
    "CouponsTable",
    "CompensationsTable",
];

async fn target(provider_timeout_ms: u64) -> anyhow::Result<Target> {
    if let Ok(api) = std::env::var("PAYCORE_API_URL") {
        let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
        let mut tables = BTreeMap::new();
        for id in TABLES {
            tables.insert(id, var(&format!("PAYCORE_TABLE_{}", id.to_uppercase()))?);
        }
        return Ok(Target {
            api,
            sandbox: var("PAYCORE_SANDBOX_URL")?,
            moto: var("AWS_ENDPOINT_URL")?,
            tables,
            booted: None,
        });
    }
    eprintln!("xtask load: booting a fresh local stack");
    let work_dir = std::env::temp_dir().join(format!("paycore-load-{}", std::process::id()));
    let stack = spawn(StackOptions {
        api_port: 0,
        time_scale: 1000,
        work_dir,
        provider_timeout_ms,
        ..StackOptions::default()
    })
    .await?;
    let mut tables = BTreeMap::new();
    for id in TABLES {
        tables.insert(
            id,
            stack
                .tables
                .get(id)
                .cloned()
                .with_context(|| format!("no {id}"))?,
        );
    }
    Ok(Target {
        api: stack.api_url.clone(),
        sandbox: stack.sandbox_url.clone(),
        moto: stack.moto_endpoint.clone(),
        tables,
        booted: Some(stack),
    })
}

/// moto's per-request cost: the median time of each request kind the functions make most.
#[derive(Debug, Clone, Copy)]
struct MotoCost {
    /// A TransactWriteItems moto cancels (a condition on a missing payment): it pays the
    /// transaction's snapshot and rollback on the payments table and changes nothing.
    transact: Duration,
    /// A Query of one (empty) partition of the payments table, as every read of a payment is.
    partition_query: Duration,
    /// A Query of one shard of the due-checks index, as the poller makes every run.
    index_query: Duration,
}

impl MotoCost {
    fn kinds(&self) -> [(&'static str, Duration); 3] {
        [
            ("TransactWriteItems", self.transact),
            ("Query (partition)", self.partition_query),
            ("Query (due-checks index)", self.index_query),
        ]
    }
}

async fn moto_probe(
    dynamodb: &aws_sdk_dynamodb::Client,
    payments: &str,
) -> anyhow::Result<MotoCost> {
    let median = |mut times: Vec<Duration>| {
        times.sort_unstable();
        times[times.len() / 2]
    };
    let (mut transact, mut partition, mut index) = (vec![], vec![], vec![]);
    for _ in 0..PROBES {
        let check = ConditionCheck::builder()
            .table_name(payments)
            .key("pk", AttributeValue::S("PROBE#none".into()))
            .key("sk", AttributeValue::S("PROBE".into()))
            .condition_expression("attribute_exists(pk)")
            .build()?;
        let started = Instant::now();
        let result = dynamodb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .send()
            .await;
        transact.push(started.elapsed());
        anyhow::ensure!(result.is_err(), "the probe's condition held");

        let started = Instant::now();
        let out = dynamodb
            .query()
            .table_name(payments)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S("PROBE#none".into()))
            .send()
            .await?;
        partition.push(started.elapsed());
        anyhow::ensure!(out.count() == 0, "the probe's partition holds items");

        // Nothing is due before the epoch, so the answer is empty whatever the shard holds.
        let started = Instant::now();
        let out = dynamodb
            .query()
            .table_name(payments)
            .index_name("due-checks")
            .key_condition_expression("due_shard = :shard AND next_check_at <= :at")
            .expression_attribute_values(":shard", AttributeValue::S("DUE#0".into()))
            .expression_attribute_values(":at", AttributeValue::N("0".into()))
            .send()
            .await?;
        index.push(started.elapsed());
        anyhow::ensure!(
            out.count() == 0,
            "the probe found a check due before the epoch"
        );
    }
    Ok(MotoCost {
        transact: median(transact),
        partition_query: median(partition),
        index_query: median(index),
    })
}

/// moto's cost once the stack is quiet, as it is at the end: a stack just booted is still
/// starting instances and firing its first schedules. Probes until the median stops falling.
async fn quiet_moto_probe(
    dynamodb: &aws_sdk_dynamodb::Client,
    payments: &str,
) -> anyhow::Result<MotoCost> {
    let mut best = moto_probe(dynamodb, payments).await?;
    for _ in 0..QUIET_PROBE_ROUNDS {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let next = moto_probe(dynamodb, payments).await?;
        let falling = next.transact * 10 < best.transact * 9;
        if next.transact < best.transact {
            best = next;
        }
        if !falling {
            break;
        }
    }
    Ok(best)
}

pub async fn run(payments: usize, concurrency: usize, provider: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        payments > 0 && concurrency > 0,
        "--payments and --concurrency must be positive"
    );
    let target = target(1500).await?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&xtask::moto::sdk_config(&target.moto).await);
    let moto_start = quiet_moto_probe(&dynamodb, &target.tables["PaymentsTable"]).await?;
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let load = Arc::new(Load {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?,
        api: target.api.clone(),
        sandbox: target.sandbox.clone(),
        provider: provider.to_owned(),
        run: run[run.len() - 6..].to_owned(),
        calls: Calls::default(),
    });
    let trades_before = sandbox_trades(&load).await?;
    let started = Instant::now();
    let driven = drive_all(&load, payments, concurrency).await;
    let driven_in = started.elapsed();
    let result = match driven {
        Ok(driven) => {
            let checks = settle_and_check(&load, &dynamodb, &target, &driven, trades_before).await;
            let moto_end = moto_probe(&dynamodb, &target.tables["PaymentsTable"]).await?;
            let emulator = target.booted.as_ref().map(Stack::emulator_stats);
            report(
                &load,
                payments,
                concurrency,
                driven_in,
                (moto_start, moto_end),
                emulator,
                &checks?,
            )
        }
        Err(e) => Err(e),
    };
    if let Some(stack) = target.booted {
        stack.shutdown().await;
    }
    result
}

async fn sandbox_trades(load: &Load) -> anyhow::Result<u64> {
    let url = format!("{}/admin/stats", load.sandbox);
    let stats: Value = load
        .http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    stats["trades"].as_u64().context("stats without trades")
}

async fn drive_all(
    load: &Arc<Load>,
    payments: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Driven>> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..payments {
        let permit = permits.clone().acquire_owned().await?;
        let load = load.clone();
        tasks.spawn(async move {
            let driven = load.drive(i).await;
            drop(permit);
            driven.with_context(|| format!("payment #{i}"))
        });
    }
    let mut driven = Vec::with_capacity(payments);
    while let Some(done) = tasks.join_next().await {
        driven.push(done??);
    }
    driven.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    Ok(driven)
}

/// The end state against the provider's truth: each failed check, with a few examples.
#[derive(Default)]
struct Checks {
    failures: BTreeMap<&'static str, Vec<String>>,
    paid: usize,
    exceptions: usize,
    refunded_minor: i64,
    settle_time: Duration,
}

impl Checks {
    fn fail(&mut self, check: &'static str, what: String) {
        self.failures.entry(check).or_default().push(what);
    }
}

const PAID_HERE: [&str; 3] = ["paid", "partially_refunded", "refunded"];

/// Whether this payment has reached what the provider says: paid there is paid here (tampered:
/// exception), unpaid there is still pending here.
fn settled(trade: &Value, view: &Value, plan: Plan) -> bool {
    let status = view["status"].as_str().unwrap_or("");
    match (trade["status"].as_str(), plan.tampered) {
        (Some("PAID"), true) => status == "exception",
        (Some("PAID"), false) => PAID_HERE.contains(&status),
        _ => status == "pending",
    }
}

async fn settle_and_check(
    load: &Load,
    dynamodb: &aws_sdk_dynamodb::Client,
    target: &Target,
    driven: &[Driven],
    trades_before: u64,
) -> anyhow::Result<Checks> {
    let started = Instant::now();
    let mut checks = Checks::default();
    let mut unsettled = driven.iter().collect::<Vec<_>>();
    while !unsettled.is_empty() && started.elapsed() < SETTLE_TIMEOUT {
        let mut still = Vec::new();
        for d in unsettled {
            let (trade, view) = (
                load.trade(&d.payment_id).await?,
                load.payment(&d.payment_id).await?,
            );
            if !settled(&trade, &view, d.plan) || !effects_done(dynamodb, target, d, &trade).await?
            {
                still.push(d);
            }
        }
        unsettled = still;
        if !unsettled.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    checks.settle_time = started.elapsed();
    let trades = sandbox_trades(load).await? - trades_before;
    if trades != driven.len() as u64 {
        checks.fail(
            "one trade per order",
            format!("{trades} trades for {} orders", driven.len()),
        );
    }
    for d in driven {
        check_one(load, dynamodb, target, d, &mut checks).await?;
    }
    let dead = dead_letters(dynamodb, &target.tables["CompensationsTable"]).await?;
    if dead > 0 {
        checks.fail("no dead letters", format!("{dead} dead letters"));
    }
    Ok(checks)
}

/// The order's effect record and its coupon, as the consumers wrote them.
async fn effects(
    dynamodb: &aws_sdk_dynamodb::Client,
    target: &Target,
    order_id: &str,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let order = effect(
        dynamodb,
        &target.tables["OrdersTable"],
        format!("ORDER#{order_id}"),
    );
    let coupon = effect(
        dynamodb,
        &target.tables["CouponsTable"],
        format!("COUPON#{order_id}"),
    );
    Ok((order.await?, coupon.await?))
}

async fn effect(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: String,
) -> anyhow::Result<Option<String>> {
    let item = dynamodb
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk))
        .consistent_read(true)
        .send()
        .await?
        .item;
    Ok(item.and_then(|i| i.get("payment_id")?.as_s().ok().cloned()))
}

/// Whether the order effect and the coupon are there for a payment paid at the provider.
async fn effects_done(
    dynamodb: &aws_sdk_dynamodb::Client,
    target: &Target,
    d: &Driven,
    trade: &Value,
) -> anyhow::Result<bool> {
    if trade["status"] != "PAID" || d.plan.tampered {
        return Ok(true);
    }
    let (order, coupon) = effects(dynamodb, target, &d.order_id).await?;
    Ok(order.is_some() && coupon.is_some())
}

async fn check_one(
    load: &Load,
    dynamodb: &aws_sdk_dynamodb::Client,
    target: &Target,
    d: &Driven,
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let id = &d.payment_id;
    if d.create_ids.iter().any(|other| other != id) {
        checks.fail(
            "one payment per order",
            format!("{}: {:?}", d.order_id, d.create_ids),
        );
    }
    let (trade, view) = (load.trade(id).await?, load.payment(id).await?);
    let status = view["status"].as_str().unwrap_or("").to_owned();
    let paid_there = trade["status"] == "PAID";
    if !settled(&trade, &view, d.plan) {
        let check = if paid_there {
            "paid there is paid here"
        } else {
            "nothing unpaid is paid"
        };
        checks.fail(
            check,
            format!("{id}: {status} here, {} there", trade["status"]),
        );
    }
    checks.paid += usize::from(PAID_HERE.contains(&status.as_str()));
    checks.exceptions += usize::from(status == "exception");
    let wants_effects = paid_there && !d.plan.tampered;
    let (order, coupon) = effects(dynamodb, target, &d.order_id).await?;
    for (what, found) in [("order effect", order), ("coupon", coupon)] {
        match (wants_effects, found) {
            (true, Some(p)) if &p == id => {}
            (false, None) => {}
            (_, found) => checks.fail(
                "one order effect and one coupon per paid order",
                format!("{id}: {what} {found:?}"),
            ),
        }
    }
    let there = trade["refunded_minor"].as_i64().unwrap_or(0);
    let committed = trade["committed_minor"].as_i64().unwrap_or(0);
    let request = load.http.get(format!("{}/payments/{id}/refunds", load.api));
    let (_, refunds) = load.call("GET /payments/{id}/refunds", request).await?;
    let here: i64 = refunds["refunds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "succeeded")
        .filter_map(|r| r["amount_minor"].as_i64())
        .sum();
    checks.refunded_minor += there;
    if committed > d.amount_minor || here > d.amount_minor || here != there {
        checks.fail(
            "refunds never over the amount",
            format!("{id}: {here} here, {there} there, of {}", d.amount_minor),
        );
    }
    Ok(())
}

/// Every dead letter in the compensations table `table`.
pub(crate) async fn dead_letters(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<usize> {
    let items = dynamodb
        .scan()
        .table_name(table)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await?;
    Ok(items
        .iter()
        .filter(|i| {
            i.get("kind")
                .and_then(|k| k.as_s().ok())
                .is_some_and(|k| k == "dead_letter")
        })
        .count())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let at = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted.get(at).copied().unwrap_or_default()
}

#[allow(clippy::print_stdout)]
fn report(
    load: &Load,
    payments: usize,
    concurrency: usize,
    driven_in: Duration,
    (moto_start, moto_end): (MotoCost, MotoCost),
    emulator: Option<xtask::lambda::Stats>,
    checks: &Checks,
) -> anyhow::Result<()> {
    let by_route = load
        .calls
        .by_route
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let requests: usize = by_route.values().map(Vec::len).sum();
    println!(
        "Load: {payments} payments, concurrency {concurrency}, provider {}",
        load.provider
    );
    println!(
        "  driven in {driven_in:.1?}: {} payments/s, {} requests/s; settled {:.1?} later",
        hundredths(payments as u128 * 100_000, driven_in.as_millis()),
        hundredths(requests as u128 * 100_000, driven_in.as_millis()),
        checks.settle_time
    );
    println!(
        "  {:<32} {:>6} {:>9} {:>9} {:>5}",
        "route", "calls", "p50", "p99", "5xx"
    );
    let mut server_errors = 0;
    for (route, calls) in by_route.iter() {
        let mut times: Vec<Duration> = calls.iter().map(|(t, _)| *t).collect();
        times.sort_unstable();
        let errors = calls.iter().filter(|(_, s)| *s >= 500 || *s == 0).count();
        server_errors += errors;
        println!(
            "  {route:<32} {:>6} {:>9.1?} {:>9.1?} {errors:>5}",
            calls.len(),
            percentile(&times, 50),
            percentile(&times, 99)
        );
    }
    println!(
        "  paid {} (exceptions {}), refunded {} minor units",
        checks.paid, checks.exceptions, checks.refunded_minor
    );
    let mut growth = vec![];
    for ((kind, start), (_, end)) in moto_start.kinds().into_iter().zip(moto_end.kinds()) {
        let ratio = hundredths(end.as_micros() * 100, start.as_micros());
        println!(
            "  moto {kind} (median of {PROBES}): {start:.1?} at the start, {end:.1?} at the end ({ratio}x)"
        );
        if end > start * 2 {
            growth.push(format!("{kind} {ratio}x"));
        }
    }
    let mut failures = checks.failures.clone();
    if server_errors > 0 {
        failures.insert(
            "no 5xx",
            vec![format!("{server_errors} answers 5xx or none")],
        );
    }
    if let Some(stats) = emulator {
        println!("  emulator: {stats:?}");
        if stats.timed_out + stats.lost_with_instance + stats.throttled > 0 {
            failures.insert("no invocation lost", vec![format!("{stats:?}")]);
        }
    }
    if !growth.is_empty() {
        failures.insert("moto's cost flat", growth);
    }
    if failures.is_empty() {
        println!("  checks: all hold");
        return Ok(());
    }
    for (check, examples) in &failures {
        println!(
            "  FAILED {check}: {} (e.g. {})",
            examples.len(),
            examples
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    bail!("{} checks failed", failures.len())
}

/// `scaled / divisor` as a decimal with two places, where `scaled` is 100 times the numerator
/// (integer arithmetic only): `hundredths(290, 100)` is `"2.90"`.
fn hundredths(scaled: u128, divisor: u128) -> String {
    let value = scaled / divisor.max(1);
    format!("{}.{:02}", value / 100, value % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fault of the mix reaches a payment that is paid, so its notification is sent (a
    /// knob on an unpaid payment changes nothing); tampered ones are the paid ones.
    #[test]
    fn every_fault_of_the_mix_is_applied_to_a_paid_payment() {
        let plans: Vec<Plan> = (0..40).map(Plan::for_index).collect();
        for knob in [
            "drop_first",
            "duplicate",
            "delay_ms",
            "reorder",
            "never_notify",
            "forge",
        ] {
            assert!(
                plans.iter().any(|p| p.pay && p.knobs.contains(knob)),
                "{knob} is never applied to a paid payment"
            );
        }
        let tampered: Vec<&Plan> = plans.iter().filter(|p| p.tampered).collect();
        assert!(!tampered.is_empty() && tampered.iter().all(|p| p.pay && !p.refund));
        assert!(plans.iter().any(|p| p.double_pay) && plans.iter().any(|p| p.refund));
        assert!(plans.iter().any(|p| !p.pay) && plans.iter().any(|p| p.duplicate_creates));
    }
}
