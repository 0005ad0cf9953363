//! Refunds on the real stack: the reservation's condition on moto under concurrent refunds, the
//! settlement transaction, and the refunds API through the functions and the sandbox.

use serde_json::{Value, json};
use shared::app::callback::{CallbackResult, handle_callback};
use shared::app::create::create_payment;
use shared::domain::refund::{Refund, RefundKind, RefundStatus};
use shared::domain::{AmountMinor, Currency, PaymentId, PaymentStatus, ProviderName, RefundId};
use shared::ports::{RefundInsert, RefundSettlement};
use tests::{
    Reply, RequestCounter, create, create_body, get_payment, http, in_process_deps, sandbox,
    signed_notice, stack, unique, wait_for_payment,
};

const AMOUNT: i64 = 1234;

fn refund(payment_id: &PaymentId, refund_id: &str, amount: i64) -> Refund {
    let now = shared::domain::Timestamp::from_unix_s(1_800_000_000);
    let refund_id = RefundId::parse(refund_id).unwrap();
    Refund {
        refund_no: shared::app::refunds::refund_no(payment_id, &refund_id),
        refund_id,
        payment_id: payment_id.clone(),
        amount_minor: AmountMinor::new(amount).unwrap(),
        currency: Currency::Cny,
        reason: "test".into(),
        kind: RefundKind::Merchant,
        status: RefundStatus::Pending,
        provider_trade_no: None,
        created_at: now,
        updated_at: now,
        next_check_at: Some(now),
        checks_done: 0,
        unknown_checks: 0,
        recent_checks: Vec::new(),
        status_reason: None,
    }
}

#[tokio::test]
async fn the_reservation_holds_under_concurrent_refunds_on_moto() {
    let deps = in_process_deps(&RequestCounter::default()).await;
    let body = create_body(&unique("refund-race"), AMOUNT).to_string();
    let request = shared::edge::create_request(Some("application/json"), body.as_bytes()).unwrap();
    let created = create_payment(&deps, &request, None).await.unwrap();
    let payment_id = serde_json::from_str::<Value>(&created.body).unwrap()["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = PaymentId::parse(&payment_id).unwrap();
    let unpaid = deps
        .store
        .insert_refund(&refund(&id, "early", 1), AMOUNT, &[PaymentStatus::Paid])
        .await
        .unwrap();
    assert!(matches!(unpaid, RefundInsert::Refused(_)), "{unpaid:?}");

    let (headers, notice) = signed_notice(&payment_id, AMOUNT, "PAID");
    let paid = handle_callback(&deps, ProviderName::Sandbox, &headers, notice.as_bytes())
        .await
        .unwrap();
    assert_eq!(paid.result, CallbackResult::Applied);

    let attempts = (0..10).map(|n| {
        let deps = deps.clone();
        let refund = refund(&id, &format!("race-{n}"), 300);
        tokio::spawn(async move {
            deps.store
                .insert_refund(
                    &refund,
                    AMOUNT,
                    &[PaymentStatus::Paid, PaymentStatus::PartiallyRefunded],
                )
                .await
                .unwrap()
        })
    });
    let mut inserted = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            RefundInsert::Inserted => inserted += 1,
            RefundInsert::Refused(payment) => assert!(payment.refund_reserved_minor > AMOUNT - 300),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(inserted, 4, "4 x 300 <= 1234 < 5 x 300");
    let record = deps.store.payment(&id).await.unwrap().unwrap();
    assert_eq!(record.payment.refund_reserved_minor, 1200);
    assert_eq!(deps.store.refunds(&id).await.unwrap().len(), 4);

    // The same refund id again: the existing one comes back, nothing reserved twice.
    let first = deps.store.refunds(&id).await.unwrap().remove(0);
    let again = deps
        .store
        .insert_refund(&first, AMOUNT, &[PaymentStatus::Paid])
        .await
        .unwrap();
    assert!(matches!(again, RefundInsert::Exists(ref r) if r.refund_id == first.refund_id));

    // Settling: a failure frees its amount, a success moves the payment; each once.
    let settle =
        |refund: &Refund, to: RefundStatus, payment: &shared::domain::Payment| RefundSettlement {
            payment_id: id.clone(),
            refund_id: refund.refund_id.clone(),
            amount_minor: refund.amount_minor.get(),
            to,
            reason: None,
            at: shared::domain::Timestamp::from_unix_s(1_800_000_100),
            payment_status: payment.status,
            payment_version: payment.version,
            transition: None,
        };
    let payment = record.payment.clone();
    assert!(
        deps.store
            .settle_refund(&settle(&first, RefundStatus::Failed, &payment))
            .await
            .unwrap()
    );
    assert!(
        !deps
            .store
            .settle_refund(&settle(&first, RefundStatus::Failed, &payment))
            .await
            .unwrap()
    );
    let payment = deps.store.payment(&id).await.unwrap().unwrap().payment;
    assert_eq!(payment.refund_reserved_minor, 900);
    let second = deps.store.refunds(&id).await.unwrap().remove(1);
    let transition = shared::domain::payment::Transition::new(
        id.clone(),
        (PaymentStatus::Paid, PaymentStatus::PartiallyRefunded),
        payment.version,
        shared::domain::Timestamp::from_unix_s(1_800_000_200),
        "refund",
    )
    .because("refund");
    let succeeded = RefundSettlement {
        transition: Some(transition),
        ..settle(&second, RefundStatus::Succeeded, &payment)
    };
    assert!(deps.store.settle_refund(&succeeded).await.unwrap());
    let record = deps.store.payment(&id).await.unwrap().unwrap();
    assert_eq!(record.payment.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(
        (
            record.payment.refunded_minor,
            record.payment.refund_reserved_minor
        ),
        (300, 900)
    );
    assert_eq!(record.history.last().unwrap().source, "refund");
    let stored = deps
        .store
        .refund(&id, &second.refund_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.status, stored.next_check_at),
        (RefundStatus::Succeeded, None)
    );
    // A stale version is refused: the caller must re-read.
    assert!(!deps.store.settle_refund(&succeeded).await.unwrap());
}

async fn post_refund(payment_id: &str, body: &Value) -> Reply {
    Reply::from(
        http()
            .post(format!("{}/payments/{payment_id}/refunds", stack().api_url))
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn list(payment_id: &str) -> Reply {
    Reply::from(
        http()
            .get(format!("{}/payments/{payment_id}/refunds", stack().api_url))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_refunds_api_refunds_through_the_sandbox() {
    let order_id = unique("refund-api");
    let reply = create(&create_body(&order_id, AMOUNT)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.body["payment_id"].as_str().unwrap().to_owned();
    let early = post_refund(
        &id,
        &json!({"refund_id": "r1", "amount_minor": 100, "reason": "x"}),
    )
    .await;
    assert_eq!((early.status, early.error_code()), (409, "not_refundable"));

    sandbox::pay(reply.body["pay_url"].as_str().unwrap()).await;
    let paid = wait_for_payment(&id, 10_000, |p| p["status"] == "paid").await;
    assert_eq!(paid.body["status"], "paid", "{}", paid.text);

    let first = post_refund(
        &id,
        &json!({"refund_id": "r1", "amount_minor": 234, "reason": "one cup returned"}),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["status"], "succeeded", "{}", first.text);
    let replay = post_refund(
        &id,
        &json!({"refund_id": "r1", "amount_minor": 234, "reason": "one cup returned"}),
    )
    .await;
    assert_eq!((replay.status, &replay.body), (200, &first.body));
    let mismatch = post_refund(
        &id,
        &json!({"refund_id": "r1", "amount_minor": 235, "reason": "one cup returned"}),
    )
    .await;
    assert_eq!(
        (mismatch.status, mismatch.error_code()),
        (409, "idempotency_mismatch")
    );
    let too_much = post_refund(
        &id,
        &json!({"refund_id": "r2", "amount_minor": 1001, "reason": "x"}),
    )
    .await;
    assert_eq!(
        (too_much.status, too_much.error_code()),
        (409, "refund_exceeds_payment")
    );
    let bad = post_refund(
        &id,
        &json!({"refund_id": "r2", "amount_minor": "10", "reason": "x"}),
    )
    .await;
    assert_eq!((bad.status, bad.error_code()), (400, "invalid_field"));

    let payment = get_payment(&id).await;
    assert_eq!(
        payment.body["status"], "partially_refunded",
        "{}",
        payment.text
    );
    let rest = post_refund(
        &id,
        &json!({"refund_id": "r2", "amount_minor": 1000, "reason": "the rest"}),
    )
    .await;
    assert_eq!(rest.body["status"], "succeeded", "{}", rest.text);
    assert_eq!(get_payment(&id).await.body["status"], "refunded");

    let listed = list(&id).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let ids: Vec<&str> = listed.body["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["refund_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2"]);
    assert_eq!(list("01J00000000000000000000000").await.status, 404);
}
