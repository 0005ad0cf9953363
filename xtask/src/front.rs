//! An HTTP front on 127.0.0.1 that behaves like API Gateway HTTP API (payload v2): it matches the
//! template's routes, builds the v2 event, invokes the function through the emulator, and turns the
//! function's answer back into HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// API Gateway's integration timeout (HTTP APIs: 30 s at most). The emulator ends an invocation
/// at its function's timeout; this bounds the wait for an instance on top of it.
const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct FrontRoute {
    pub method: String,
    pub path: String,
    pub route_key: String,
    pub binary: String,
    pub timeout_s: u64,
}

struct Front {
    routes: Vec<FrontRoute>,
    invoke_url: String,
    http: reqwest::Client,
}

/// Matches `/payments/{payment_id}` against `/payments/abc`, returning the path parameters.
fn match_path(pattern: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let actual: Vec<&str> = path.trim_matches('/').split('/').collect();
    if pattern.len() != actual.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (p, a) in pattern.iter().zip(&actual) {
        match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if !a.is_empty() => {
                params.insert(name.to_owned(), (*a).to_owned());
            }
            Some(_) => return None,
            None if p == a => {}
            None => return None,
        }
    }
    Some(params)
}

fn gateway_error(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(json!({ "message": message }).to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

fn event(
    route: &FrontRoute,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    params: BTreeMap<String, String>,
    body: &Bytes,
) -> Value {
    let mut header_map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        header_map.insert(name.as_str().to_owned(), Value::String(values.join(",")));
    }
    let (body_value, is_base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (STANDARD.encode(body), true),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut event = json!({
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": uri.path(),
        "rawQueryString": uri.query().unwrap_or(""),
        "headers": header_map,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": ulid::Ulid::new().to_string(),
            "routeKey": route.route_key,
            "stage": "$default",
            "time": "",
            "timeEpoch": now_ms as u64,
        },
        "isBase64Encoded": is_base64,
    });
    if !body.is_empty() {
        event["body"] = Value::String(body_value);
    }
    if !params.is_empty() {
        event["pathParameters"] = json!(params);
    }
    if let Some(query) = uri.query() {
        let pairs: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        event["queryStringParameters"] = json!(pairs);
    }
    event
}

fn into_response(answer: &Value) -> Response<Body> {
    let status = answer
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    let Some(status) = status.and_then(|s| StatusCode::from_u16(s).ok()) else {
        return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let body = answer.get("body").and_then(Value::as_str).unwrap_or("");
    let body = if answer
        .get("isBase64Encoded")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        STANDARD.decode(body).unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in answer
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::try_from(name.as_str()),
            value.as_str().map(HeaderValue::from_str),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn handle(State(front): State<Arc<Front>>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 10 * 1024 * 1024).await else {
        return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let matched = front.routes.iter().find_map(|r| {
        (r.method == parts.method.as_str())
            .then(|| match_path(&r.path, parts.uri.path()).map(|p| (r, p)))
            .flatten()
    });
    let Some((route, params)) = matched else {
        return gateway_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let event = event(
        route,
        &parts.method,
        &parts.uri,
        &parts.headers,
        params,
        &body,
    );
    let url = format!(
        "{}/2015-03-31/functions/{}/invocations",
        front.invoke_url, route.binary
    );
    let result = front
        .http
        .post(url)
        .json(&event)
        .timeout(INTEGRATION_TIMEOUT)
        .send()
        .await;
    match result {
        // A function error (the emulator ends a timed-out one as one) is API Gateway's 500.
        Ok(answer) if answer.headers().contains_key("x-amz-function-error") => {
            gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
        Ok(answer) if answer.status().is_success() => match answer.json::<Value>().await {
            Ok(value) => into_response(&value),
            Err(_) => gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        },
        Ok(_) => gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        Err(e) if e.is_timeout() => {
            gateway_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        }
        Err(_) => gateway_error(StatusCode::BAD_GATEWAY, "Bad Gateway"),
    }
}

/// Serves the routes on `listener` until the returned task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    routes: Vec<FrontRoute>,
    invoke_url: String,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let front = Arc::new(Front {
        routes,
        invoke_url,
        http: reqwest::Client::builder().build()?,
    });
    let app = axum::Router::new().fallback(handle).with_state(front);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "API front stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::match_path;

    #[test]
    fn path_matching() {
        assert!(match_path("/payments", "/payments").is_some());
        let p = match_path("/payments/{payment_id}", "/payments/ABC").expect("match");
        assert_eq!(p["payment_id"], "ABC");
        assert!(match_path("/payments/{payment_id}", "/payments/").is_none());
        assert!(match_path("/payments/{payment_id}", "/payments/a/b").is_none());
        assert!(match_path("/callbacks/{provider}", "/payments/x").is_none());
    }
}
