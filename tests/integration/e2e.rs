//! Through the real binaries: HTTP create -> sandbox pay -> callback -> `GET` shows `paid`.

use serde_json::Value;
use tests::{create, create_body, get_payment, sandbox, unique, wait_for_payment};

#[tokio::test]
async fn create_pay_callback_paid() {
    let order_id = unique("e2e");
    let created = create(&create_body(&order_id, 1234)).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["status"], "pending");
    assert_eq!(created.body["amount_minor"], 1234);
    let payment_id = created.body["payment_id"].as_str().unwrap().to_owned();
    let pay_url = created.body["pay_url"].as_str().unwrap().to_owned();

    assert_eq!(sandbox::pay(&pay_url).await.status, 200);
    let paid = wait_for_payment(&payment_id, 10_000, |p| p["status"] == "paid").await;
    assert_eq!(paid.body["status"], "paid", "{}", paid.text);
    assert_eq!(paid.body["version"], 2);
    let history: Vec<&str> = paid.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["pending", "paid"]);

    // The sandbox got exactly one acknowledged delivery.
    let trade = sandbox::trade(&payment_id).await;
    let acked = trade["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["acked"] == Value::Bool(true))
        .count();
    assert_eq!(acked, 1, "{trade}");

    // A replay of the create returns the original answer, not the current state.
    let replay = create(&create_body(&order_id, 1234)).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.text, created.text);
    assert_eq!(get_payment(&payment_id).await.body["version"], 2);
}

#[tokio::test]
async fn unknown_payment_is_404() {
    let reply = get_payment("01ZZZZZZZZZZZZZZZZZZZZZZZZ").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "not_found");
    let bad = get_payment("not-a-valid-id!").await;
    assert_eq!(bad.status, 400);
}
