//! The request budget: a first callback costs exactly one DynamoDB request, a repeated one at most
//! one, a create at most two. Counted by an SDK interceptor on a real client against moto.

use shared::app::callback::{CallbackResult, handle_callback};
use shared::app::create::create_payment;
use shared::domain::ProviderName;
use tests::{RequestCounter, create_body, in_process_deps, signed_notice, unique};

#[tokio::test]
async fn create_costs_two_requests_and_callbacks_one() {
    let counter = RequestCounter::default();
    let deps = in_process_deps(&counter).await;
    let body = create_body(&unique("budget"), 4200).to_string();
    let request = shared::edge::create_request(Some("application/json"), body.as_bytes()).unwrap();

    let created = create_payment(&deps, &request, None).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(counter.total(), 2, "create: {:?}", counter.by_operation());
    assert_eq!(counter.by_operation().get("TransactWriteItems"), Some(&2));

    counter.reset();
    let replay = create_payment(&deps, &request, None).await.unwrap();
    assert_eq!(replay, created);
    assert_eq!(counter.total(), 1, "replay: {:?}", counter.by_operation());

    let payment_id =
        serde_json::from_str::<serde_json::Value>(&created.body).unwrap()["payment_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let (headers, notice) = signed_notice(&payment_id, 4200, "PAID");
    counter.reset();
    let first = handle_callback(&deps, ProviderName::Sandbox, &headers, notice.as_bytes())
        .await
        .unwrap();
    assert_eq!(first.result, CallbackResult::Applied);
    assert_eq!(
        counter.total(),
        1,
        "first callback: {:?}",
        counter.by_operation()
    );

    counter.reset();
    let again = handle_callback(&deps, ProviderName::Sandbox, &headers, notice.as_bytes())
        .await
        .unwrap();
    assert_eq!(again.result, CallbackResult::Duplicate);
    assert!(
        counter.total() <= 1,
        "repeated callback: {:?}",
        counter.by_operation()
    );

    // A refused callback costs nothing at all.
    counter.reset();
    let forged = handle_callback(
        &deps,
        ProviderName::Sandbox,
        &headers,
        b"{\"tampered\":true}",
    )
    .await
    .unwrap();
    assert_eq!(forged.result, CallbackResult::Rejected);
    assert_eq!(counter.total(), 0);
}
