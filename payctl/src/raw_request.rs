//! A raw HTTP request as received: request line, headers, blank line, body (byte for byte).

use anyhow::{Context as _, bail};

#[derive(Debug)]
pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// Splits at the first empty line, accepting CRLF or bare LF line ends in the head. The body is
/// kept exactly: signatures cover its bytes.
pub fn parse(raw: &[u8]) -> anyhow::Result<RawRequest> {
    let (head, body) = split_head(raw).context("no blank line between headers and body")?;
    let head = std::str::from_utf8(head).context("request head is not UTF-8")?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        bail!("request line {request_line:?} is not `METHOD TARGET HTTP/x`");
    };
    let mut headers = http::HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("header line {line:?} has no colon"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("header name {name:?}"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .with_context(|| format!("header value of {name}"))?;
        headers.append(name, value);
    }
    Ok(RawRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body: body.to_vec(),
    })
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let lf = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let (end, body_start) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&raw[..end], &raw[body_start..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_crlf_and_lf_and_keeps_the_body_exact() {
        for raw in [
            &b"POST /callbacks/sandbox HTTP/1.1\r\nX-A: 1\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n"[..],
            &b"POST /callbacks/sandbox HTTP/1.1\nX-A: 1\nContent-Type: application/json\n\n{\"a\":1}\r\n"[..],
        ] {
            let r = parse(raw).expect("parse");
            assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/callbacks/sandbox"));
            assert_eq!(r.headers["x-a"], "1");
            assert_eq!(r.body, b"{\"a\":1}\r\n");
        }
        assert!(parse(b"POST /x HTTP/1.1\r\nX: 1\r\n").is_err());
        assert!(parse(b"\r\n\r\n").is_err());
        assert!(parse(b"POST /x HTTP/1.1\r\nno colon\r\n\r\n").is_err());
    }
}
