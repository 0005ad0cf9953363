//! Helpers for the integration tests: the stack that `cargo xtask test` booted (its addresses come
//! in through `PAYCORE_*` variables), fresh tables per test, HTTP clients for the API and the
//! sandbox, and an SDK interceptor that counts DynamoDB requests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use serde_json::Value;

/// The running stack, as `cargo xtask test` describes it.
#[derive(Debug, Clone)]
pub struct Stack {
    pub api_url: String,
    pub sandbox_url: String,
    pub keys_dir: PathBuf,
    /// Where each function's log (`<binary>.log`: stdout and stderr) is written.
    pub log_dir: PathBuf,
    pub merchant_id: String,
    pub payments_table: String,
    pub idempotency_table: String,
    pub compensations_table: String,
    pub orders_table: String,
    pub coupons_table: String,
    pub order_updater_queue: String,
    pub order_updater_dead_letters: String,
    pub coupon_granter_queue: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests run against the local stack; use `cargo xtask test`")
    })
}

pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack {
        api_url: var("PAYCORE_API_URL"),
        sandbox_url: var("PAYCORE_SANDBOX_URL"),
        keys_dir: PathBuf::from(var("PAYCORE_KEYS_DIR")),
        log_dir: PathBuf::from(var("PAYCORE_LOG_DIR")),
        merchant_id: var("PAYCORE_MERCHANT_ID"),
        payments_table: var("PAYCORE_TABLE_PAYMENTSTABLE"),
        idempotency_table: var("PAYCORE_TABLE_IDEMPOTENCYTABLE"),
        compensations_table: var("PAYCORE_TABLE_COMPENSATIONSTABLE"),
        orders_table: var("PAYCORE_TABLE_ORDERSTABLE"),
        coupons_table: var("PAYCORE_TABLE_COUPONSTABLE"),
        order_updater_queue: var("PAYCORE_QUEUE_ORDERUPDATERQUEUE"),
        order_updater_dead_letters: var("PAYCORE_QUEUE_ORDERUPDATERDEADLETTERS"),
        coupon_granter_queue: var("PAYCORE_QUEUE_COUPONGRANTERQUEUE"),
    })
}

/// A unique, valid order id for one test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new())
}

pub fn key_pem(name: &str) -> String {
    std::fs::read_to_string(stack().keys_dir.join(name))
        .unwrap_or_else(|e| panic!("reading key {name}: {e}"))
}

/// Counts the HTTP requests a client sends, by operation name.
#[derive(Debug, Default, Clone)]
pub struct RequestCounter {
    total: Arc<AtomicUsize>,
    by_operation: Arc<Mutex<HashMap<String, usize>>>,
}

impl RequestCounter {
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.total.store(0, Ordering::SeqCst);
        self.by_operation
            .lock()
            .map(|mut m| m.clear())
            .unwrap_or_default();
    }

    pub fn by_operation(&self) -> HashMap<String, usize> {
        self.by_operation
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.total.fetch_add(1, Ordering::SeqCst);
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.split('.').next_back())
            .unwrap_or("unknown")
            .to_owned();
        if let Ok(mut map) = self.by_operation.lock() {
            *map.entry(operation).or_default() += 1;
        }
        Ok(())
    }
}

/// A DynamoDB client for moto, optionally counting its requests.
pub async fn dynamo(counter: Option<RequestCounter>) -> aws_sdk_dynamodb::Client {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut config = aws_sdk_dynamodb::config::Builder::from(&sdk);
    if let Some(counter) = counter {
        config = config.interceptor(counter);
    }
    aws_sdk_dynamodb::Client::from_conf(config.build())
}

/// The template's tables, created for one test alone.
pub struct Tables {
    pub payments: String,
    pub idempotency: String,
    pub compensations: String,
    pub orders: String,
    pub coupons: String,
    /// The tables with TTL, as the template declares them.
    pub ttl: Vec<xtask::template::TtlTable>,
}

/// An SQS client for moto.
pub async fn sqs() -> aws_sdk_sqs::Client {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_sqs::Client::new(&sdk)
}

/// Creates a fresh pair of tables from the template, named for this test alone.
pub async fn fresh_tables(client: &aws_sdk_dynamodb::Client) -> (String, String) {
    let tables = fresh_table_set(client).await;
    (tables.payments, tables.idempotency)
}

/// Creates every table of the template, named for this test alone.
pub async fn fresh_table_set(client: &aws_sdk_dynamodb::Client) -> Tables {
    let template = xtask::template::Template::load_default().expect("template");
    let stack_name = format!("t{}", ulid::Ulid::new()).to_lowercase();
    let mut parameters = template.parameter_defaults().clone();
    parameters.insert("CallbackBaseUrl".into(), "http://127.0.0.1:9".into());
    let resolver = xtask::template::Resolver {
        stack_name,
        region: xtask::REGION.into(),
        parameters,
    };
    template
        .create_tables(client, &resolver)
        .await
        .expect("create tables");
    let name = |id: &str| template.table_name(id, &resolver).expect(id);
    Tables {
        payments: name("PaymentsTable"),
        idempotency: name("IdempotencyTable"),
        compensations: name("CompensationsTable"),
        orders: name("OrdersTable"),
        coupons: name("CouponsTable"),
        ttl: template.ttl_tables(&resolver).expect("ttl tables"),
    }
}

/// Every item of a table (moto tables in tests are small).
pub async fn scan_all(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    // Bounded: the shared stack's tables hold a few thousand items at most.
    for _ in 0..1000 {
        let out = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    items
}

/// A response: status, headers we care about, and the JSON body (Null when not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            retry_after,
            body,
            text,
        }
    }

    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A fresh client: each `#[tokio::test]` has its own runtime, and pooled connections must not
/// outlive the runtime that opened them.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// `POST /payments` with a JSON body.
pub async fn create(body: &Value) -> Reply {
    let url = format!("{}/payments", stack().api_url);
    Reply::from(
        http()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST /payments"),
    )
    .await
}

/// A POST with any raw body and content type.
pub async fn post_raw(path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
    let mut request = http().post(format!("{}{path}", stack().api_url)).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    Reply::from(request.send().await.expect("POST")).await
}

pub async fn get_payment(payment_id: &str) -> Reply {
    Reply::from(
        http()
            .get(format!("{}/payments/{payment_id}", stack().api_url))
            .send()
            .await
            .expect("GET"),
    )
    .await
}

/// A valid create body for `order_id`, paid through the sandbox.
pub fn create_body(order_id: &str, amount_minor: i64) -> Value {
    serde_json::json!({
        "order_id": order_id,
        "amount_minor": amount_minor,
        "currency": "CNY",
        "provider": "sandbox",
        "subject": format!("test {order_id}"),
    })
}

/// Dependencies for running the use cases in-process against moto and the stack's sandbox, with
/// the DynamoDB client counting its requests.
pub async fn in_process_deps(counter: &RequestCounter) -> shared::app::Deps {
    in_process(counter).await.0
}

/// [`in_process_deps`], and the tables it writes to.
pub async fn in_process(counter: &RequestCounter) -> (shared::app::Deps, Tables) {
    use shared::crypto::{RsaSigner, RsaVerifier};
    use shared::provider::{SandboxConfig, SandboxProvider};
    let client = dynamo(Some(counter.clone())).await;
    let tables = fresh_table_set(&client).await;
    counter.reset();
    let clock: Arc<dyn shared::ports::Clock> = Arc::new(shared::clock::SystemClock);
    let config = SandboxConfig {
        base_url: stack().sandbox_url.clone(),
        merchant_id: stack().merchant_id.clone(),
        merchant_key: RsaSigner::from_pem(&key_pem("merchant_private.pem")).expect("merchant key"),
        provider_key: RsaVerifier::from_pem(&key_pem("sandbox_public.pem")).expect("sandbox key"),
        // Nothing listens here: these tests deliver notifications themselves.
        notify_url: "http://127.0.0.1:9/callbacks/sandbox".into(),
        timeout: std::time::Duration::from_millis(1500),
    };
    let provider = SandboxProvider::new(config, clock.clone()).expect("provider");
    let deps = shared::app::Deps {
        store: Arc::new(
            shared::store::DynamoStore::new(
                client,
                tables.payments.clone(),
                tables.idempotency.clone(),
            )
            .with_compensations(tables.compensations.clone()),
        ),
        providers: shared::ports::Providers::default().with(Arc::new(provider)),
        clock,
        ids: Arc::new(shared::clock::RandomIds),
        poll: Default::default(),
    };
    (deps, tables)
}

/// A sandbox notification for `payment_id`, signed with the sandbox's key now, as headers + body.
pub fn signed_notice(
    payment_id: &str,
    amount_minor: i64,
    status: &str,
) -> (http::HeaderMap, String) {
    let body = serde_json::json!({
        "notify_id": unique("N"),
        "merchant_id": stack().merchant_id,
        "out_trade_no": payment_id,
        "trade_no": format!("SBX{payment_id}"),
        "status": status,
        "amount_minor": amount_minor,
        "currency": "CNY",
        "paid_at": "2026-01-01T00:00:00Z",
    })
    .to_string();
    let timestamp = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("secs");
    let signature = xtask::sandbox::sign_provider_message(
        &key_pem("sandbox_private.pem"),
        timestamp,
        "n0nce",
        body.as_bytes(),
    )
    .expect("sign");
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-sandbox-timestamp",
        timestamp.to_string().parse().expect("header"),
    );
    headers.insert("x-sandbox-nonce", "n0nce".parse().expect("header"));
    headers.insert("x-sandbox-signature", signature.parse().expect("header"));
    headers.insert("content-type", "application/json".parse().expect("header"));
    (headers, body)
}

/// Posts a signed notification to the stack's callback route.
pub async fn deliver(headers: &http::HeaderMap, body: &str) -> Reply {
    let mut request = http()
        .post(format!("{}/callbacks/sandbox", stack().api_url))
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_bytes());
    }
    Reply::from(request.send().await.expect("callback")).await
}

/// The sandbox's admin API.
pub mod sandbox {
    use super::*;

    /// Sets fault knobs for trades whose subject starts with `scope`.
    pub async fn set_faults(scope: &str, knobs: Value) {
        let mut body = knobs;
        body["scope"] = Value::String(scope.to_owned());
        let response = http()
            .put(format!("{}/admin/faults", stack().sandbox_url))
            .json(&body)
            .send()
            .await
            .expect("faults");
        assert!(
            response.status().is_success(),
            "setting faults: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// The payer pays.
    pub async fn pay(pay_url: &str) -> Reply {
        Reply::from(http().post(pay_url).send().await.expect("pay")).await
    }

    /// The sandbox's view of a trade, with its delivery log.
    pub async fn trade(out_trade_no: &str) -> Value {
        let url = format!("{}/admin/trades/{out_trade_no}", stack().sandbox_url);
        http()
            .get(url)
            .send()
            .await
            .expect("trade")
            .json()
            .await
            .expect("trade json")
    }
}

/// Polls `GET /payments/{id}` until `done` holds or `timeout_ms` passes; returns the last reply.
pub async fn wait_for_payment(
    payment_id: &str,
    timeout_ms: u64,
    done: impl Fn(&Value) -> bool,
) -> Reply {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    loop {
        let reply = get_payment(payment_id).await;
        if done(&reply.body) || tokio::time::Instant::now() >= deadline {
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
