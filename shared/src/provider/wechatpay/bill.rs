//! The trade bill: its download address (`GET /v3/bill/tradebill`), then the file.
//! [`WechatPayProvider::download_trade_bill`] does both: a GET of `download_url` signed like
//! every v3 request (its path and query are what the merchant key signs), whose body WeChat Pay
//! does not sign; the body's SHA-1 must equal the answer's `hash_value` (the answer is signed, so
//! the hash is what makes the file authentic) before [`super::parse_statement`] reads it as UTF-8.
//! No `tar_type` is asked for, so the file is plain CSV, bounded by [`TRADE_BILL_BYTES_MAX`].

use aws_lc_rs::digest;
use serde::Deserialize;

use super::wire::{self, Answer, ApiRequest};
use super::{StatementError, StatementLine, WechatPayProvider, fresh_nonce, parse_statement};
use crate::ports::ProviderError;

/// The most we download of a trade bill. A day of one merchant's trades is well below this;
/// more is a broken or hostile answer, refused before it can exhaust memory.
pub const TRADE_BILL_BYTES_MAX: usize = 256 << 20;

/// Error answers to the download are JSON `{code, message}`; more than this is not one.
const ERROR_ANSWER_BYTES_MAX: usize = 1 << 20;

/// Why [`WechatPayProvider::download_trade_bill`] has no bill to give.
#[derive(Debug, thiserror::Error)]
pub enum DownloadTradeBillError {
    /// The address query or the download failed. `Rejected` means asking again now will not
    /// help (`NO_STATEMENT_EXIST`: the bill is not ready yet; a malformed date); `Unknown` is a
    /// network failure, a 5xx, or an answer that does not verify: ask again later.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("trade bill larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    /// The file is not the one the signed answer described: refused before parsing.
    #[error("trade bill SHA-1 is {actual}, the answer's hash_value is {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("trade bill is not UTF-8: {0}")]
    Encoding(String),
    #[error(transparent)]
    Parse(#[from] StatementError),
}

fn local_rejection(code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// `YYYY-MM-DD`, digits only, so it needs no escaping in the signed URL.
fn is_bill_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// `GET /v3/bill/tradebill?bill_date=YYYY-MM-DD&bill_type=ALL`. A malformed date is never sent.
pub(super) fn trade_bill_request(bill_date: &str) -> Result<ApiRequest, ProviderError> {
    if !is_bill_date(bill_date) {
        return Err(local_rejection(
            "INVALID_BILL_DATE",
            format!("bill date {bill_date:?} is not YYYY-MM-DD"),
        ));
    }
    Ok(ApiRequest {
        method: http::Method::GET,
        url: format!("/v3/bill/tradebill?bill_date={bill_date}&bill_type=ALL"),
        body: String::new(),
    })
}

#[derive(Deserialize)]
struct TradeBillAnswer {
    download_url: String,
    hash_value: String,
    #[serde(default)]
    hash_type: String,
}

/// 200 with `download_url` and `hash_value`; anything else is the usual error answer.
pub(super) fn interpret_trade_bill(answer: &Answer) -> Result<(String, String), ProviderError> {
    if answer.status != 200 {
        return Err(wire::error_answer(answer));
    }
    let bill: TradeBillAnswer = serde_json::from_slice(&answer.body)
        .map_err(|e| ProviderError::Unknown(format!("trade bill answer: {e}")))?;
    if bill.download_url.is_empty() || bill.hash_value.is_empty() {
        return Err(ProviderError::Unknown(
            "trade bill answer without download_url or hash_value".into(),
        ));
    }
    if !bill.hash_type.is_empty() && bill.hash_type != "SHA1" {
        return Err(ProviderError::Unknown(format!(
            "trade bill hash_type {:?}, expected SHA1",
            bill.hash_type
        )));
    }
    Ok((bill.download_url, bill.hash_value))
}

/// The signed GET of `download_url`: what the merchant key signs is its path and query as the
/// URL parser leaves them, which is what goes on the wire.
fn download_request(download_url: &str) -> Result<(reqwest::Url, ApiRequest), ProviderError> {
    let url = reqwest::Url::parse(download_url)
        .map_err(|e| ProviderError::Unknown(format!("download_url {download_url:?}: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(ProviderError::Unknown(format!(
            "download_url {download_url:?} is not an http(s) URL"
        )));
    }
    let signed = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let request = ApiRequest {
        method: http::Method::GET,
        url: signed,
        body: String::new(),
    };
    Ok((url, request))
}

/// Lower-case hex SHA-1, the form WeChat Pay's `hash_value` takes.
fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, bytes))
}

/// The downloaded file to bill lines: the hash first, so nothing unauthenticated is parsed.
fn trade_bill_from_body(
    body: &[u8],
    hash_value: &str,
) -> Result<Vec<StatementLine>, DownloadTradeBillError> {
    let actual = sha1_hex(body);
    if !actual.eq_ignore_ascii_case(hash_value.trim()) {
        return Err(DownloadTradeBillError::HashMismatch {
            expected: hash_value.to_owned(),
            actual,
        });
    }
    let text =
        std::str::from_utf8(body).map_err(|e| DownloadTradeBillError::Encoding(e.to_string()))?;
    Ok(parse_statement(text)?)
}

/// Reads the body, refusing it as soon as it is known to exceed `limit_bytes`: by its declared
/// length up front, else by what has arrived.
async fn read_bounded(
    mut response: reqwest::Response,
    limit_bytes: usize,
) -> Result<Vec<u8>, DownloadTradeBillError> {
    let too_large = || DownloadTradeBillError::TooLarge { limit_bytes };
    let declared = response.content_length().unwrap_or(0);
    if usize::try_from(declared).map_or(true, |n| n > limit_bytes) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unknown)? {
        if chunk.len() > limit_bytes - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn unknown(err: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unknown(err.to_string())
}

impl WechatPayProvider {
    /// The day's trade bill (all trades, Beijing date `YYYY-MM-DD`): its `download_url` and
    /// the SHA-1 `hash_value` of the file. The bill of a day is ready from 10:00 the next day;
    /// before that WeChat Pay rejects with a 4xx (e.g. `NO_STATEMENT_EXIST`).
    pub async fn trade_bill_url(&self, bill_date: &str) -> Result<(String, String), ProviderError> {
        let answer = self.call(&trade_bill_request(bill_date)?).await?;
        interpret_trade_bill(&answer)
    }

    /// The day's trade bill (all trades, Beijing date `YYYY-MM-DD`), parsed:
    /// [`Self::trade_bill_url`], the signed download, the SHA-1 check, then
    /// [`super::parse_statement`].
    pub async fn download_trade_bill(
        &self,
        bill_date: &str,
    ) -> Result<Vec<StatementLine>, DownloadTradeBillError> {
        self.fetch_trade_bill(bill_date, TRADE_BILL_BYTES_MAX).await
    }

    /// [`Self::download_trade_bill`] with the size limit as a parameter, so tests can reach it.
    async fn fetch_trade_bill(
        &self,
        bill_date: &str,
        limit_bytes: usize,
    ) -> Result<Vec<StatementLine>, DownloadTradeBillError> {
        let (download_url, hash_value) = self.trade_bill_url(bill_date).await?;
        let body = self.download(&download_url, limit_bytes).await?;
        trade_bill_from_body(&body, &hash_value)
    }

    /// A signed GET of `download_url`. A 200 body is the file, unsigned (the hash vouches for
    /// it); any other answer is judged like every API answer: 5xx is unknown, a signed answer
    /// must verify, a 4xx error is a rejection.
    async fn download(
        &self,
        download_url: &str,
        limit_bytes: usize,
    ) -> Result<Vec<u8>, DownloadTradeBillError> {
        let (url, request) = download_request(download_url)?;
        let authorization = wire::authorization(
            &self.config,
            &request,
            self.clock.now().unix_s(),
            &fresh_nonce(),
        );
        let response = self
            .http
            .get(url)
            .header(http::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(unknown)?;
        let status = response.status().as_u16();
        if status == 200 {
            return read_bounded(response, limit_bytes).await;
        }
        let headers = response.headers().clone();
        let body = read_bounded(response, ERROR_ANSWER_BYTES_MAX)
            .await
            .map_err(|_| {
                unknown(format!(
                    "download answered {status} with an unreadable body"
                ))
            })?;
        let answer = wire::authenticate(
            &self.config.platform_keys,
            status,
            &headers,
            &body,
            self.clock.now(),
        )?;
        Err(wire::error_answer(&answer).into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::provider::test_http::{self, serve};
    use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;

    use super::super::{StatementKind, WechatPayConfig};
    use super::*;
    use crate::clock::ManualClock;
    use crate::crypto::{RsaSigner, RsaVerifier};
    use crate::domain::Timestamp;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
            authentic: true,
        }
    }

    #[test]
    fn trade_bill_request_is_a_get_of_the_signed_url() {
        let request = trade_bill_request("2019-06-11").expect("request");
        assert_eq!(request.method, http::Method::GET);
        assert_eq!(
            request.url,
            "/v3/bill/tradebill?bill_date=2019-06-11&bill_type=ALL"
        );
        assert!(request.body.is_empty());
        for bad in ["2019-6-11", "20190611", "2019-06-11&x=1", "", "2019/06/11"] {
            assert!(
                matches!(trade_bill_request(bad), Err(ProviderError::Rejected { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn trade_bill_answer_gives_url_and_hash() {
        let body = r#"{"download_url":"https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5","hash_type":"SHA1","hash_value":"79bb0f45fc4c42234a918000b2668d689e2bde04"}"#;
        assert_eq!(
            interpret_trade_bill(&answer(200, body)).expect("bill"),
            (
                "https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5".to_owned(),
                "79bb0f45fc4c42234a918000b2668d689e2bde04".to_owned()
            )
        );
        assert!(matches!(
            interpret_trade_bill(&answer(200, r#"{"download_url":"","hash_value":"x"}"#)),
            Err(ProviderError::Unknown(_))
        ));
        assert!(matches!(
            interpret_trade_bill(&answer(
                200,
                r#"{"download_url":"u","hash_type":"MD5","hash_value":"x"}"#
            )),
            Err(ProviderError::Unknown(_))
        ));
        let missing = r#"{"code":"NO_STATEMENT_EXIST","message":"bill not ready"}"#;
        assert!(matches!(
            interpret_trade_bill(&answer(400, missing)),
            Err(ProviderError::Rejected { code, .. }) if code == "NO_STATEMENT_EXIST"
        ));
        let busy = r#"{"code":"SYSTEM_ERROR","message":"retry"}"#;
        assert!(matches!(
            interpret_trade_bill(&answer(500, busy)),
            Err(ProviderError::Unknown(_))
        ));
    }

    // ---- the download ----

    const NOW_S: i64 = 1_560_300_000;
    const PUB_KEY_ID: &str = "PUB_KEY_ID_0100000000000000000000000000";
    const BILL: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n`2019-06-11 00:00:07,`wxd678efh567hg6787,`1900000109,`0,`,`4200000000002019061100000001,`01J0000000000000000000PAY1,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`10.10,`0.00,`0,`0,`0.00,`0.00,`,`,`咖啡,`,`0.06060,`0.60%,`10.10,`0.00,`\r\n总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n`1,`10.10,`0.00,`0.00,`0.06060,`10.10,`0.00\r\n";

    fn paid_line() -> StatementLine {
        StatementLine {
            // 2019-06-11 00:00:07 +08:00
            traded_at: Timestamp::from_unix_s(1_560_182_407),
            mchid: "1900000109".into(),
            provider_trade_no: "4200000000002019061100000001".into(),
            out_trade_no: "01J0000000000000000000PAY1".into(),
            kind: StatementKind::Paid,
            currency: crate::domain::Currency::Cny,
            amount_minor: 1010,
            refund: None,
        }
    }

    #[test]
    fn sha1_is_lower_case_hex() {
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn the_hash_is_checked_before_parsing() {
        let hash = sha1_hex(BILL.as_bytes());
        let lines = trade_bill_from_body(BILL.as_bytes(), &hash).expect("bill");
        assert_eq!(lines, vec![paid_line()]);
        assert!(
            trade_bill_from_body(BILL.as_bytes(), &hash.to_ascii_uppercase()).is_ok(),
            "hex case does not matter"
        );
        let tampered = BILL.replace("`10.10,`0.00,`0,", "`10.11,`0.00,`0,");
        let err = trade_bill_from_body(tampered.as_bytes(), &hash).expect_err("tampered");
        assert!(
            matches!(&err, DownloadTradeBillError::HashMismatch { expected, actual } if *expected == hash && *actual == sha1_hex(tampered.as_bytes())),
            "{err}"
        );
        // Unparseable and unhashed: the hash speaks first.
        assert!(matches!(
            trade_bill_from_body(b"garbage", &hash),
            Err(DownloadTradeBillError::HashMismatch { .. })
        ));
        assert!(matches!(
            trade_bill_from_body(b"garbage", ""),
            Err(DownloadTradeBillError::HashMismatch { .. })
        ));
        let not_utf8 = b"\xff\xfe";
        assert!(matches!(
            trade_bill_from_body(not_utf8, &sha1_hex(not_utf8)),
            Err(DownloadTradeBillError::Encoding(_))
        ));
        let cut = &BILL[..BILL.find("总交易单数").expect("summary")];
        assert!(matches!(
            trade_bill_from_body(cut.as_bytes(), &sha1_hex(cut.as_bytes())),
            Err(DownloadTradeBillError::Parse(_))
        ));
    }

    #[test]
    fn the_download_request_signs_path_and_query() {
        let url = "https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaUtBzp4QtiozLO";
        let (parsed, request) = download_request(url).expect("request");
        assert_eq!(parsed.as_str(), url);
        assert_eq!(request.method, http::Method::GET);
        assert_eq!(
            request.url,
            "/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaUtBzp4QtiozLO"
        );
        assert!(request.body.is_empty());
        let (_, bare) = download_request("http://127.0.0.1:9/file").expect("no query");
        assert_eq!(bare.url, "/file");
        for bad in [
            "ftp://example.com/bill",
            "/v3/billdownload/file",
            "not a url",
            "",
        ] {
            assert!(
                matches!(download_request(bad), Err(ProviderError::Unknown(_))),
                "{bad:?}"
            );
        }
    }

    /// One RSA key playing merchant and platform (the local server checks in the test itself).
    struct Local {
        provider: WechatPayProvider,
        key: RsaSigner,
        verifier: RsaVerifier,
        listener: tokio::net::TcpListener,
        base: String,
    }

    async fn local() -> Local {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
        let private: Pkcs8V1Der<'_> = key.as_der().expect("pkcs8");
        let public: PublicKeyX509Der<'_> = key.public_key().as_der().expect("spki");
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref()));
        let verifier = || RsaVerifier::from_der(public.as_ref()).expect("verifier");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let config = WechatPayConfig {
            base_url: base.clone(),
            mchid: "1900000109".into(),
            appid: "wxd678efh567hg6787".into(),
            merchant_serial_no: "3775B6A45ACD588826D15E583A95F5DD2C0B5C8F".into(),
            merchant_key: RsaSigner::from_pem(&pem).expect("signer"),
            platform_keys: vec![(PUB_KEY_ID.into(), verifier())],
            api_v3_key: b"0123456789abcdefghijklmnopqrstuv".to_vec(),
            notify_url: "https://pay.example.com/callbacks/wechatpay".into(),
            timeout: Duration::from_secs(5),
        };
        let clock = Arc::new(ManualClock::at(Timestamp::from_unix_s(NOW_S)));
        Local {
            provider: WechatPayProvider::new(config, clock).expect("provider"),
            key: RsaSigner::from_pem(&pem).expect("signer"),
            verifier: verifier(),
            listener,
            base,
        }
    }

    impl Local {
        /// A JSON answer signed as the platform, at the clock's now.
        fn signed(&self, status: u16, body: &str) -> Vec<u8> {
            let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
            let signature = self
                .key
                .sign_base64(format!("{NOW_S}\n{nonce}\n{body}\n").as_bytes());
            let timestamp = NOW_S.to_string();
            let headers = [
                ("Content-Type", "application/json"),
                ("Wechatpay-Timestamp", timestamp.as_str()),
                ("Wechatpay-Nonce", nonce),
                ("Wechatpay-Serial", PUB_KEY_ID),
                ("Wechatpay-Signature", signature.as_str()),
            ];
            test_http::answer(status, &headers, body.as_bytes(), Some(body.len()))
        }

        fn bill_answer(&self, hash_value: &str) -> Vec<u8> {
            let body = format!(
                r#"{{"download_url":"{}/v3/billdownload/file?token=T1","hash_type":"SHA1","hash_value":"{hash_value}"}}"#,
                self.base
            );
            self.signed(200, &body)
        }
    }

    /// The unsigned file, as WeChat Pay sends it.
    fn file_answer(body: &[u8], declare_length: bool) -> Vec<u8> {
        let headers = [("Content-Type", "application/octet-stream")];
        test_http::answer(200, &headers, body, declare_length.then_some(body.len()))
    }

    /// The Authorization header of a request head: its five fields.
    fn authorization(head: &str) -> Vec<(String, String)> {
        let line = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .expect("an Authorization header");
        let fields = line
            .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
            .expect("scheme");
        fields
            .split(',')
            .map(|f| {
                let (k, v) = f.split_once('=').expect("k=v");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect()
    }

    #[tokio::test]
    async fn the_bill_is_downloaded_signed_hash_checked_and_parsed() {
        let local = local().await;
        let answers = vec![
            local.bill_answer(&sha1_hex(BILL.as_bytes()).to_ascii_uppercase()),
            file_answer(BILL.as_bytes(), true),
        ];
        let server = serve(local.listener, answers);
        let lines = local
            .provider
            .download_trade_bill("2019-06-11")
            .await
            .expect("bill");
        assert_eq!(lines, vec![paid_line()]);
        let heads = test_http::heads(server).await;
        assert!(heads[0].starts_with("GET /v3/bill/tradebill?bill_date=2019-06-11&bill_type=ALL "));
        assert!(
            heads[1].starts_with("GET /v3/billdownload/file?token=T1 "),
            "{}",
            heads[1]
        );
        let auth = authorization(&heads[1]);
        let field = |name: &str| {
            auth.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .expect(name)
        };
        assert_eq!(field("mchid"), "1900000109");
        assert_eq!(field("timestamp"), NOW_S.to_string());
        let message = format!(
            "GET\n/v3/billdownload/file?token=T1\n{NOW_S}\n{}\n\n",
            field("nonce_str")
        );
        assert!(
            local
                .verifier
                .verify_base64(message.as_bytes(), &field("signature")),
            "the download is signed over its path and query"
        );
    }

    #[tokio::test]
    async fn download_failures_are_told_apart() {
        let local = local().await;
        let hash = sha1_hex(BILL.as_bytes());
        let limit = BILL.len() - 1;
        let not_ready = r#"{"code":"NO_STATEMENT_EXIST","message":"bill not ready"}"#;
        let expired = r#"{"code":"INVALID_REQUEST","message":"token expired"}"#;
        let answers = vec![
            local.bill_answer(&sha1_hex(b"another file")),
            file_answer(BILL.as_bytes(), true),
            local.bill_answer(&hash),
            file_answer(BILL.as_bytes(), true),
            local.bill_answer(&hash),
            file_answer(BILL.as_bytes(), false),
            local.bill_answer(&hash),
            test_http::answer(502, &[], b"bad gateway", Some(11)),
            local.bill_answer(&hash),
            local.signed(400, expired),
            local.signed(400, not_ready),
        ];
        let server = serve(local.listener, answers);
        let provider = &local.provider;
        assert!(matches!(
            provider.download_trade_bill("2019-06-11").await,
            Err(DownloadTradeBillError::HashMismatch { .. })
        ));
        for declared in [true, false] {
            let err = provider
                .fetch_trade_bill("2019-06-11", limit)
                .await
                .expect_err("too large");
            assert!(
                matches!(err, DownloadTradeBillError::TooLarge { limit_bytes } if limit_bytes == limit),
                "declared length {declared}: {err}"
            );
        }
        assert!(matches!(
            provider.download_trade_bill("2019-06-11").await,
            Err(DownloadTradeBillError::Provider(ProviderError::Unknown(_)))
        ));
        assert!(matches!(
            provider.download_trade_bill("2019-06-11").await,
            Err(DownloadTradeBillError::Provider(ProviderError::Rejected { code, .. })) if code == "INVALID_REQUEST"
        ));
        assert!(matches!(
            provider.download_trade_bill("2019-06-11").await,
            Err(DownloadTradeBillError::Provider(ProviderError::Rejected { code, .. })) if code == "NO_STATEMENT_EXIST"
        ));
        assert!(matches!(
            provider.download_trade_bill("20190611").await,
            Err(DownloadTradeBillError::Provider(
                ProviderError::Rejected { .. }
            ))
        ));
        assert_eq!(server.await.expect("server").len(), 11);
    }
}
