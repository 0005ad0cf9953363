//! Many things at once: identical creates, identical callbacks, and a callback racing the create.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use shared::app::callback::{CallbackResult, handle_callback};
use shared::app::create::create_payment;
use shared::domain::{PaymentId, ProviderName, Timestamp};
use shared::ports::{
    CallbackAnswer, CallbackRejection, CallbackReply, CloseOutcome, PaymentProvider,
    ProviderCreate, ProviderCreated, ProviderError, ProviderTrade, Providers, Verified,
};
use tests::{
    RequestCounter, create, create_body, deliver, dynamo, get_payment, in_process_deps, sandbox,
    signed_notice, stack, unique,
};
use tokio::task::JoinSet;

const N: usize = 32;

#[tokio::test]
async fn identical_creates_make_one_payment_and_one_provider_call() {
    let order_id = unique("conc");
    let body = create_body(&order_id, 777);
    let mut set = JoinSet::new();
    for _ in 0..N {
        let body = body.clone();
        set.spawn(async move { create(&body).await });
    }
    let replies: Vec<_> = set.join_all().await;
    let ok: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!ok.is_empty(), "no request succeeded");
    for reply in &replies {
        match reply.status {
            201 => assert_eq!(
                reply.text, ok[0].text,
                "every success is the same stored response"
            ),
            409 => {
                assert_eq!(reply.error_code(), "in_progress", "{}", reply.text);
                assert!(reply.retry_after.is_some(), "409 without Retry-After");
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    let payment_id = ok[0].body["payment_id"].as_str().unwrap();
    // One order item, one payment with this order id, one create at the provider.
    let client = dynamo(None).await;
    let payments = tests::scan_all(&client, &stack().payments_table).await;
    let of_order = payments
        .iter()
        .filter(|item| item.get("order_id").and_then(|v| v.as_s().ok()) == Some(&order_id))
        .count();
    assert_eq!(of_order, 1);
    let trade = sandbox::trade(payment_id).await;
    assert_eq!(trade["create_calls"], 1, "{trade}");
}

#[tokio::test]
async fn identical_callbacks_make_one_transition() {
    let created = create(&create_body(&unique("conc-cb"), 555)).await;
    assert_eq!(created.status, 201);
    let payment_id = created.body["payment_id"].as_str().unwrap().to_owned();
    let (headers, body) = signed_notice(&payment_id, 555, "PAID");
    let mut set = JoinSet::new();
    for _ in 0..N {
        let (headers, body) = (headers.clone(), body.clone());
        set.spawn(async move { deliver(&headers, &body).await });
    }
    let replies = set.join_all().await;
    let successes = replies
        .iter()
        .filter(|r| r.status == 200 && r.body["code"] == "SUCCESS")
        .count();
    let retryable = replies
        .iter()
        .filter(|r| r.status == 500 && r.body["code"] == "FAIL")
        .count();
    assert!(successes >= 1);
    assert_eq!(
        successes + retryable,
        N,
        "only success or a retryable failure: {replies:?}"
    );
    let payment = get_payment(&payment_id).await;
    assert_eq!(payment.body["status"], "paid");
    assert_eq!(payment.body["version"], 2);
    assert_eq!(payment.body["history"].as_array().unwrap().len(), 2);
}

/// Wraps the real sandbox adapter: after the provider accepted the create and before our create
/// stores the answer, the payer pays and the provider's callback is handled.
struct RacingProvider {
    inner: Arc<dyn PaymentProvider>,
    deps: tokio::sync::OnceCell<shared::app::Deps>,
    callback: tokio::sync::Mutex<Option<CallbackResult>>,
}

#[async_trait]
impl PaymentProvider for RacingProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Sandbox
    }

    async fn create(&self, request: &ProviderCreate) -> Result<ProviderCreated, ProviderError> {
        let created = self.inner.create(request).await?;
        let (headers, body) = signed_notice(
            request.payment_id.as_str(),
            request.money.amount.get(),
            "PAID",
        );
        let deps = self.deps.get().expect("deps set");
        let outcome = handle_callback(deps, ProviderName::Sandbox, &headers, body.as_bytes())
            .await
            .expect("sandbox");
        *self.callback.lock().await = Some(outcome.result);
        Ok(created)
    }

    async fn query(&self, payment_id: &PaymentId) -> Result<Option<ProviderTrade>, ProviderError> {
        self.inner.query(payment_id).await
    }

    async fn close(&self, payment_id: &PaymentId) -> Result<CloseOutcome, ProviderError> {
        self.inner.close(payment_id).await
    }

    async fn refund(
        &self,
        refund: &shared::ports::ProviderRefund,
    ) -> Result<shared::ports::RefundState, ProviderError> {
        self.inner.refund(refund).await
    }

    async fn query_refund(
        &self,
        refund: &shared::ports::ProviderRefund,
    ) -> Result<Option<shared::ports::RefundState>, ProviderError> {
        self.inner.query_refund(refund).await
    }

    fn verify_callback(
        &self,
        h: &http::HeaderMap,
        b: &[u8],
        now: Timestamp,
    ) -> Result<Verified, CallbackRejection> {
        self.inner.verify_callback(h, b, now)
    }

    fn reply(&self, answer: CallbackAnswer, detail: &str) -> CallbackReply {
        self.inner.reply(answer, detail)
    }
}

#[tokio::test]
async fn a_callback_racing_the_create_ends_paid() {
    let deps = in_process_deps(&RequestCounter::default()).await;
    let inner = deps.providers.get(ProviderName::Sandbox).unwrap().clone();
    let racing = Arc::new(RacingProvider {
        inner,
        deps: tokio::sync::OnceCell::new(),
        callback: tokio::sync::Mutex::new(None),
    });
    let deps = shared::app::Deps {
        providers: Providers::default().with(racing.clone()),
        ..deps
    };
    assert!(racing.deps.set(deps.clone()).is_ok());

    let body = create_body(&unique("race"), 321).to_string();
    let request = shared::edge::create_request(Some("application/json"), body.as_bytes()).unwrap();
    let created = create_payment(&deps, &request, None).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(*racing.callback.lock().await, Some(CallbackResult::Applied));

    let id = PaymentId::parse(
        serde_json::from_str::<Value>(&created.body).unwrap()["payment_id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let record = deps.store.payment(&id).await.unwrap().unwrap();
    assert_eq!(record.payment.status, shared::domain::PaymentStatus::Paid);
    assert_eq!(record.payment.version, 2);
    assert!(
        record.payment.pay_url.is_some(),
        "the provider's answer was stored after the callback"
    );
    let key = request.idempotency_key();
    let stored = deps.store.record(&key).await.unwrap().unwrap();
    assert_eq!(stored.response.map(|r| r.status), Some(201));
}

/// Regression: moto restores whole-table snapshots when a transaction is cancelled, which in a
/// threaded server erased concurrent writes to other payments (the local stack serializes moto's
/// requests). Duplicates whose guards fail must not undo other payments' transitions.
#[tokio::test]
async fn cancelled_duplicates_do_not_undo_other_payments() {
    let mut notices = Vec::new();
    for i in 0..10 {
        let created = create(&create_body(&unique(&format!("mix{i}")), 100 + i)).await;
        assert_eq!(created.status, 201);
        let id = created.body["payment_id"].as_str().unwrap().to_owned();
        notices.push((id.clone(), signed_notice(&id, 100 + i, "PAID")));
    }
    let mut set = JoinSet::new();
    for (_, (headers, body)) in &notices {
        for _ in 0..3 {
            let (headers, body) = (headers.clone(), body.clone());
            set.spawn(async move { deliver(&headers, &body).await.status });
        }
    }
    let statuses = set.join_all().await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 500),
        "{statuses:?}"
    );
    for (id, _) in &notices {
        let payment = get_payment(id).await.body;
        assert_eq!(
            (payment["status"].as_str(), payment["version"].as_u64()),
            (Some("paid"), Some(2)),
            "{id}"
        );
    }
}
