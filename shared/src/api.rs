//! The JSON shapes the HTTP edge speaks: `{"error":{"code","message","field"?}}` for every
//! refusal. Plain `http` types only; the Lambda event types stay in `functions/*`.

use serde::Serialize;
use serde_json::json;

/// A refusal with a stable machine-readable code. Every 4xx and 5xx leaves through here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_s: None,
        }
    }

    pub fn field(status: u16, code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(status, code, message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    pub fn body(&self) -> String {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        json!({ "error": error }).to_string()
    }

    pub fn into_response(self) -> http::Response<String> {
        let mut builder = http::Response::builder()
            .status(self.status)
            .header("content-type", "application/json");
        if let Some(seconds) = self.retry_after_s {
            builder = builder.header("retry-after", seconds.to_string());
        }
        let body = self.body();
        builder
            .body(body)
            .unwrap_or_else(|_| http::Response::new(String::new()))
    }
}

/// A JSON response with a status.
pub fn json_response(status: u16, body: String) -> http::Response<String> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_else(|_| http::Response::new(String::new()))
}

/// Serializes a value for a response body.
pub fn to_body<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

/// The largest request body we read (API Gateway allows more; we have no use for it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Checks size and media type before any parsing.
pub fn check_json_body(content_type: Option<&str>, body: &[u8]) -> Result<(), ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            413,
            "payload_too_large",
            format!("body exceeds {MAX_BODY_BYTES} bytes"),
        ));
    }
    let media_type = content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim);
    if !media_type.is_some_and(|mt| mt.eq_ignore_ascii_case("application/json")) {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            "content-type must be application/json",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_shape() {
        let e = ApiError::field(400, "invalid_field", "amount_minor", "must be an integer");
        let v: serde_json::Value = serde_json::from_str(&e.body()).expect("json");
        assert_eq!(v["error"]["code"], "invalid_field");
        assert_eq!(v["error"]["field"], "amount_minor");
        assert_eq!(v["error"]["message"], "must be an integer");
    }

    #[test]
    fn media_type_and_size() {
        assert!(check_json_body(Some("application/json; charset=utf-8"), b"{}").is_ok());
        assert_eq!(
            check_json_body(Some("text/plain"), b"{}").map_err(|e| e.status),
            Err(415)
        );
        assert_eq!(check_json_body(None, b"{}").map_err(|e| e.status), Err(415));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            check_json_body(Some("application/json"), &big).map_err(|e| e.status),
            Err(413)
        );
    }
}
