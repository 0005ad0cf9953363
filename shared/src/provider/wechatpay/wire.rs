//! The wire format, as pure functions: requests to sign and send, and what answers and
//! notifications mean. No I/O here, so every rule is unit-tested without a network.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::{format_description, offset};

use super::WechatPayConfig;
use super::keys::{self, ApiV3Key};
use crate::crypto::RsaVerifier;
use crate::domain::{AmountMinor, Currency, PaymentId, Timestamp};
use crate::ports::{
    CallbackAnswer, CallbackRejection, CallbackReply, Notification, NotifiedStatus, ProviderCreate,
    ProviderCreated, ProviderError, ProviderTrade,
};

/// The Authorization scheme of API v3 with an RSA merchant key.
pub(super) const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// Error codes that mean "not now" rather than "no": the outcome is unknown.
const UNKNOWN_OUTCOME_CODES: [&str; 3] = ["SYSTEM_ERROR", "FREQUENCY_LIMITED", "BANK_ERROR"];

/// Longest notification id we store; WeChat Pay's are UUIDs (36 characters).
const NOTIFY_ID_MAX: usize = 128;

/// WeChat Pay's limit on a refund reason, in characters.
const REFUND_REASON_MAX_CHARS: usize = 80;

/// One API call before signing. `url` is what gets signed: path plus query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiRequest {
    pub method: http::Method,
    pub url: String,
    pub body: String,
}

/// `METHOD\nURL\ntimestamp\nnonce\nbody\n`: what the merchant key signs (body empty for GET).
pub(super) fn request_message(request: &ApiRequest, timestamp_s: i64, nonce: &str) -> String {
    format!(
        "{}\n{}\n{timestamp_s}\n{nonce}\n{}\n",
        request.method, request.url, request.body
    )
}

/// The Authorization header, fields in the order the official Go SDK writes them.
pub(super) fn authorization(
    config: &WechatPayConfig,
    request: &ApiRequest,
    timestamp_s: i64,
    nonce: &str,
) -> String {
    let message = request_message(request, timestamp_s, nonce);
    let signature = config.merchant_key.sign_base64(message.as_bytes());
    format!(
        "{AUTH_SCHEME} mchid=\"{}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp_s}\",serial_no=\"{}\",signature=\"{signature}\"",
        config.mchid, config.merchant_serial_no
    )
}

fn local_rejection(code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        code: code.to_owned(),
        message: message.into(),
    }
}

fn unknown(err: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unknown(err.to_string())
}

#[derive(Serialize)]
struct CreateBody<'a> {
    appid: &'a str,
    mchid: &'a str,
    description: &'a str,
    out_trade_no: &'a str,
    time_expire: String,
    notify_url: &'a str,
    amount: OrderAmount<'a>,
}

#[derive(Serialize)]
struct OrderAmount<'a> {
    total: i64,
    currency: &'a str,
}

/// `time_expire` wants RFC 3339 in Beijing time, e.g. `2021-06-24T16:37:26+08:00`.
pub(super) fn beijing_rfc3339(at: Timestamp) -> Option<String> {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+08:00");
    OffsetDateTime::from_unix_timestamp(at.unix_s())
        .ok()?
        .to_offset(offset!(+8))
        .format(&format)
        .ok()
}

/// `POST /v3/pay/transactions/native`. A request we cannot even build was never sent, so it is
/// a rejection, not an unknown.
pub(super) fn create_request(
    config: &WechatPayConfig,
    request: &ProviderCreate,
) -> Result<ApiRequest, ProviderError> {
    let time_expire = beijing_rfc3339(request.expires_at)
        .ok_or_else(|| local_rejection("INVALID_EXPIRY", "expiry out of range"))?;
    let body = serde_json::to_string(&CreateBody {
        appid: &config.appid,
        mchid: &config.mchid,
        description: &request.subject,
        out_trade_no: request.payment_id.as_str(),
        time_expire,
        notify_url: &config.notify_url,
        amount: OrderAmount {
            total: request.money.amount.get(),
            currency: request.money.currency.code(),
        },
    })
    .map_err(|e| local_rejection("ENCODE_FAILED", e.to_string()))?;
    Ok(ApiRequest {
        method: http::Method::POST,
        url: "/v3/pay/transactions/native".to_owned(),
        body,
    })
}

/// `GET /v3/pay/transactions/out-trade-no/{id}?mchid=..`. Both ids are alphanumeric (checked at
/// construction), so nothing needs escaping.
pub(super) fn query_request(config: &WechatPayConfig, payment_id: &PaymentId) -> ApiRequest {
    ApiRequest {
        method: http::Method::GET,
        url: format!(
            "/v3/pay/transactions/out-trade-no/{payment_id}?mchid={}",
            config.mchid
        ),
        body: String::new(),
    }
}

/// `POST /v3/pay/transactions/out-trade-no/{id}/close` with `{"mchid": ..}`.
pub(super) fn close_request(config: &WechatPayConfig, payment_id: &PaymentId) -> ApiRequest {
    ApiRequest {
        method: http::Method::POST,
        url: format!("/v3/pay/transactions/out-trade-no/{payment_id}/close"),
        body: serde_json::json!({ "mchid": config.mchid }).to_string(),
    }
}

/// A refund to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RefundOrder<'a> {
    pub payment_id: &'a PaymentId,
    pub refund_id: &'a str,
    pub refund: AmountMinor,
    pub total: AmountMinor,
    pub reason: Option<&'a str>,
    /// Where WeChat Pay sends the refund's `REFUND.*` notifications: our `/callbacks/wechatpay`
    /// route, the payment notifications' own (without it, the URL configured at the merchant
    /// platform would be used, which we do not control from here).
    pub notify_url: &'a str,
}

#[derive(Serialize)]
struct RefundBody<'a> {
    out_trade_no: &'a str,
    out_refund_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    notify_url: &'a str,
    amount: RefundAmount<'a>,
}

#[derive(Serialize)]
struct RefundAmount<'a> {
    refund: i64,
    total: i64,
    currency: &'a str,
}

/// `out_refund_no`: 1 to 64 of `[0-9A-Za-z_-|*@]`.
fn is_refund_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b))
}

/// `POST /v3/refund/domestic/refunds`.
pub(super) fn refund_request(order: &RefundOrder<'_>) -> Result<ApiRequest, ProviderError> {
    if !is_refund_id(order.refund_id) {
        return Err(local_rejection(
            "INVALID_REFUND_ID",
            "refund id must be 1 to 64 of [0-9A-Za-z_-|*@]",
        ));
    }
    if order.refund > order.total {
        return Err(local_rejection(
            "INVALID_REFUND_AMOUNT",
            "refund exceeds the order total",
        ));
    }
    // The reason is shown to the payer; a long one is shortened rather than refused.
    let reason = order
        .reason
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(REFUND_REASON_MAX_CHARS).collect());
    let body = serde_json::to_string(&RefundBody {
        out_trade_no: order.payment_id.as_str(),
        out_refund_no: order.refund_id,
        reason,
        notify_url: order.notify_url,
        amount: RefundAmount {
            refund: order.refund.get(),
            total: order.total.get(),
            currency: Currency::Cny.code(),
        },
    })
    .map_err(|e| local_rejection("ENCODE_FAILED", e.to_string()))?;
    Ok(ApiRequest {
        method: http::Method::POST,
        url: "/v3/refund/domestic/refunds".to_owned(),
        body,
    })
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`. The one character of `out_refund_no` that
/// a URL path cannot carry, `|`, is escaped here, so the URL signed is the URL sent.
pub(super) fn refund_query_request(refund_id: &str) -> Result<ApiRequest, ProviderError> {
    if !is_refund_id(refund_id) {
        return Err(local_rejection(
            "INVALID_REFUND_ID",
            "refund id must be 1 to 64 of [0-9A-Za-z_-|*@]",
        ));
    }
    Ok(ApiRequest {
        method: http::Method::GET,
        url: format!(
            "/v3/refund/domestic/refunds/{}",
            refund_id.replace('|', "%7C")
        ),
        body: String::new(),
    })
}

/// An answer we have decided to believe. `authentic` is false only for unsigned 4xx answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub authentic: bool,
}

/// Decides whether an answer can be believed at all. 5xx and 429 say nothing about the outcome.
/// A signed answer must verify. WeChat Pay signs only answers to requests it authenticated, so
/// an unsigned 4xx (e.g. our own SIGN_ERROR) is taken at its word; an unsigned 2xx is not.
pub(super) fn authenticate(
    keys: &[(String, RsaVerifier)],
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<Answer, ProviderError> {
    if status >= 500 || status == 429 {
        return Err(ProviderError::Unknown(format!(
            "WeChat Pay answered {status}"
        )));
    }
    let authentic = keys::is_signed(headers);
    if authentic {
        keys::verify_platform_signature(keys, headers, body, now)
            .map_err(|e| ProviderError::Unknown(format!("unverifiable answer ({status}): {e}")))?;
    } else if !(400..500).contains(&status) {
        return Err(ProviderError::Unknown(format!(
            "unsigned answer ({status})"
        )));
    }
    Ok(Answer {
        status,
        body: body.to_vec(),
        authentic,
    })
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

/// A non-success answer: a 4xx `{code, message}` is a rejection unless its code means "retry".
pub(super) fn error_answer(answer: &Answer) -> ProviderError {
    let Ok(error) = serde_json::from_slice::<ErrorBody>(&answer.body) else {
        return ProviderError::Unknown(format!(
            "answer {} without a WeChat Pay error body",
            answer.status
        ));
    };
    let is_4xx = (400..500).contains(&answer.status);
    if !is_4xx || UNKNOWN_OUTCOME_CODES.contains(&error.code.as_str()) {
        return ProviderError::Unknown(format!(
            "{} ({}): {}",
            error.code, answer.status, error.message
        ));
    }
    ProviderError::Rejected {
        code: error.code,
        message: error.message,
    }
}

#[derive(Deserialize)]
struct CreateAnswer {
    code_url: String,
}

/// 200 with `code_url`, or an error. ORDERPAID is not a "no": the order exists and is paid, and
/// a rejection here would fail a paid payment, so the outcome is left to a query.
pub(super) fn interpret_create(answer: &Answer) -> Result<ProviderCreated, ProviderError> {
    if answer.status == 200 {
        let created: CreateAnswer = serde_json::from_slice(&answer.body).map_err(unknown)?;
        if created.code_url.is_empty() {
            return Err(unknown("create answered an empty code_url"));
        }
        return Ok(ProviderCreated {
            pay_url: created.code_url,
            provider_trade_no: None,
        });
    }
    match error_answer(answer) {
        ProviderError::Rejected { code, message } if code == "ORDERPAID" => {
            Err(ProviderError::Unknown(format!("{code}: {message}")))
        }
        other => Err(other),
    }
}

/// 204 (or 200) means closed.
pub(super) fn interpret_close(answer: &Answer) -> Result<(), ProviderError> {
    if matches!(answer.status, 200 | 204) {
        return Ok(());
    }
    Err(error_answer(answer))
}

/// The transaction, as both the query answer and the decrypted notification carry it.
#[derive(Deserialize)]
struct TradeBody {
    mchid: String,
    appid: String,
    out_trade_no: String,
    #[serde(default)]
    transaction_id: Option<String>,
    trade_state: String,
    amount: TradeAmount,
}

#[derive(Deserialize)]
struct TradeAmount {
    total: i64,
    /// Absent on some unpaid orders; domestic merchants trade only in CNY.
    #[serde(default)]
    currency: Option<String>,
}

/// Maps `trade_state`. REFUND means it was paid: refunds are tracked separately.
pub(super) fn trade_status(state: &str) -> Option<NotifiedStatus> {
    match state {
        "SUCCESS" | "REFUND" => Some(NotifiedStatus::Paid),
        "NOTPAY" | "USERPAYING" => Some(NotifiedStatus::Pending),
        "CLOSED" | "REVOKED" | "PAYERROR" => Some(NotifiedStatus::Closed),
        _ => None,
    }
}

enum TradeError {
    WrongMerchant(String),
    Malformed(String),
}

/// Checks the merchant and app, then parses ids, status and the integer amount in fen.
fn parse_trade(
    config: &WechatPayConfig,
    bytes: &[u8],
) -> Result<(PaymentId, ProviderTrade), TradeError> {
    let trade: TradeBody =
        serde_json::from_slice(bytes).map_err(|e| TradeError::Malformed(format!("trade: {e}")))?;
    if trade.mchid != config.mchid || trade.appid != config.appid {
        return Err(TradeError::WrongMerchant(format!(
            "mchid {:?} appid {:?}",
            trade.mchid, trade.appid
        )));
    }
    let malformed = |what: &str| TradeError::Malformed(what.to_owned());
    let payment_id =
        PaymentId::parse(&trade.out_trade_no).map_err(|_| malformed("out_trade_no"))?;
    let status = trade_status(&trade.trade_state).ok_or_else(|| {
        TradeError::Malformed(format!("unknown trade_state {:?}", trade.trade_state))
    })?;
    let amount_minor = AmountMinor::new(trade.amount.total)
        .map_err(|_| malformed("amount.total out of range"))?
        .get();
    let currency = match trade.amount.currency.as_deref() {
        None => Currency::Cny,
        Some(code) => Currency::parse(code).map_err(|_| malformed("amount.currency"))?,
    };
    let trade_no = trade.transaction_id.filter(|id| !id.is_empty());
    Ok((
        payment_id,
        ProviderTrade {
            status,
            provider_trade_no: trade_no,
            amount_minor,
            currency,
        },
    ))
}

/// 200 with the transaction, or `None` on a signed 404 ORDER_NOT_EXIST. "No such order" decides
/// a payment's fate, so an unsigned one is not believed.
pub(super) fn interpret_query(
    config: &WechatPayConfig,
    payment_id: &PaymentId,
    answer: &Answer,
) -> Result<Option<ProviderTrade>, ProviderError> {
    if answer.status == 404 {
        let not_exist = serde_json::from_slice::<ErrorBody>(&answer.body)
            .is_ok_and(|e| e.code == "ORDER_NOT_EXIST");
        if not_exist && answer.authentic {
            return Ok(None);
        }
        if not_exist {
            return Err(unknown("unsigned ORDER_NOT_EXIST"));
        }
    }
    if answer.status != 200 {
        return Err(error_answer(answer));
    }
    let (answered_id, trade) = parse_trade(config, &answer.body).map_err(|e| match e {
        TradeError::WrongMerchant(m) => unknown(format!("query answered for {m}")),
        TradeError::Malformed(m) => unknown(m),
    })?;
    if &answered_id != payment_id {
        return Err(unknown(format!(
            "query for {payment_id} answered for {answered_id}"
        )));
    }
    Ok(Some(trade))
}

/// WeChat Pay's own refund states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    Success,
    Processing,
    Closed,
    /// The refund could not reach the payer's account; it needs handling at the merchant
    /// platform.
    Abnormal,
}

/// WeChat Pay's answer to a refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundResult {
    /// WeChat Pay's refund id.
    pub provider_refund_id: String,
    pub status: RefundStatus,
}

#[derive(Deserialize)]
struct RefundAnswer {
    refund_id: String,
    out_refund_no: String,
    status: String,
}

pub(super) fn interpret_refund(
    refund_id: &str,
    answer: &Answer,
) -> Result<RefundResult, ProviderError> {
    if answer.status != 200 {
        return Err(error_answer(answer));
    }
    parse_refund(refund_id, &answer.body)
}

/// 200 with the refund, or `None` on a signed 404 RESOURCE_NOT_EXISTS: WeChat Pay has no refund
/// by that number. As for the order query, an unsigned "no such refund" is not believed.
pub(super) fn interpret_refund_query(
    refund_id: &str,
    answer: &Answer,
) -> Result<Option<RefundResult>, ProviderError> {
    if answer.status == 404 {
        let not_exist = serde_json::from_slice::<ErrorBody>(&answer.body)
            .is_ok_and(|e| e.code == "RESOURCE_NOT_EXISTS");
        if not_exist && answer.authentic {
            return Ok(None);
        }
        if not_exist {
            return Err(unknown("unsigned RESOURCE_NOT_EXISTS"));
        }
    }
    if answer.status != 200 {
        return Err(error_answer(answer));
    }
    parse_refund(refund_id, &answer.body).map(Some)
}

/// The refund object that the refund and its query both answer.
fn parse_refund(refund_id: &str, body: &[u8]) -> Result<RefundResult, ProviderError> {
    let refund: RefundAnswer = serde_json::from_slice(body).map_err(unknown)?;
    if refund.out_refund_no != refund_id {
        return Err(unknown(format!(
            "refund {refund_id} answered for {}",
            refund.out_refund_no
        )));
    }
    let status = match refund.status.as_str() {
        "SUCCESS" => RefundStatus::Success,
        "PROCESSING" => RefundStatus::Processing,
        "CLOSED" => RefundStatus::Closed,
        "ABNORMAL" => RefundStatus::Abnormal,
        other => return Err(unknown(format!("unknown refund status {other:?}"))),
    };
    Ok(RefundResult {
        provider_refund_id: refund.refund_id,
        status,
    })
}

#[derive(Deserialize)]
struct NotifyEnvelope {
    id: String,
    event_type: String,
    resource: NotifyResource,
}

#[derive(Deserialize)]
struct NotifyResource {
    algorithm: String,
    ciphertext: String,
    nonce: String,
    #[serde(default)]
    associated_data: String,
}

/// What a notification's `event_type` says it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    /// `TRANSACTION.SUCCESS` and the like: the resource is the transaction.
    Transaction,
    /// `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`: the resource is the refund.
    Refund,
}

fn event_kind(event_type: &str) -> Option<EventKind> {
    if event_type.starts_with("TRANSACTION.") {
        Some(EventKind::Transaction)
    } else if event_type.starts_with("REFUND.") {
        Some(EventKind::Refund)
    } else {
        None
    }
}

/// An envelope whose signature has been checked, opened: its id, its event type and what kind
/// of event that is, and the decrypted resource.
struct Opened {
    id: String,
    event_type: String,
    kind: EventKind,
    plaintext: Vec<u8>,
}

/// Opens a notification whose signature has been checked: the envelope, its event type, then
/// the AES-GCM resource (which authenticates the resource under the APIv3 key).
fn open_envelope(key: &ApiV3Key, body: &[u8]) -> Result<Opened, CallbackRejection> {
    let envelope: NotifyEnvelope = serde_json::from_slice(body)
        .map_err(|e| CallbackRejection::Malformed(format!("body: {e}")))?;
    if envelope.id.is_empty() || envelope.id.len() > NOTIFY_ID_MAX {
        return Err(CallbackRejection::Malformed("notification id".into()));
    }
    let kind = event_kind(&envelope.event_type).ok_or_else(|| {
        CallbackRejection::Malformed(format!("unsupported event_type {:?}", envelope.event_type))
    })?;
    let resource = &envelope.resource;
    if resource.algorithm != "AEAD_AES_256_GCM" {
        return Err(CallbackRejection::Malformed(format!(
            "unsupported resource algorithm {:?}",
            resource.algorithm
        )));
    }
    let plaintext = key.open(
        &resource.nonce,
        &resource.associated_data,
        &resource.ciphertext,
    )?;
    Ok(Opened {
        id: envelope.id,
        event_type: envelope.event_type,
        kind,
        plaintext,
    })
}

/// A verified notification, in WeChat Pay's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    Transaction(Notification),
    Refund(RefundEvent),
}

/// Parses a notification whose signature has been checked: opens the resource, then reads the
/// transaction or the refund inside it, as its (now authentic) `event_type` says.
pub(super) fn parse_notification(
    config: &WechatPayConfig,
    key: &ApiV3Key,
    body: &[u8],
) -> Result<Event, CallbackRejection> {
    let opened = open_envelope(key, body)?;
    match opened.kind {
        EventKind::Transaction => parse_transaction(config, opened).map(Event::Transaction),
        EventKind::Refund => parse_refund_event(config, opened).map(Event::Refund),
    }
}

/// The transaction of an opened `TRANSACTION.*` notification.
fn parse_transaction(
    config: &WechatPayConfig,
    opened: Opened,
) -> Result<Notification, CallbackRejection> {
    let (payment_id, trade) = parse_trade(config, &opened.plaintext).map_err(|e| match e {
        TradeError::WrongMerchant(m) => CallbackRejection::WrongMerchant(m),
        TradeError::Malformed(m) => CallbackRejection::Malformed(m),
    })?;
    Ok(Notification {
        notify_id: opened.id,
        payment_id,
        provider_trade_no: trade.provider_trade_no,
        status: trade.status,
        amount_minor: trade.amount_minor,
        currency: trade.currency,
    })
}

/// The decrypted resource of a refund notification (fields we do not use are ignored).
#[derive(Deserialize)]
struct RefundResource {
    mchid: String,
    out_trade_no: String,
    out_refund_no: String,
    refund_status: String,
    amount: RefundResourceAmount,
}

#[derive(Deserialize)]
struct RefundResourceAmount {
    /// What this refund gives back, in fen.
    refund: i64,
}

/// A verified refund notification, in WeChat Pay's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RefundEvent {
    pub notify_id: String,
    pub payment_id: PaymentId,
    pub refund_id: String,
    pub status: RefundStatus,
    pub amount_minor: i64,
}

/// The refund of an opened `REFUND.*` notification: checks the merchant, and reads the refund.
/// `event_type` must say what `refund_status` says (`REFUND.SUCCESS` and `SUCCESS`, and so on):
/// a notification that contradicts itself is malformed.
fn parse_refund_event(
    config: &WechatPayConfig,
    opened: Opened,
) -> Result<RefundEvent, CallbackRejection> {
    let malformed = |what: String| CallbackRejection::Malformed(what);
    let refund: RefundResource = serde_json::from_slice(&opened.plaintext)
        .map_err(|e| malformed(format!("refund resource: {e}")))?;
    if refund.mchid != config.mchid {
        return Err(CallbackRejection::WrongMerchant(format!(
            "mchid {:?}",
            refund.mchid
        )));
    }
    let payment_id = PaymentId::parse(&refund.out_trade_no)
        .map_err(|e| malformed(format!("out_trade_no: {e}")))?;
    if !is_refund_id(&refund.out_refund_no) {
        return Err(malformed("out_refund_no".into()));
    }
    let status = match refund.refund_status.as_str() {
        "SUCCESS" => RefundStatus::Success,
        "CLOSED" => RefundStatus::Closed,
        "ABNORMAL" => RefundStatus::Abnormal,
        other => return Err(malformed(format!("unknown refund_status {other:?}"))),
    };
    if opened.event_type != format!("REFUND.{}", refund.refund_status) {
        return Err(malformed(format!(
            "event_type {} but refund_status {}",
            opened.event_type, refund.refund_status
        )));
    }
    let amount_minor = AmountMinor::new(refund.amount.refund)
        .map_err(|_| malformed("amount.refund out of range".into()))?
        .get();
    Ok(RefundEvent {
        notify_id: opened.id,
        payment_id,
        refund_id: refund.out_refund_no,
        status,
        amount_minor,
    })
}

/// WeChat Pay wants 200/204 with no body for success, and `{"code":"FAIL","message":..}` with a
/// 4xx/5xx status otherwise (it resends on both).
pub(super) fn reply(answer: CallbackAnswer, detail: &str) -> CallbackReply {
    let fail = || serde_json::json!({ "code": "FAIL", "message": detail }).to_string();
    let (status, body) = match answer {
        CallbackAnswer::Success => (204, String::new()),
        CallbackAnswer::RetryLater => (500, fail()),
        CallbackAnswer::Rejected => (400, fail()),
    };
    CallbackReply {
        status,
        content_type: "application/json",
        body,
    }
}
