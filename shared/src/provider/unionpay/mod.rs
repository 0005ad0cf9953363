//! UnionPay's online gateway, ACP 5.1.0 with signMethod 01, for merchant-presented QR codes.
//!
//! - Requests are signed form posts (see [`sign`]); `certId` is our signing certificate's
//!   decimal serial. A create is a QR consume (txnType 01/07) whose answer's `qrCode` is the
//!   pay URL; a query (txnType 00) must repeat the consume's `orderId` and `txnTime`, so
//!   `txnTime` is derived from the payment id's ULID time ([`txn_time_for`]) on both sides.
//! - Answers and `backUrl` notifications are verified with the certificate they carry in
//!   `signPubKeyCert`, trusted only through the configured root and intermediate
//!   ([`SignerTrust`]). Answers are raw `k=v&...` text; notifications are URL-encoded forms.
//! - Notifications carry no signed delivery time, so there is no replay window: a replayed
//!   notification repeats a state the payment already has, and transitions are idempotent.
//! - `respCode` 03/04/05 (processing) and anything we cannot authenticate are "unknown";
//!   other failure codes are definite rejections; 34 on a query is "no such trade".
//! - UnionPay cannot close an unpaid QR order: it lapses at `payTimeout`, which we set from the
//!   payment's expiry. Refunds and same-day cancels reference the consume's `queryId`. A refund
//!   through the port is its own transaction: `orderId` = our refund number, `txnTime` = when it
//!   was first asked for ([`refund_txn_time`]), so repeats and queries name it alike.
//! - A refund's result also comes to `backUrl` (txnType 04), naming the refund's `orderId` and
//!   the consume's `origQryId` but not our payment id; so the refund request carries the
//!   payment id in `reqReserved`, which UnionPay echoes unchanged, and the refund notification
//!   is read from there ([`REQ_RESERVED`]).
//! - Settlement files come from the file transfer (txnType 76) on another host, with its own
//!   answer bound; see [`statement`].

mod sign;
pub mod statement;
mod wire;

#[cfg(test)]
mod test_pki;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::crypto::RsaSigner;
use crate::domain::{PaymentId, ProviderName, Timestamp};
use crate::ports::{
    CallbackAnswer, CallbackRejection, CallbackReply, Clock, CloseOutcome, PaymentProvider,
    ProviderCreate, ProviderCreated, ProviderError, ProviderRefund, ProviderTrade, RefundState,
    Verified,
};

pub use sign::{Fields, SignerTrust, TrustError, VerifyError, cert_serial_decimal};
pub use wire::{
    FILE_ANSWER_BYTES_MAX, REQ_RESERVED, ReversalAccepted, china_time, parse_fen, refund_txn_time,
    txn_time_for,
};

/// Consumes, refunds and cancels go here.
pub const BACK_TRANS_PATH: &str = "/gateway/api/backTransReq.do";
/// Status queries go here.
pub const QUERY_TRANS_PATH: &str = "/gateway/api/queryTrans.do";
/// Where the file transfer is when the base URL is not one of UnionPay's gateway hosts (the
/// local sandbox): this path on the base URL.
pub const FILE_TRANSFER_PATH: &str = "/unionpay/file/";

#[derive(Debug)]
pub struct UnionPayConfig {
    /// `https://gateway.95516.com`, or `https://gateway.test.95516.com` for UnionPay's test
    /// environment; paths are appended.
    pub base_url: String,
    /// Our 15-digit merchant number.
    pub mer_id: String,
    /// The private key of our signing certificate (its `Debug` prints nothing).
    pub sign_key: RsaSigner,
    /// `certId`: [`cert_serial_decimal`] of our signing certificate's PEM.
    pub sign_cert_serial_decimal: String,
    /// UnionPay's root and intermediate certificates, which every `signPubKeyCert` must chain to.
    pub root_cert_pem: String,
    pub intermediate_cert_pem: String,
    /// The company in the third `@`-field of a signer CN: "中国银联股份有限公司" in production.
    pub expected_signer_cn: String,
    /// Our `/callbacks/unionpay` route.
    pub back_url: String,
    pub timeout: Duration,
}

pub struct UnionPayProvider {
    config: UnionPayConfig,
    /// The file transfer's URL, posted to as is: another host than the gateway.
    file_url: String,
    trust: SignerTrust,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for UnionPayProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionPayProvider")
            .field("config", &self.config)
            .field("file_url", &self.file_url)
            .finish_non_exhaustive()
    }
}

fn unknown(err: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unknown(err.to_string())
}

/// What a refund without the consume's `queryId` is refused with: nothing names the consume.
pub const NO_ORIG_QUERY_ID: &str = "NO_ORIG_QUERY_ID";
/// respCode of a duplicate transaction (an orderId and txnTime UnionPay has already).
const DUPLICATE: &str = "12";

/// A request we refused to send is definitely not done.
fn not_sent(reason: String) -> ProviderError {
    ProviderError::Rejected {
        code: "INVALID_REQUEST".into(),
        message: reason,
    }
}

/// UnionPay's file transfer host for one of its gateway hosts (`gateway.95516.com` ->
/// `https://filedownload.95516.com/`, `gateway.test.95516.com` ->
/// `https://filedownload.test.95516.com/`); any other base URL (a sandbox, a proxy) gets
/// [`FILE_TRANSFER_PATH`] appended, as the gateway paths are.
pub fn default_file_url(base_url: &str) -> String {
    let unionpay_host = reqwest::Url::parse(base_url).ok().and_then(|url| {
        let host = url.host_str()?;
        let rest = host.strip_prefix("gateway.")?;
        (rest == "95516.com" || rest.ends_with(".95516.com")).then(|| rest.to_owned())
    });
    match unionpay_host {
        Some(rest) => format!("https://filedownload.{rest}/"),
        None => format!("{}{FILE_TRANSFER_PATH}", base_url.trim_end_matches('/')),
    }
}

/// Parses an answer and checks its signature and certificate. Anything unauthenticated says
/// nothing about what UnionPay did.
pub fn authenticated_answer(
    trust: &SignerTrust,
    body: &[u8],
    now: Timestamp,
) -> Result<Fields, ProviderError> {
    let fields = wire::parse_answer(body).map_err(|e| unknown(format!("answer: {e}")))?;
    verified(trust, fields, now)
}

/// [`authenticated_answer`] with another size bound (the file transfer's).
fn authenticated_answer_within(
    trust: &SignerTrust,
    body: &[u8],
    bytes_max: usize,
    now: Timestamp,
) -> Result<Fields, ProviderError> {
    let fields =
        wire::parse_answer_within(body, bytes_max).map_err(|e| unknown(format!("answer: {e}")))?;
    verified(trust, fields, now)
}

/// The parsed answer, once its signature and certificate check out.
fn verified(trust: &SignerTrust, fields: Fields, now: Timestamp) -> Result<Fields, ProviderError> {
    trust
        .verify(&fields, now)
        .map_err(|e| unknown(format!("unverifiable answer: {e}")))?;
    Ok(fields)
}

impl UnionPayProvider {
    pub fn new(config: UnionPayConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.mer_id.is_empty() && config.mer_id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "UnionPay merId must be letters and digits"
        );
        anyhow::ensure!(
            !config.sign_cert_serial_decimal.is_empty()
                && config
                    .sign_cert_serial_decimal
                    .bytes()
                    .all(|b| b.is_ascii_digit()),
            "UnionPay certId must be the decimal serial of the signing certificate"
        );
        let trust = SignerTrust::new(
            &config.root_cert_pem,
            &config.intermediate_cert_pem,
            &config.expected_signer_cn,
        )?;
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self {
            file_url: default_file_url(&config.base_url),
            config,
            trust,
            http,
            clock,
        })
    }

    /// Sets the file transfer's URL (`UNIONPAY_FILE_URL`); `None` keeps [`default_file_url`].
    pub fn with_file_url(mut self, file_url: Option<String>) -> anyhow::Result<Self> {
        if let Some(url) = file_url {
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| anyhow::anyhow!("UnionPay file URL {url:?}: {e}"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https"),
                "UnionPay file URL {url:?} is not http(s)"
            );
            self.file_url = url;
        }
        Ok(self)
    }

    fn merchant(&self) -> wire::Merchant<'_> {
        wire::Merchant {
            mer_id: &self.config.mer_id,
            cert_id: &self.config.sign_cert_serial_decimal,
            back_url: &self.config.back_url,
        }
    }

    /// Signs and posts one request to the gateway, and returns the authenticated answer.
    /// Transport failures, non-200 statuses and unverifiable answers are all "unknown".
    async fn post(&self, path: &str, fields: Fields) -> Result<Fields, ProviderError> {
        let url = format!("{}{path}", self.config.base_url);
        self.send(&url, fields, wire::BODY_BYTES_MAX, None).await
    }

    /// Signs and posts one request to `url`; the answer may be `bytes_max` long, and
    /// `timeout` replaces the client's for this request only.
    async fn send(
        &self,
        url: &str,
        mut fields: Fields,
        bytes_max: usize,
        timeout: Option<Duration>,
    ) -> Result<Fields, ProviderError> {
        sign::sign(&mut fields, &self.config.sign_key);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter())
            .finish();
        let mut request = self
            .http
            .post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .body(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(unknown)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(ProviderError::Unknown(format!(
                "UnionPay answered HTTP {status}"
            )));
        }
        let bytes = read_bounded(response, bytes_max).await?;
        authenticated_answer_within(&self.trust, &bytes, bytes_max, self.clock.now())
    }

    /// Refunds part or all of a paid consume, named by its `queryId`. `refund_id` becomes the
    /// refund's own `orderId` (8 to 40 letters and digits, unique per merchant and day). No
    /// payment id goes in `reqReserved`, so its `backUrl` notification is refused as
    /// malformed; the port's refund is the one whose notifications are read.
    pub async fn refund(
        &self,
        orig_query_id: &str,
        refund_id: &str,
        amount_minor: i64,
    ) -> Result<ReversalAccepted, ProviderError> {
        self.reverse(
            wire::ReversalKind::Refund,
            orig_query_id,
            refund_id,
            amount_minor,
            self.clock.now(),
            None,
        )
        .await
    }

    /// Cancels a consume paid today (UnionPay's 消费撤销), for its full amount.
    pub async fn cancel(
        &self,
        orig_query_id: &str,
        cancel_id: &str,
        amount_minor: i64,
    ) -> Result<ReversalAccepted, ProviderError> {
        self.reverse(
            wire::ReversalKind::Cancel,
            orig_query_id,
            cancel_id,
            amount_minor,
            self.clock.now(),
            None,
        )
        .await
    }

    /// A refund or cancel as the transaction `order_id` at `txn_at` (its `txnTime`), with
    /// `payment_id` in `reqReserved` when given.
    async fn reverse(
        &self,
        kind: wire::ReversalKind,
        orig_query_id: &str,
        order_id: &str,
        amount_minor: i64,
        txn_at: Timestamp,
        payment_id: Option<&PaymentId>,
    ) -> Result<ReversalAccepted, ProviderError> {
        let fields = wire::reversal_fields(
            &self.merchant(),
            kind,
            orig_query_id,
            order_id,
            amount_minor,
            txn_at,
            payment_id,
        )
        .map_err(not_sent)?;
        // reversal_fields always sets txnTime; the caller needs it to query the reversal later.
        let txn_time = fields.get("txnTime").cloned().unwrap_or_default();
        let answer = self.post(BACK_TRANS_PATH, fields).await?;
        wire::reversal_outcome(&answer, &self.config.mer_id, order_id, &txn_time)
    }

    /// UnionPay has no close for an unpaid QR order: it lapses at `payTimeout` (the payment's
    /// expiry). So this never calls out and always answers `Rejected` with code
    /// `CLOSE_UNSUPPORTED`; a paid order is reversed with [`Self::cancel`] or [`Self::refund`].
    pub async fn close(&self, payment_id: &PaymentId) -> Result<(), ProviderError> {
        Err(ProviderError::Rejected {
            code: "CLOSE_UNSUPPORTED".into(),
            message: format!(
                "UnionPay QR orders cannot be closed; {payment_id} lapses at its payTimeout"
            ),
        })
    }
}

/// The body of `response`, refused as soon as it is longer than `bytes_max` (never read whole
/// first): an answer that long cannot be authenticated, so it is "unknown".
async fn read_bounded(
    mut response: reqwest::Response,
    bytes_max: usize,
) -> Result<Vec<u8>, ProviderError> {
    let too_long = || unknown(format!("answer longer than {bytes_max} bytes"));
    let declared = response.content_length().unwrap_or(0);
    if usize::try_from(declared).map_or(true, |declared| declared > bytes_max) {
        return Err(too_long());
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    // Each round appends one chunk; the length check ends the loop after bytes_max bytes.
    while let Some(chunk) = response.chunk().await.map_err(unknown)? {
        if body.len() + chunk.len() > bytes_max {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A `backUrl` notification examined without a provider (which needs our signing key), for
/// operators' tools: the exact content signed (`None` if the form does not parse) and what
/// [`UnionPayProvider::verify_callback`] concludes with this trust and `mer_id` at `now`. What
/// SHA256withRSA signs is the hex SHA-256 of that content ([`crate::crypto::sha256_hex`]).
pub fn examine_notification(
    trust: &SignerTrust,
    mer_id: &str,
    body: &[u8],
    now: Timestamp,
) -> (Option<String>, Result<Verified, CallbackRejection>) {
    let fields = match wire::parse_form(body) {
        Ok(fields) => fields,
        Err(why) => return (None, Err(CallbackRejection::Malformed(why))),
    };
    let outcome = verify_fields(trust, mer_id, &fields, now);
    (Some(sign::signed_content(&fields)), outcome)
}

/// The form's signature first (the `signPubKeyCert` chain, its validity at `now`, the
/// signature), then its content, as its authentic txnType says: a refund's result (04) or a
/// payment notification.
fn verify_fields(
    trust: &SignerTrust,
    mer_id: &str,
    fields: &Fields,
    now: Timestamp,
) -> Result<Verified, CallbackRejection> {
    trust
        .verify(fields, now)
        .map_err(|e| CallbackRejection::BadSignature(e.to_string()))?;
    wire::verified_notification(fields, mer_id)
}

#[async_trait]
impl PaymentProvider for UnionPayProvider {
    fn name(&self) -> ProviderName {
        ProviderName::UnionPay
    }

    /// The payment's `subject` is not sent: the QR consume has no field for it.
    async fn create(&self, request: &ProviderCreate) -> Result<ProviderCreated, ProviderError> {
        let fields = wire::create_fields(
            &self.merchant(),
            &request.payment_id,
            request.money.amount.get(),
            request.money.currency,
            request.expires_at,
        )
        .map_err(not_sent)?;
        let answer = self.post(BACK_TRANS_PATH, fields).await?;
        wire::create_outcome(&answer, &self.config.mer_id, &request.payment_id)
    }

    /// A refund (txnType 04) of the paid consume whose `queryId` is `provider_trade_no`, as the
    /// transaction `orderId` = refund number at `txnTime` = `requested_at`, with the payment id
    /// in `reqReserved` and our `backUrl`. UnionPay takes it asynchronously: accepted is
    /// `Processing` until a query or the refund's `backUrl` notification tells the result. A
    /// duplicate (`12`) of a refund it has under that orderId and txnTime is answered by that
    /// refund.
    async fn refund(&self, refund: &ProviderRefund) -> Result<RefundState, ProviderError> {
        let orig_query_id = refund
            .provider_trade_no
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ProviderError::Rejected {
                code: NO_ORIG_QUERY_ID.into(),
                message: format!(
                    "a UnionPay refund names the paid consume's queryId; payment {} has none",
                    refund.payment_id
                ),
            })?;
        if refund.amount_minor > refund.total_minor {
            return Err(not_sent(format!(
                "refund of {} exceeds the payment's {}",
                refund.amount_minor, refund.total_minor
            )));
        }
        let sent = self
            .reverse(
                wire::ReversalKind::Refund,
                orig_query_id,
                &refund.refund_no,
                refund.amount_minor,
                refund.requested_at,
                Some(&refund.payment_id),
            )
            .await;
        match sent {
            Ok(_) => Ok(RefundState::Processing),
            Err(ProviderError::Rejected { code, message }) if code == DUPLICATE => {
                match self.query_refund(refund).await {
                    Ok(Some(state)) => Ok(state),
                    // "Duplicate" proves UnionPay has it; its query may not show it yet.
                    Ok(None) => Err(unknown(format!(
                        "refund {} is a duplicate ({code}: {message}) its query does not show yet",
                        refund.refund_no
                    ))),
                    Err(e) => Err(unknown(format!(
                        "refund {} is a duplicate and its query failed: {e}",
                        refund.refund_no
                    ))),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The ordinary query (txnType 00) of the refund's own `orderId` and `txnTime`. A refund
    /// number that cannot be an orderId was never sent, but is reported as unknown, never as
    /// "no such refund", as for [`Self::query`].
    async fn query_refund(
        &self,
        refund: &ProviderRefund,
    ) -> Result<Option<RefundState>, ProviderError> {
        let fields =
            wire::refund_query_fields(&self.merchant(), &refund.refund_no, refund.requested_at)
                .map_err(|e| ProviderError::Unknown(format!("unionpay refund query: {e}")))?;
        let answer = self.post(QUERY_TRANS_PATH, fields).await?;
        wire::refund_query_outcome(
            &answer,
            &self.config.mer_id,
            &refund.refund_no,
            refund.amount_minor,
        )
    }

    /// UnionPay has no close for an unpaid QR order: it lapses at the `payTimeout` sent with
    /// the create.
    async fn close(&self, _payment_id: &PaymentId) -> Result<CloseOutcome, ProviderError> {
        Ok(CloseOutcome::LapsesAtExpiry)
    }

    /// A payment id that is not a ULID has no derivable `txnTime`, so it cannot be queried:
    /// that is reported as unknown, never as "no such trade".
    async fn query(&self, payment_id: &PaymentId) -> Result<Option<ProviderTrade>, ProviderError> {
        let fields = wire::query_fields(&self.merchant(), payment_id)
            .map_err(|e| ProviderError::Unknown(format!("unionpay query: {e}")))?;
        let answer = self.post(QUERY_TRANS_PATH, fields).await?;
        wire::query_outcome(&answer, &self.config.mer_id, payment_id)
    }

    /// A refund's result (txnType 04) comes to the refund's `backUrl`, our callback route, as
    /// a form verified exactly as a payment notification; only the verified txnType tells them
    /// apart.
    fn verify_callback(
        &self,
        _headers: &http::HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Verified, CallbackRejection> {
        let fields = wire::parse_form(body).map_err(CallbackRejection::Malformed)?;
        verify_fields(&self.trust, &self.config.mer_id, &fields, now)
    }

    /// UnionPay reads only the status: 200 stops its resends, anything else asks for more.
    fn reply(&self, answer: CallbackAnswer, _detail: &str) -> CallbackReply {
        let (status, body) = match answer {
            CallbackAnswer::Success => (200, "ok"),
            CallbackAnswer::Rejected => (400, "fail"),
            CallbackAnswer::RetryLater => (500, "fail"),
        };
        CallbackReply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
        }
    }
}

#[cfg(test)]
mod examine_tests {
    use super::test_pki::{COMPANY, pki};
    use super::*;

    #[test]
    fn examine_notification_shows_what_was_signed_and_the_verdict() {
        let pki = pki();
        let trust = SignerTrust::new(&pki.root_pem, &pki.intermediate_pem, COMPANY).expect("trust");
        let signer = RsaSigner::from_pem(&pki.signer_key_pem).expect("signer key");
        let mut fields: Fields = [
            ("version", "5.1.0"),
            ("signMethod", "01"),
            ("merId", "777290058110048"),
            ("txnType", "01"),
            ("orderId", "01J0000000000000000000PAY1"),
            ("queryId", "Q1"),
            ("txnAmt", "100"),
            ("currencyCode", "156"),
            ("respCode", "00"),
            ("signPubKeyCert", pki.signer_pem.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let content = sign::signed_content(&fields);
        sign::sign(&mut fields, &signer);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter())
            .finish();
        let now = Timestamp::from_unix_s(test_pki::validity_s(&pki.signer_pem).0 + 60);

        let (shown, outcome) =
            examine_notification(&trust, "777290058110048", body.as_bytes(), now);
        assert_eq!(shown.as_deref(), Some(content.as_str()));
        assert!(
            matches!(&outcome, Ok(Verified::Payment(n)) if n.amount_minor == 100),
            "{outcome:?}"
        );

        let tampered = body.replace("txnAmt=100", "txnAmt=101");
        let (shown, outcome) =
            examine_notification(&trust, "777290058110048", tampered.as_bytes(), now);
        assert_eq!(shown, Some(content.replace("txnAmt=100", "txnAmt=101")));
        assert!(matches!(outcome, Err(CallbackRejection::BadSignature(_))));
        assert_eq!(
            examine_notification(&trust, "777290058110048", b"a=1&a=2", now).0,
            None
        );
    }
}
