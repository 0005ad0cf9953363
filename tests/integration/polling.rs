//! The poller on the real stack: the due index, claims and compensation records on moto, and
//! payments whose notifications the sandbox never sends reaching their final state through the
//! schedule the local stack fires from the template.

use std::sync::Arc;

use serde_json::{Value, json};
use shared::app::Deps;
use shared::app::create::create_payment;
use shared::app::poll::{PollRun, run_poller};
use shared::clock::ManualClock;
use shared::domain::polling::PollSchedule;
use shared::domain::{PaymentId, PaymentStatus};
use shared::ports::Clock;
use tests::{
    RequestCounter, create, create_body, dynamo, get_payment, http, in_process, sandbox, scan_all,
    stack, unique, wait_for_payment,
};

/// In-process deps on fresh moto tables, with a manual clock starting now.
async fn world(max_unknown_checks: u32) -> (Deps, Arc<ManualClock>, tests::Tables) {
    let (deps, tables) = in_process(&RequestCounter::default()).await;
    let clock = Arc::new(ManualClock::at(deps.clock.now()));
    let deps = Deps {
        clock: clock.clone(),
        poll: PollSchedule::new(vec![60, 300], max_unknown_checks).unwrap(),
        ..deps
    };
    (deps, clock, tables)
}

async fn create_in_process(deps: &Deps, order_id: &str) -> (PaymentId, String) {
    let body = create_body(order_id, 700).to_string();
    let request = shared::edge::create_request(Some("application/json"), body.as_bytes()).unwrap();
    let created = create_payment(deps, &request, None).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let body: Value = serde_json::from_str(&created.body).unwrap();
    (
        PaymentId::parse(body["payment_id"].as_str().unwrap()).unwrap(),
        body["pay_url"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_due_index_on_moto_finds_claims_and_settles_due_payments() {
    let (deps, clock, _) = world(12).await;
    let prefix = unique("due");
    let mut ids = Vec::new();
    for n in 0..5 {
        let order_id = format!("{prefix}-{n}");
        sandbox::set_faults(&format!("test {order_id}"), json!({ "never_notify": true })).await;
        ids.push(create_in_process(&deps, &order_id).await);
    }
    // Two of them are paid at the sandbox; nobody tells us.
    for (_, pay_url) in &ids[..2] {
        sandbox::pay(pay_url).await;
    }
    // Five payments over eight shards: a page of five per shard can hold them all.
    let run = PollRun {
        page_per_shard: 5,
        ..PollRun::default()
    };
    let nothing = run_poller(&deps, &run).await;
    assert_eq!(nothing.due, 0, "not due before the first step: {nothing:?}");

    clock.advance_ms(60_000);
    // Two overlapping runs: every due payment is claimed and checked once.
    let (a, b) = tokio::join!(run_poller(&deps, &run), run_poller(&deps, &run));
    let checked = |s: &shared::app::poll::PollSummary| s.due - s.not_claimed;
    assert_eq!(checked(&a) + checked(&b), 5, "{a:?} {b:?}");
    assert_eq!(a.paid + b.paid, 2, "{a:?} {b:?}");
    assert_eq!(a.waiting + b.waiting, 3, "{a:?} {b:?}");

    for (n, (id, _)) in ids.iter().enumerate() {
        let record = deps.store.payment(id).await.unwrap().unwrap();
        if n < 2 {
            assert_eq!(record.payment.status, PaymentStatus::Paid);
            assert_eq!(record.payment.next_check_at, None);
            assert_eq!(record.history.last().unwrap().source, "poll");
        } else {
            assert_eq!(record.payment.status, PaymentStatus::Pending);
            assert_eq!(record.payment.checks_done, 1);
            assert_eq!(
                record.payment.next_check_at,
                Some(clock.now().plus_s(300)),
                "the second step"
            );
        }
    }
    assert_eq!(
        run_poller(&deps, &run).await.due,
        0,
        "none due until the next step"
    );
}

#[tokio::test]
async fn exhaustion_writes_exception_and_the_compensation_record_together() {
    let (deps, clock, tables) = world(1).await;
    let order_id = unique("exhaust");
    sandbox::set_faults(&format!("test {order_id}"), json!({ "query": "error" })).await;
    let (id, _) = create_in_process(&deps, &order_id).await;
    clock.advance_ms(60_000);
    let summary = run_poller(&deps, &PollRun::default()).await;
    assert_eq!(summary.exception, 1, "{summary:?}");
    let record = deps.store.payment(&id).await.unwrap().unwrap();
    assert_eq!(record.payment.status, PaymentStatus::Exception);
    let client = dynamo(None).await;
    let items = scan_all(&client, &tables.compensations).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    let text = |name: &str| item[name].as_s().unwrap().clone();
    assert_eq!(text("id"), format!("poll-exhausted#{id}"));
    assert_eq!(text("kind"), "poll_exhausted");
    assert_eq!(text("payment_id"), id.as_str());
    assert_eq!(text("status"), "open");
    let evidence = item["evidence"].as_l().unwrap();
    assert_eq!(evidence.len(), 1);
    assert!(
        evidence[0].as_s().unwrap().contains("query"),
        "{evidence:?}"
    );
}

async fn create_silent(prefix: &str, expires_in_s: Option<i64>) -> (String, String) {
    let order_id = unique(prefix);
    let mut body = create_body(&order_id, 880);
    sandbox::set_faults(
        body["subject"].as_str().unwrap(),
        json!({ "never_notify": true }),
    )
    .await;
    if let Some(s) = expires_in_s {
        body["expires_in_s"] = json!(s);
    }
    let reply = create(&body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    (
        reply.body["payment_id"].as_str().unwrap().to_owned(),
        reply.body["pay_url"].as_str().unwrap().to_owned(),
    )
}

fn sources(payment: &Value) -> Vec<String> {
    payment["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}:{}",
                h["source"].as_str().unwrap(),
                h["to"].as_str().unwrap()
            )
        })
        .collect()
}

/// Notifications dropped for every payment: the schedule the stack fires from the template
/// (time-scaled) still brings each to its final state.
#[tokio::test]
async fn without_notifications_every_payment_reaches_its_final_state_by_polling() {
    let mut paid = Vec::new();
    for _ in 0..4 {
        let (id, pay_url) = create_silent("silent", None).await;
        sandbox::pay(&pay_url).await;
        paid.push(id);
    }
    // Never paid, expiring at the shortest allowed expiry: queried, closed at the provider.
    let (expiring, _) = create_silent("expiring", Some(60)).await;

    for id in &paid {
        let reply = wait_for_payment(id, 30_000, |p| p["status"] != "pending").await;
        assert_eq!(reply.body["status"], "paid", "{}", reply.text);
        assert_eq!(sources(&reply.body), ["create:pending", "poll:paid"]);
        let trade = sandbox::trade(id).await;
        assert!(
            trade["deliveries"].as_array().unwrap().is_empty(),
            "no notification was ever sent: {trade}"
        );
    }
    let pending = get_payment(&expiring).await;
    assert_eq!(pending.body["status"], "pending", "open until it expires");

    let reply = wait_for_payment(&expiring, 90_000, |p| p["status"] != "pending").await;
    assert_eq!(reply.body["status"], "closed", "{}", reply.text);
    assert_eq!(sources(&reply.body), ["create:pending", "poll:closed"]);
    assert_eq!(sandbox::trade(&expiring).await["status"], "CLOSED");
}

#[tokio::test]
async fn the_merchant_closes_a_payment_through_the_api() {
    let (id, pay_url) = create_silent("close", None).await;
    let close = |id: String| async move {
        tests::Reply::from(
            http()
                .post(format!("{}/payments/{id}/close", stack().api_url))
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    let reply = close(id.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["status"], "closed");
    assert_eq!(sandbox::trade(&id).await["status"], "CLOSED");
    // The payer is too late now, and a second close answers the same.
    let late = sandbox::pay(&pay_url).await;
    assert!(late.status >= 400, "{}", late.text);
    let again = close(id.clone()).await;
    assert_eq!(
        (again.status, again.body["status"].as_str()),
        (200, Some("closed"))
    );
    let payment = get_payment(&id).await;
    assert_eq!(sources(&payment.body), ["create:pending", "close:closed"]);

    // A paid payment is not closed: 409, and it is recorded paid.
    let (paid_id, pay_url) = create_silent("close-paid", None).await;
    sandbox::pay(&pay_url).await;
    let refused = close(paid_id.clone()).await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert_eq!(refused.error_code(), "already_paid");
    let reply = wait_for_payment(&paid_id, 5_000, |p| p["status"] == "paid").await;
    assert_eq!(reply.body["status"], "paid");

    for (raw, status) in [("not-an-id!", 400), ("01J00000000000000000000000", 404)] {
        let reply = close(raw.to_owned()).await;
        assert_eq!(reply.status, status, "{raw}: {}", reply.text);
    }
}

#[tokio::test]
async fn a_closed_order_gets_a_second_attempt_through_the_api() {
    let order_id = unique("attempt");
    let mut body = create_body(&order_id, 990);
    let first = create(&body).await;
    assert_eq!(
        (first.status, first.body["attempt"].as_u64()),
        (201, Some(1))
    );
    let first_id = first.body["payment_id"].as_str().unwrap().to_owned();

    body["subject"] = json!(format!("{} again", body["subject"].as_str().unwrap()));
    let busy = create(&body).await;
    assert_eq!(
        (busy.status, busy.error_code()),
        (409, "idempotency_mismatch")
    );

    let closed = http()
        .post(format!("{}/payments/{first_id}/close", stack().api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    let second = create(&body).await;
    assert_eq!(
        (second.status, second.body["attempt"].as_u64()),
        (201, Some(2)),
        "{}",
        second.text
    );
    let second_id = second.body["payment_id"].as_str().unwrap().to_owned();
    assert_ne!(second_id, first_id);
    assert_eq!(
        create(&body).await.body,
        second.body,
        "a replay answers attempt 2"
    );

    // The order item points at the active attempt.
    let client = dynamo(None).await;
    let order = client
        .get_item()
        .table_name(&stack().payments_table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("ORDER#{order_id}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("ORDER".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(order["payment_id"].as_s().unwrap(), &second_id);
    assert_eq!(order["attempt"].as_n().unwrap(), "2");
}

/// A provider that never answers the poller's queries: the stack's own poller (the template's
/// `PollMaxUnknownChecks`, the scaled schedule) ends in `exception`, and the poller's log has
/// the alert and the EMF alarm metric.
#[tokio::test]
async fn an_unreachable_provider_ends_in_exception_with_an_alarm_metric() {
    let order_id = unique("unreachable");
    let body = create_body(&order_id, 660);
    sandbox::set_faults(
        body["subject"].as_str().unwrap(),
        json!({ "query": "error", "never_notify": true }),
    )
    .await;
    let reply = create(&body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.body["payment_id"].as_str().unwrap().to_owned();
    let payment = wait_for_payment(&id, 150_000, |p| p["status"] != "pending").await;
    assert_eq!(payment.body["status"], "exception", "{}", payment.text);
    assert_eq!(sources(&payment.body), ["create:pending", "poll:exception"]);
    assert!(
        payment.body["status_reason"]
            .as_str()
            .unwrap()
            .contains("12 checks"),
        "{}",
        payment.text
    );

    let log = std::fs::read_to_string(stack().log_dir.join("status-poller.log")).unwrap();
    let alert = log
        .lines()
        .find(|l| l.contains("\"alert\":\"poll_exhausted\"") && l.contains(&id));
    assert!(alert.is_some(), "no alert line for {id}");
    let metric: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with("{\"_aws\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|m: &Value| m["Kind"] == "poll_exhausted")
        .collect();
    assert!(!metric.is_empty(), "no EMF alarm line");
    assert_eq!(metric[0]["Alarms"], 1);
    assert_eq!(
        metric[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "Payments"
    );
}
