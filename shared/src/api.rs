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

/// A 400 `invalid_field` naming `field`.
pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(400, "invalid_field", field, message)
}

/// A request body that is a JSON object of known fields: size, media type, syntax, shape and
/// field names checked, in that order, before any value is looked at.
pub struct JsonBody(serde_json::Map<String, serde_json::Value>);

impl JsonBody {
    pub fn parse(
        content_type: Option<&str>,
        body: &[u8],
        known_fields: &[&str],
    ) -> Result<Self, ApiError> {
        check_json_body(content_type, body)?;
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(400, "invalid_json", format!("body is not valid JSON: {e}"))
        })?;
        let serde_json::Value::Object(object) = value else {
            return Err(ApiError::new(
                400,
                "invalid_json",
                "body must be a JSON object",
            ));
        };
        let mut unknown: Vec<&String> = object
            .keys()
            .filter(|k| !known_fields.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(field) = unknown.first() {
            return Err(ApiError::field(
                400,
                "unknown_field",
                field,
                format!("unknown field {field}"),
            ));
        }
        Ok(Self(object))
    }

    pub fn get(&self, field: &str) -> Option<&serde_json::Value> {
        self.0.get(field)
    }

    pub fn required(&self, field: &str) -> Result<&serde_json::Value, ApiError> {
        self.0.get(field).ok_or_else(|| {
            ApiError::field(400, "missing_field", field, format!("{field} is required"))
        })
    }

    pub fn required_str(&self, field: &str) -> Result<&str, ApiError> {
        self.required(field)?
            .as_str()
            .ok_or_else(|| invalid_field(field, format!("{field} must be a string")))
    }

    /// An amount in minor units: a JSON integer (never `1.0` or `1e2`) in the domain's range.
    pub fn amount_minor(&self, field: &str) -> Result<crate::domain::AmountMinor, ApiError> {
        let value = self.required(field)?;
        value
            .as_i64()
            .filter(|_| value.is_i64() || value.is_u64())
            .ok_or_else(|| {
                invalid_field(
                    field,
                    format!("{field} must be an integer number of minor units"),
                )
            })
            .and_then(|a| {
                crate::domain::AmountMinor::new(a).map_err(|e| invalid_field(field, e.to_string()))
            })
    }

    /// Free text: 1 to `max_chars` characters, not all blank, no control characters.
    pub fn printable(&self, field: &str, max_chars: usize) -> Result<String, ApiError> {
        let text = self.required_str(field)?;
        if text.trim().is_empty()
            || text.chars().count() > max_chars
            || text.chars().any(char::is_control)
        {
            return Err(invalid_field(
                field,
                format!("{field} must be 1 to {max_chars} printable characters"),
            ));
        }
        Ok(text.to_owned())
    }
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
