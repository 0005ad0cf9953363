//! Bad input through the real API: every refusal is a 4xx with `{"error":{"code","message","field"?}}`,
//! never a 5xx, and nothing reaches either table.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use tests::{Reply, create, create_body, dynamo, get_payment, post_raw, stack, unique};

const JSON: Option<&str> = Some("application/json");

/// One bad request and the refusal it must get.
struct Case {
    name: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

/// Asserts that `reply` is the refusal `(status, code, field)` in the API's error shape.
fn check(case: &str, reply: &Reply, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(reply.status, status, "{case}: {}", reply.text);
    let error = reply.body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{case}: no error object in {}", reply.text));
    assert_eq!(
        error.get("code").and_then(Value::as_str),
        Some(code),
        "{case}: {}",
        reply.text
    );
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    assert!(
        !message.is_empty(),
        "{case}: empty message in {}",
        reply.text
    );
    assert_eq!(
        error.get("field").and_then(Value::as_str),
        field,
        "{case}: {}",
        reply.text
    );
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let expected_keys: &[&str] = if field.is_some() {
        &["code", "field", "message"]
    } else {
        &["code", "message"]
    };
    assert_eq!(keys, expected_keys, "{case}: {}", reply.text);
    assert_eq!(
        reply.body.as_object().map(|o| o.len()),
        Some(1),
        "{case}: extra top-level keys in {}",
        reply.text
    );
}

/// Every item of `table` for which `filter` (with `:p` bound to `needle`) holds, across all pages.
async fn scan_matching(
    table: &str,
    filter: &str,
    needle: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    let client = dynamo(None).await;
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .filter_expression(filter)
            .expression_attribute_values(":p", AttributeValue::S(needle.to_owned()))
            .set_exclusive_start_key(start)
            .consistent_read(true)
            .send()
            .await
            .expect("scan");
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return items;
        }
    }
}

/// Items in the stack's payments and idempotency tables that mention `needle` (an order-id prefix).
async fn written(
    needle: &str,
) -> (
    Vec<HashMap<String, AttributeValue>>,
    Vec<HashMap<String, AttributeValue>>,
) {
    let payments = scan_matching(
        &stack().payments_table,
        "contains(pk, :p) OR contains(order_id, :p)",
        needle,
    )
    .await;
    let records = scan_matching(&stack().idempotency_table, "contains(id, :p)", needle).await;
    (payments, records)
}

/// A valid body for `order_id` with `field` set to `value`.
fn with(order_id: &str, field: &str, value: Value) -> Value {
    let mut body = create_body(order_id, 100);
    body[field] = value;
    body
}

/// A valid body for `order_id` without `field`.
fn without(order_id: &str, field: &str) -> Value {
    let mut body = create_body(order_id, 100);
    body.as_object_mut().unwrap().remove(field);
    body
}

/// A body of exactly `len` bytes: a valid request whose subject is padded with `x`.
fn padded_body(order_id: &str, len: usize) -> Vec<u8> {
    let mut body = with(order_id, "subject", json!(""));
    let base = body.to_string().len();
    body["subject"] = json!("x".repeat(len - base));
    let bytes = body.to_string().into_bytes();
    assert_eq!(bytes.len(), len);
    bytes
}

/// The bad requests; every order id in them starts with `prefix`.
fn cases(prefix: &str) -> Vec<Case> {
    let mut n = 0;
    let mut oid = || {
        n += 1;
        format!("{prefix}-{n}")
    };
    let json_case = |name: &str, body: Value, code, field| Case {
        name: name.to_owned(),
        content_type: JSON,
        body: body.to_string().into_bytes(),
        status: 400,
        code,
        field,
    };
    let raw_case = |name: &str, content_type, body: Vec<u8>, status, code, field| Case {
        name: name.to_owned(),
        content_type,
        body,
        status,
        code,
        field,
    };
    let raw_amount = |order_id: &str, literal: &str| {
        format!(r#"{{"order_id":"{order_id}","amount_minor":{literal},"currency":"CNY","provider":"sandbox","subject":"s"}}"#)
            .into_bytes()
    };
    let max = shared::api::MAX_BODY_BYTES;

    let mut cases = vec![
        // Not JSON, or not a JSON object.
        raw_case(
            "invalid json",
            JSON,
            format!(r#"{{"order_id":"{}",#"#, oid()).into_bytes(),
            400,
            "invalid_json",
            None,
        ),
        raw_case("empty body", JSON, vec![], 400, "invalid_json", None),
        raw_case(
            "not utf-8",
            JSON,
            vec![b'{', 0xff, 0xfe, b'}'],
            400,
            "invalid_json",
            None,
        ),
        raw_case(
            "trailing garbage",
            JSON,
            format!("{} x", create_body(&oid(), 100)).into_bytes(),
            400,
            "invalid_json",
            None,
        ),
        json_case(
            "array",
            json!([create_body(&oid(), 100)]),
            "invalid_json",
            None,
        ),
        json_case("string", json!(oid()), "invalid_json", None),
        json_case("number", json!(42), "invalid_json", None),
        json_case("null", Value::Null, "invalid_json", None),
        // Missing fields.
        json_case(
            "missing order_id",
            without(&oid(), "order_id"),
            "missing_field",
            Some("order_id"),
        ),
        json_case(
            "missing amount_minor",
            without(&oid(), "amount_minor"),
            "missing_field",
            Some("amount_minor"),
        ),
        json_case(
            "missing currency",
            without(&oid(), "currency"),
            "missing_field",
            Some("currency"),
        ),
        json_case(
            "missing provider",
            without(&oid(), "provider"),
            "missing_field",
            Some("provider"),
        ),
        json_case(
            "missing subject",
            without(&oid(), "subject"),
            "missing_field",
            Some("subject"),
        ),
        json_case("empty object", json!({}), "missing_field", Some("order_id")),
        // Unknown fields (checked before anything else).
        json_case(
            "unknown field",
            with(&oid(), "extra", json!(1)),
            "unknown_field",
            Some("extra"),
        ),
        json_case(
            "camelCase field",
            with(&oid(), "amountMinor", json!(100)),
            "unknown_field",
            Some("amountMinor"),
        ),
        json_case(
            "unknown field only",
            json!({ "note": oid() }),
            "unknown_field",
            Some("note"),
        ),
        // Wrong types.
        json_case(
            "order_id number",
            with(&oid(), "order_id", json!(123)),
            "invalid_field",
            Some("order_id"),
        ),
        json_case(
            "order_id null",
            with(&oid(), "order_id", Value::Null),
            "invalid_field",
            Some("order_id"),
        ),
        json_case(
            "amount_minor bool",
            with(&oid(), "amount_minor", json!(true)),
            "invalid_field",
            Some("amount_minor"),
        ),
        json_case(
            "amount_minor null",
            with(&oid(), "amount_minor", Value::Null),
            "invalid_field",
            Some("amount_minor"),
        ),
        json_case(
            "amount_minor string",
            with(&oid(), "amount_minor", json!("10")),
            "invalid_field",
            Some("amount_minor"),
        ),
        json_case(
            "currency number",
            with(&oid(), "currency", json!(156)),
            "invalid_field",
            Some("currency"),
        ),
        json_case(
            "provider array",
            with(&oid(), "provider", json!(["sandbox"])),
            "invalid_field",
            Some("provider"),
        ),
        json_case(
            "subject object",
            with(&oid(), "subject", json!({})),
            "invalid_field",
            Some("subject"),
        ),
        // Amounts.
        json_case(
            "amount 0",
            with(&oid(), "amount_minor", json!(0)),
            "invalid_field",
            Some("amount_minor"),
        ),
        json_case(
            "amount -1",
            with(&oid(), "amount_minor", json!(-1)),
            "invalid_field",
            Some("amount_minor"),
        ),
        json_case(
            "amount 1.5",
            with(&oid(), "amount_minor", json!(1.5)),
            "invalid_field",
            Some("amount_minor"),
        ),
        json_case(
            "amount 10^12+1",
            with(&oid(), "amount_minor", json!(1_000_000_000_001_i64)),
            "invalid_field",
            Some("amount_minor"),
        ),
        json_case(
            "amount i64::MAX",
            with(&oid(), "amount_minor", json!(i64::MAX)),
            "invalid_field",
            Some("amount_minor"),
        ),
        raw_case(
            "amount 1e2",
            JSON,
            raw_amount(&oid(), "1e2"),
            400,
            "invalid_field",
            Some("amount_minor"),
        ),
        raw_case(
            "amount 100.0",
            JSON,
            raw_amount(&oid(), "100.0"),
            400,
            "invalid_field",
            Some("amount_minor"),
        ),
        raw_case(
            "amount -0",
            JSON,
            raw_amount(&oid(), "-0"),
            400,
            "invalid_field",
            Some("amount_minor"),
        ),
        raw_case(
            "amount 2^64",
            JSON,
            raw_amount(&oid(), "18446744073709551616"),
            400,
            "invalid_field",
            Some("amount_minor"),
        ),
        // Currencies.
        json_case(
            "currency cny",
            with(&oid(), "currency", json!("cny")),
            "invalid_field",
            Some("currency"),
        ),
        json_case(
            "currency USD",
            with(&oid(), "currency", json!("USD")),
            "invalid_field",
            Some("currency"),
        ),
        json_case(
            "currency empty",
            with(&oid(), "currency", json!("")),
            "invalid_field",
            Some("currency"),
        ),
        json_case(
            "currency padded",
            with(&oid(), "currency", json!(" CNY")),
            "invalid_field",
            Some("currency"),
        ),
        // Order ids (the prefix keeps them findable by the "writes nothing" scan).
        json_case(
            "order_id empty",
            create_body("", 100),
            "invalid_field",
            Some("order_id"),
        ),
        json_case(
            "order_id 65 chars",
            create_body(&format!("{prefix}-{}", "x".repeat(64 - prefix.len())), 100),
            "invalid_field",
            Some("order_id"),
        ),
        json_case(
            "order_id space",
            create_body(&format!("{} b", oid()), 100),
            "invalid_field",
            Some("order_id"),
        ),
        json_case(
            "order_id slash",
            create_body(&format!("{}/b", oid()), 100),
            "invalid_field",
            Some("order_id"),
        ),
        json_case(
            "order_id non-ascii",
            create_body(&format!("{}é", oid()), 100),
            "invalid_field",
            Some("order_id"),
        ),
        json_case(
            "order_id only é",
            create_body("é", 100),
            "invalid_field",
            Some("order_id"),
        ),
        // Providers.
        json_case(
            "provider paypal",
            with(&oid(), "provider", json!("paypal")),
            "invalid_field",
            Some("provider"),
        ),
        json_case(
            "provider Alipay",
            with(&oid(), "provider", json!("Alipay")),
            "invalid_field",
            Some("provider"),
        ),
        json_case(
            "provider empty",
            with(&oid(), "provider", json!("")),
            "invalid_field",
            Some("provider"),
        ),
        // Subjects.
        json_case(
            "subject empty",
            with(&oid(), "subject", json!("")),
            "invalid_field",
            Some("subject"),
        ),
        json_case(
            "subject 129 chars",
            with(&oid(), "subject", json!("é".repeat(129))),
            "invalid_field",
            Some("subject"),
        ),
        json_case(
            "subject control char",
            with(&oid(), "subject", json!("a\nb")),
            "invalid_field",
            Some("subject"),
        ),
        // Expiry.
        json_case(
            "expires_in_s 59",
            with(&oid(), "expires_in_s", json!(59)),
            "invalid_field",
            Some("expires_in_s"),
        ),
        json_case(
            "expires_in_s 86401",
            with(&oid(), "expires_in_s", json!(86_401)),
            "invalid_field",
            Some("expires_in_s"),
        ),
        json_case(
            "expires_in_s 0",
            with(&oid(), "expires_in_s", json!(0)),
            "invalid_field",
            Some("expires_in_s"),
        ),
        json_case(
            "expires_in_s -900",
            with(&oid(), "expires_in_s", json!(-900)),
            "invalid_field",
            Some("expires_in_s"),
        ),
        json_case(
            "expires_in_s 900.5",
            with(&oid(), "expires_in_s", json!(900.5)),
            "invalid_field",
            Some("expires_in_s"),
        ),
        json_case(
            "expires_in_s string",
            with(&oid(), "expires_in_s", json!("900")),
            "invalid_field",
            Some("expires_in_s"),
        ),
        json_case(
            "expires_in_s null",
            with(&oid(), "expires_in_s", Value::Null),
            "invalid_field",
            Some("expires_in_s"),
        ),
        // Size: the limit is checked before anything else; at exactly the limit the body is parsed.
        raw_case(
            "body at the limit",
            JSON,
            padded_body(&oid(), max),
            400,
            "invalid_field",
            Some("subject"),
        ),
        raw_case(
            "body over the limit",
            JSON,
            padded_body(&oid(), max + 1),
            413,
            "payload_too_large",
            None,
        ),
        raw_case(
            "body far over the limit",
            JSON,
            padded_body(&oid(), 1024 * 1024),
            413,
            "payload_too_large",
            None,
        ),
    ];
    // Media type: a valid body under the wrong (or no) content type.
    for content_type in [
        Some("text/plain"),
        None,
        Some("application/jsonx"),
        Some("application/x-www-form-urlencoded"),
        Some(""),
    ] {
        let name = format!("content type {content_type:?}");
        let body = create_body(&oid(), 100).to_string().into_bytes();
        cases.push(raw_case(
            &name,
            content_type,
            body,
            415,
            "unsupported_media_type",
            None,
        ));
    }
    cases
}

#[tokio::test]
async fn bad_create_requests_are_refused_and_write_nothing() {
    let prefix = unique("bad");
    let cases = cases(&prefix);
    for case in &cases {
        let reply = post_raw("/payments", case.content_type, case.body.clone()).await;
        assert!(
            reply.status < 500,
            "{}: a 5xx for bad input: {}",
            case.name,
            reply.text
        );
        check(&case.name, &reply, case.status, case.code, case.field);
    }
    let (payments, records) = written(&prefix).await;
    assert!(
        payments.is_empty(),
        "bad requests wrote payments: {payments:?}"
    );
    assert!(
        records.is_empty(),
        "bad requests wrote idempotency records: {records:?}"
    );
    // The empty order id would have been written under exactly this key.
    let client = dynamo(None).await;
    let order = client
        .get_item()
        .table_name(&stack().payments_table)
        .key("pk", AttributeValue::S("ORDER#".into()))
        .key("sk", AttributeValue::S("ORDER".into()))
        .send()
        .await
        .expect("get item");
    assert!(order.item.is_none(), "an empty order id was written");
}

/// The edges of every range are accepted, and the same scan that finds nothing above finds these.
#[tokio::test]
async fn boundary_values_are_accepted_and_written() {
    let prefix = unique("edge");
    let longest = format!("{prefix}{}", "_".repeat(64 - prefix.len()));
    let check_created = |case: &str, reply: &Reply, order_id: &str, amount: i64| {
        assert_eq!(reply.status, 201, "{case}: {}", reply.text);
        assert_eq!(reply.body["order_id"], order_id, "{case}");
        assert_eq!(reply.body["amount_minor"], amount, "{case}");
        assert_eq!(reply.body["status"], "pending", "{case}");
    };
    let cases: Vec<(&str, Value, i64)> = vec![
        (
            "amount 10^12, shortest expiry",
            with(&format!("{prefix}-max"), "expires_in_s", json!(60)),
            1_000_000_000_000,
        ),
        (
            "amount 1, longest expiry",
            with(&format!("{prefix}-min"), "expires_in_s", json!(86_400)),
            1,
        ),
        (
            "order id of 64 chars, 128-char subject",
            with(&longest, "subject", json!("é".repeat(128))),
            100,
        ),
    ];
    for (case, mut body, amount) in cases {
        body["amount_minor"] = json!(amount);
        let order_id = body["order_id"].as_str().unwrap().to_owned();
        check_created(case, &create(&body).await, &order_id, amount);
    }
    // The charset parameter and letter case of the media type do not matter.
    let order_id = format!("{prefix}-ct");
    let body = create_body(&order_id, 7).to_string().into_bytes();
    let reply = post_raw("/payments", Some("Application/JSON; charset=utf-8"), body).await;
    check_created("content type with charset", &reply, &order_id, 7);

    let (payments, records) = written(&prefix).await;
    let orders = payments
        .iter()
        .filter(|i| matches!(i.get("sk"), Some(AttributeValue::S(sk)) if sk == "ORDER"))
        .count();
    assert_eq!(orders, 4, "{payments:?}");
    assert_eq!(records.len(), 4, "{records:?}");
}

#[tokio::test]
async fn invalid_payment_ids_are_refused_on_get() {
    let cases = [
        "not-a-valid-id!",
        "abc-1",
        &"A".repeat(33),
        "a%20b",
        "%C3%A9",
        "01ARZ3NDEKTSV4RRFFQ69G5FA_",
    ];
    for id in cases {
        let reply = get_payment(id).await;
        check(
            &format!("GET /payments/{id}"),
            &reply,
            400,
            "invalid_field",
            Some("payment_id"),
        );
    }
    // At the edge of validity the id is looked up, not refused.
    let reply = get_payment(&"A".repeat(32)).await;
    check("32-char id", &reply, 404, "not_found", None);
}
