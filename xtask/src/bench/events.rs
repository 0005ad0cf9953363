//! The API Gateway HTTP API (payload v2) events the bench serves, one kind per template route,
//! each chosen so the function answers without calling the provider.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use xtask::template::Route;

/// One request, served `invocations` times to the same process.
pub struct BenchRequest {
    /// What the table says was served.
    pub label: String,
    /// The HTTP status the function must answer.
    pub expected_status: u64,
    method: String,
    path: String,
    route_key: String,
    headers: BTreeMap<String, String>,
    path_parameters: BTreeMap<String, String>,
    body: Option<String>,
}

impl BenchRequest {
    /// The event of invocation `n`.
    pub fn event(&self, n: usize) -> Value {
        let mut event = json!({
            "version": "2.0",
            "routeKey": self.route_key,
            "rawPath": self.path,
            "rawQueryString": "",
            "headers": self.headers,
            "requestContext": {
                "accountId": "000000000000",
                "apiId": "bench",
                "domainName": "bench.execute-api.us-east-1.amazonaws.com",
                "domainPrefix": "bench",
                "http": {
                    "method": self.method,
                    "path": self.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": "xtask-bench",
                },
                "requestId": format!("bench-{n}"),
                "routeKey": self.route_key,
                "stage": "$default",
                "time": "",
                "timeEpoch": 0,
            },
            "isBase64Encoded": false,
        });
        if let Some(body) = &self.body {
            event["body"] = Value::String(body.clone());
        }
        if !self.path_parameters.is_empty() {
            event["pathParameters"] = json!(self.path_parameters);
        }
        event
    }
}

/// What the callback request needs: the sandbox's private key, to sign as the sandbox would.
pub struct Signing<'a> {
    pub provider_private_pem: &'a str,
    pub merchant_id: &'a str,
}

fn request(route: &Route, path: &str, label: &str, expected_status: u64) -> BenchRequest {
    BenchRequest {
        label: label.to_owned(),
        expected_status,
        method: route.method.clone(),
        path: path.to_owned(),
        route_key: route.route_key.clone(),
        headers: BTreeMap::from([
            ("host".to_owned(), "bench.local".to_owned()),
            ("user-agent".to_owned(), "xtask-bench".to_owned()),
        ]),
        path_parameters: BTreeMap::new(),
        body: None,
    }
}

/// The request served to the function behind `route`; `None` for a route the bench does not know.
pub fn for_route(route: &Route, signing: &Signing<'_>) -> anyhow::Result<Option<BenchRequest>> {
    let request = match route.route_key.as_str() {
        "POST /payments" => create_refused(route),
        "GET /payments/{payment_id}" => get_unknown(route),
        "POST /callbacks/{provider}" => callback_bad_signature(route, signing)?,
        _ => return Ok(None),
    };
    Ok(Some(request))
}

/// A create whose amount is out of range: refused by validation, before any I/O.
fn create_refused(route: &Route) -> BenchRequest {
    let mut r = request(
        route,
        "/payments",
        "POST /payments, amount_minor -1 (refused before any I/O)",
        400,
    );
    r.headers
        .insert("content-type".into(), "application/json".into());
    r.body = Some(
        json!({
            "order_id": "bench-order-1",
            "amount_minor": -1,
            "currency": "CNY",
            "provider": "sandbox",
            "subject": "bench",
        })
        .to_string(),
    );
    r
}

/// A well-formed payment id that does not exist: one DynamoDB Query (the stand-in finds nothing).
fn get_unknown(route: &Route) -> BenchRequest {
    let id = ulid::Ulid::new().to_string();
    let mut r = request(
        route,
        &format!("/payments/{id}"),
        "GET /payments/{unknown valid id} (1 DynamoDB Query, answered empty by the stand-in)",
        404,
    );
    r.path_parameters.insert("payment_id".into(), id);
    r
}

/// A `PAID` notification signed by the sandbox key, whose body was then altered: the signature
/// check fails, so nothing is written.
fn callback_bad_signature(route: &Route, signing: &Signing<'_>) -> anyhow::Result<BenchRequest> {
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let nonce = "benchnonce0000000000000000000001";
    let mut notification = json!({
        "notify_id": "N-bench-1",
        "merchant_id": signing.merchant_id,
        "out_trade_no": ulid::Ulid::new().to_string(),
        "trade_no": "T-bench-1",
        "status": "PAID",
        "amount_minor": 1999,
        "currency": "CNY",
        "paid_at": timestamp,
    });
    let signature = xtask::sandbox::sign_provider_message(
        signing.provider_private_pem,
        timestamp,
        nonce,
        notification.to_string().as_bytes(),
    )?;
    notification["amount_minor"] = json!(1);
    let mut r = request(
        route,
        "/callbacks/sandbox",
        "POST /callbacks/sandbox, altered body: bad signature (refused before any I/O)",
        400,
    );
    r.path_parameters
        .insert("provider".into(), "sandbox".into());
    r.headers.extend([
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-sandbox-timestamp".to_owned(), timestamp.to_string()),
        ("x-sandbox-nonce".to_owned(), nonce.to_owned()),
        ("x-sandbox-signature".to_owned(), signature),
    ]);
    r.body = Some(notification.to_string());
    Ok(r)
}
