//! The messages, as pure functions: parsing answers and notifications, building requests, and
//! reading what an authenticated answer or notification says.

use time::OffsetDateTime;
use time::macros::offset;

use super::sign::Fields;
use crate::domain::money::AMOUNT_MINOR_MAX;
use crate::domain::{Currency, PaymentId, Timestamp};
use crate::ports::{
    CallbackRejection, Notification, NotifiedStatus, ProviderCreated, ProviderError, ProviderTrade,
    RefundNotice, RefundState, Verified,
};

/// Most fields an answer or notification may have; UnionPay's have about 30.
pub const FIELDS_MAX: usize = 128;
/// Larger answers and notifications are refused unread.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// The file transfer's answer carries a whole day's settlement files in `fileContent`, so it
/// alone gets this larger bound; every other answer keeps [`BODY_BYTES_MAX`].
pub const FILE_ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// `currencyCode` of CNY (ISO 4217 numeric).
pub const CNY_CODE: &str = "156";
/// The longest `txnAmt`: 12 digits (ACP's N1..12).
const AMOUNT_DIGITS_MAX: usize = 12;
/// The requester's reserved field: UnionPay echoes it unchanged in the transaction's answers,
/// its `backUrl` notification and its queries. A refund carries our payment id in it.
pub const REQ_RESERVED: &str = "reqReserved";
/// txnType of a refund (退货).
pub const TXN_TYPE_REFUND: &str = "04";

/// Who we are, on every request.
#[derive(Debug, Clone, Copy)]
pub struct Merchant<'a> {
    pub mer_id: &'a str,
    /// Our signing certificate's decimal serial number.
    pub cert_id: &'a str,
    pub back_url: &'a str,
}

/// A field name UnionPay could send: ASCII letters and digits.
fn is_field_name(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn insert_field(fields: &mut Fields, key: &str, value: &str) -> Result<(), String> {
    if !is_field_name(key) {
        return Err(format!("bad field name {key:?}"));
    }
    if fields.len() >= FIELDS_MAX {
        return Err(format!("more than {FIELDS_MAX} fields"));
    }
    // UnionPay's SDK keeps the last of two equal keys; we refuse the ambiguity instead.
    if fields.insert(key.to_owned(), value.to_owned()).is_some() {
        return Err(format!("field {key} appears twice"));
    }
    Ok(())
}

/// Where the `key=value` pair at the start of `text` ends: at the first `&` that is not inside
/// a `{...}` or `[...]` value, as UnionPay's SDK (`parseQString`) splits it.
fn pair_end(text: &str) -> usize {
    let mut in_value = false;
    let mut closing: Option<char> = None;
    for (i, c) in text.char_indices() {
        if let Some(close) = closing {
            if c == close {
                closing = None;
            }
            continue;
        }
        match c {
            '&' => return i,
            '=' => in_value = true,
            '{' if in_value => closing = Some('}'),
            '[' if in_value => closing = Some(']'),
            _ => {}
        }
    }
    text.len()
}

/// A synchronous answer: `k=v&k=v` that is *not* URL-encoded, so values keep their `+`, `/`,
/// `=` and CRLF as signed. Values may nest `&` inside `{...}` or `[...]`.
pub fn parse_answer(body: &[u8]) -> Result<Fields, String> {
    parse_answer_within(body, BODY_BYTES_MAX)
}

/// [`parse_answer`] with another size bound: [`FILE_ANSWER_BYTES_MAX`] for the file transfer.
pub fn parse_answer_within(body: &[u8], bytes_max: usize) -> Result<Fields, String> {
    if body.len() > bytes_max {
        return Err(format!("answer longer than {bytes_max} bytes"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "answer is not UTF-8".to_owned())?;
    let mut fields = Fields::new();
    let mut rest = text;
    // Every round consumes one pair; insert_field stops the loop at FIELDS_MAX pairs.
    loop {
        let end = pair_end(rest);
        let (pair, tail) = rest.split_at(end);
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("pair without '=': {pair:?}"))?;
        insert_field(&mut fields, key, value)?;
        match tail.strip_prefix('&') {
            Some(next) => rest = next,
            None => return Ok(fields),
        }
    }
}

/// A notification to `backUrl`: an ordinary URL-encoded form.
pub fn parse_form(body: &[u8]) -> Result<Fields, String> {
    if body.len() > BODY_BYTES_MAX {
        return Err(format!("body longer than {BODY_BYTES_MAX} bytes"));
    }
    if std::str::from_utf8(body).is_err() {
        return Err("body is not UTF-8".into());
    }
    let mut fields = Fields::new();
    for (key, value) in form_urlencoded::parse(body).take(FIELDS_MAX + 1) {
        insert_field(&mut fields, &key, &value)?;
    }
    Ok(fields)
}

/// `yyyyMMddHHmmss` in China time (UTC+8), which every UnionPay time field uses.
pub fn china_time(at: Timestamp) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp(at.unix_s())
        .ok()?
        .to_offset(offset!(+8));
    if !(1000..=9999).contains(&t.year()) {
        return None;
    }
    Some(format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// The `txnTime` of a payment's consume. A query must repeat the consume's `orderId` and
/// `txnTime`, and the port's `query` gets only the payment id, so both are derived from the
/// id: the ULID's creation millisecond, to the second, in China time. Invariant: create and
/// query both call this, so they always agree; ids that are not ULIDs cannot be used here.
pub fn txn_time_for(payment_id: &PaymentId) -> Result<String, String> {
    let ulid = ulid::Ulid::from_string(payment_id.as_str())
        .map_err(|_| format!("payment id {payment_id} is not a ULID, so it has no txnTime"))?;
    let unix_ms = i64::try_from(ulid.timestamp_ms())
        .map_err(|_| format!("payment id {payment_id} has an out-of-range time"))?;
    china_time(Timestamp::from_unix_ms(unix_ms))
        .ok_or_else(|| format!("payment id {payment_id} has an out-of-range time"))
}

/// `txnAmt`: integer fen as 1 to 12 ASCII digits; no sign, point, exponent or spaces.
pub fn parse_fen(text: &str) -> Option<i64> {
    if text.is_empty()
        || text.len() > AMOUNT_DIGITS_MAX
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    text.parse().ok()
}

fn currency_code(currency: Currency) -> &'static str {
    match currency {
        Currency::Cny => CNY_CODE,
    }
}

fn parse_currency(code: &str) -> Option<Currency> {
    (code == CNY_CODE).then_some(Currency::Cny)
}

/// An `orderId` UnionPay accepts (AN8..40): 8 to 40 ASCII letters and digits.
fn is_order_id(text: &str) -> bool {
    (8..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn fields_of(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The fields every request carries. bizType 000000 and channelType 08 are the QR-code
/// product's (merchant-presented code, mobile channel); accessType 0 is a direct merchant.
pub(super) fn common_fields(merchant: &Merchant<'_>, txn_type: &str, txn_sub_type: &str) -> Fields {
    fields_of(&[
        ("version", super::sign::VERSION),
        ("encoding", "UTF-8"),
        ("signMethod", super::sign::SIGN_METHOD),
        ("certId", merchant.cert_id),
        ("merId", merchant.mer_id),
        ("accessType", "0"),
        ("bizType", "000000"),
        ("txnType", txn_type),
        ("txnSubType", txn_sub_type),
    ])
}

/// The unsigned QR consume (txnType 01, txnSubType 07): UnionPay answers with `qrCode`.
pub fn create_fields(
    merchant: &Merchant<'_>,
    payment_id: &PaymentId,
    amount_minor: i64,
    currency: Currency,
    expires_at: Timestamp,
) -> Result<Fields, String> {
    if !(1..=AMOUNT_MINOR_MAX).contains(&amount_minor) {
        return Err(format!("amount {amount_minor} out of range"));
    }
    if !is_order_id(payment_id.as_str()) {
        return Err(format!("payment id {payment_id} is not a UnionPay orderId"));
    }
    let txn_time = txn_time_for(payment_id)?;
    let pay_timeout =
        china_time(expires_at).ok_or_else(|| format!("expiry {expires_at} out of range"))?;
    let mut fields = common_fields(merchant, "01", "07");
    fields.extend(fields_of(&[
        ("channelType", "08"),
        ("orderId", payment_id.as_str()),
        ("txnTime", &txn_time),
        ("txnAmt", &amount_minor.to_string()),
        ("currencyCode", currency_code(currency)),
        ("backUrl", merchant.back_url),
        ("payTimeout", &pay_timeout),
    ]));
    Ok(fields)
}

/// The unsigned status query (txnType 00) of a payment's consume.
pub fn query_fields(merchant: &Merchant<'_>, payment_id: &PaymentId) -> Result<Fields, String> {
    let txn_time = txn_time_for(payment_id)?;
    Ok(transaction_query_fields(
        merchant,
        payment_id.as_str(),
        &txn_time,
    ))
}

/// The unsigned status query (txnType 00) of any transaction of ours: UnionPay finds it by its
/// `orderId` and `txnTime` together.
fn transaction_query_fields(merchant: &Merchant<'_>, order_id: &str, txn_time: &str) -> Fields {
    let mut fields = common_fields(merchant, "00", "00");
    fields.extend(fields_of(&[("orderId", order_id), ("txnTime", txn_time)]));
    fields
}

/// The `txnTime` of a refund: when it was first asked for, in China time. The refund request
/// and every query of it call this with the same `requested_at`, so they always agree.
pub fn refund_txn_time(requested_at: Timestamp) -> Result<String, String> {
    china_time(requested_at).ok_or_else(|| format!("refund time {requested_at} out of range"))
}

/// The unsigned status query of a refund: its own `orderId` (our refund number) and `txnTime`.
pub fn refund_query_fields(
    merchant: &Merchant<'_>,
    refund_no: &str,
    requested_at: Timestamp,
) -> Result<Fields, String> {
    if !is_order_id(refund_no) {
        return Err(format!(
            "{refund_no:?} is not a UnionPay orderId (8-40 letters/digits)"
        ));
    }
    let txn_time = refund_txn_time(requested_at)?;
    Ok(transaction_query_fields(merchant, refund_no, &txn_time))
}

/// A refund (txnType 04) or a same-day cancel (txnType 31) of a paid consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalKind {
    Refund,
    Cancel,
}

/// The unsigned refund or cancel: its own `orderId` and `txnTime` (`txn_at` in China time),
/// pointing at the consume through `origQryId`, the consume's `queryId`. `payment_id`, when
/// given, goes in `reqReserved`, which UnionPay echoes in the reversal's `backUrl` notification:
/// that notification names the reversal's `orderId` and the consume's `queryId`, never our
/// payment id, and [`refund_notification`] reads the payment from there.
pub fn reversal_fields(
    merchant: &Merchant<'_>,
    kind: ReversalKind,
    orig_query_id: &str,
    order_id: &str,
    amount_minor: i64,
    txn_at: Timestamp,
    payment_id: Option<&PaymentId>,
) -> Result<Fields, String> {
    if !(1..=AMOUNT_MINOR_MAX).contains(&amount_minor) {
        return Err(format!("amount {amount_minor} out of range"));
    }
    if !is_order_id(order_id) {
        return Err(format!(
            "{order_id:?} is not a UnionPay orderId (8-40 letters/digits)"
        ));
    }
    if !is_order_id(orig_query_id) {
        return Err(format!("{orig_query_id:?} is not a UnionPay queryId"));
    }
    let txn_time = china_time(txn_at).ok_or_else(|| format!("time {txn_at} out of range"))?;
    let txn_type = match kind {
        ReversalKind::Refund => TXN_TYPE_REFUND,
        ReversalKind::Cancel => "31",
    };
    let mut fields = common_fields(merchant, txn_type, "00");
    fields.extend(fields_of(&[
        ("channelType", "08"),
        ("orderId", order_id),
        ("txnTime", &txn_time),
        ("txnAmt", &amount_minor.to_string()),
        ("origQryId", orig_query_id),
        ("backUrl", merchant.back_url),
    ]));
    if let Some(payment_id) = payment_id {
        fields.insert(REQ_RESERVED.to_owned(), payment_id.as_str().to_owned());
    }
    Ok(fields)
}

/// What a `respCode` (or `origRespCode`) says about the request (or the original transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespClass {
    /// `00`, and `A6` ("success with a defect": the money moved, as UnionPay's demo treats it).
    Success,
    /// `03`, `04`, `05`: still processing, or the outcome is not known yet.
    Processing,
    /// `34`: no such transaction.
    NotFound,
    Failed,
}

pub fn classify(code: &str) -> RespClass {
    match code {
        "00" | "A6" => RespClass::Success,
        "03" | "04" | "05" => RespClass::Processing,
        "34" => RespClass::NotFound,
        _ => RespClass::Failed,
    }
}

fn unknown(message: impl Into<String>) -> ProviderError {
    ProviderError::Unknown(message.into())
}

pub(super) fn field<'a>(fields: &'a Fields, key: &str) -> Option<&'a str> {
    fields.get(key).map(String::as_str)
}

pub(super) fn rejected(fields: &Fields, code: &str) -> ProviderError {
    ProviderError::Rejected {
        code: code.to_owned(),
        message: field(fields, "respMsg").unwrap_or_default().to_owned(),
    }
}

/// An authenticated answer that names another merchant or order is not ours to interpret.
fn check_echo(fields: &Fields, mer_id: &str, order_id: &str) -> Result<(), ProviderError> {
    for (key, expected) in [("merId", mer_id), ("orderId", order_id)] {
        if field(fields, key).is_some_and(|echoed| echoed != expected) {
            return Err(unknown(format!("answer {key} is not {expected}")));
        }
    }
    Ok(())
}

/// The response code of an answer, split into what the request did.
pub(super) fn resp_code(fields: &Fields) -> Result<(&str, RespClass), ProviderError> {
    let code = field(fields, "respCode").ok_or_else(|| unknown("answer has no respCode"))?;
    Ok((code, classify(code)))
}

/// Reads an authenticated answer to [`create_fields`].
pub fn create_outcome(
    fields: &Fields,
    mer_id: &str,
    payment_id: &PaymentId,
) -> Result<ProviderCreated, ProviderError> {
    check_echo(fields, mer_id, payment_id.as_str())?;
    match resp_code(fields)? {
        (_, RespClass::Success) => {
            let qr_code = field(fields, "qrCode")
                .filter(|code| !code.is_empty())
                .ok_or_else(|| unknown("create accepted without a qrCode"))?;
            Ok(ProviderCreated {
                pay_url: qr_code.to_owned(),
                provider_trade_no: field(fields, "queryId").map(str::to_owned),
            })
        }
        (code, RespClass::Processing) => Err(unknown(format!("create answered {code}"))),
        (code, RespClass::NotFound | RespClass::Failed) => Err(rejected(fields, code)),
    }
}

/// What the original transaction's code means for the payment. A failed attempt is not a
/// closed order: the payer may still pay the same code before `payTimeout`, and our own expiry
/// closes the payment otherwise.
fn trade_status(code: &str) -> NotifiedStatus {
    match classify(code) {
        RespClass::Success => NotifiedStatus::Paid,
        RespClass::Processing | RespClass::NotFound | RespClass::Failed => NotifiedStatus::Pending,
    }
}

/// Reads an authenticated answer to [`query_fields`]: `respCode` is the query's own result,
/// `origRespCode` the consume's.
pub fn query_outcome(
    fields: &Fields,
    mer_id: &str,
    payment_id: &PaymentId,
) -> Result<Option<ProviderTrade>, ProviderError> {
    check_echo(fields, mer_id, payment_id.as_str())?;
    match resp_code(fields)? {
        (_, RespClass::Success) => {}
        (_, RespClass::NotFound) => return Ok(None),
        (code, RespClass::Processing) => return Err(unknown(format!("query answered {code}"))),
        (code, RespClass::Failed) => return Err(rejected(fields, code)),
    }
    let orig_code =
        field(fields, "origRespCode").ok_or_else(|| unknown("query answer has no origRespCode"))?;
    let amount_minor = field(fields, "txnAmt")
        .and_then(parse_fen)
        .ok_or_else(|| unknown("query answer txnAmt is not integer fen"))?;
    let currency = field(fields, "currencyCode")
        .and_then(parse_currency)
        .ok_or_else(|| unknown("query answer currencyCode is not 156"))?;
    Ok(Some(ProviderTrade {
        status: trade_status(orig_code),
        provider_trade_no: field(fields, "queryId").map(str::to_owned),
        amount_minor,
        currency,
    }))
}

/// UnionPay took a refund or cancel; its final result arrives at `backUrl` or by a query with
/// this order id and `txn_time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalAccepted {
    pub order_id: String,
    pub txn_time: String,
    /// The refund's or cancel's own `queryId`, when the answer has one.
    pub provider_trade_no: Option<String>,
}

/// Reads an authenticated answer to [`reversal_fields`].
pub fn reversal_outcome(
    fields: &Fields,
    mer_id: &str,
    order_id: &str,
    txn_time: &str,
) -> Result<ReversalAccepted, ProviderError> {
    check_echo(fields, mer_id, order_id)?;
    match resp_code(fields)? {
        (_, RespClass::Success) => Ok(ReversalAccepted {
            order_id: order_id.to_owned(),
            txn_time: txn_time.to_owned(),
            provider_trade_no: field(fields, "queryId").map(str::to_owned),
        }),
        (code, RespClass::Processing) => Err(unknown(format!("reversal answered {code}"))),
        (code, RespClass::NotFound | RespClass::Failed) => Err(rejected(fields, code)),
    }
}

/// Reads an authenticated answer to [`refund_query_fields`]: respCode `34` is "no such refund";
/// otherwise `origRespCode` is the refund's own result: `00` refunded, `03`/`04`/`05` still
/// processing, any other code a failed refund.
pub fn refund_query_outcome(
    fields: &Fields,
    mer_id: &str,
    refund_no: &str,
    amount_minor: i64,
) -> Result<Option<RefundState>, ProviderError> {
    check_echo(fields, mer_id, refund_no)?;
    match resp_code(fields)? {
        (_, RespClass::Success) => {}
        (_, RespClass::NotFound) => return Ok(None),
        (code, RespClass::Processing) => {
            return Err(unknown(format!("refund query answered {code}")));
        }
        (code, RespClass::Failed) => return Err(rejected(fields, code)),
    }
    let orig_code = field(fields, "origRespCode")
        .ok_or_else(|| unknown("refund query answer has no origRespCode"))?;
    if let Some(text) = field(fields, "txnAmt") {
        let answered = parse_fen(text).ok_or_else(|| unknown("refund txnAmt is not fen"))?;
        if answered != amount_minor {
            return Err(unknown(format!(
                "refund {refund_no} is {answered} at UnionPay, not {amount_minor}"
            )));
        }
    }
    Ok(Some(match classify(orig_code) {
        RespClass::Success => RefundState::Succeeded,
        RespClass::Processing => RefundState::Processing,
        RespClass::NotFound | RespClass::Failed => RefundState::Failed(format!(
            "UnionPay refund {refund_no}: {orig_code} {}",
            field(fields, "origRespMsg").unwrap_or_default()
        )),
    }))
}

/// Reads an authenticated `backUrl` notification of a consume (txnType 01). Notifications of
/// refunds (txnType 04) and cancels share the `backUrl` but are not payment notifications:
/// [`verified_notification`] reads refunds with [`refund_notification`], and anything else that
/// is not a consume (cancels included) is refused here as malformed.
pub fn notification(fields: &Fields, mer_id: &str) -> Result<Notification, CallbackRejection> {
    let malformed = |what: &str| CallbackRejection::Malformed(what.to_owned());
    let required = |key: &str| {
        field(fields, key)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| malformed(&format!("no {key}")))
    };
    let merchant = required("merId")?;
    if merchant != mer_id {
        return Err(CallbackRejection::WrongMerchant(merchant.to_owned()));
    }
    let txn_type = required("txnType")?;
    if txn_type != "01" {
        return Err(malformed(&format!("txnType {txn_type} is not a consume")));
    }
    let payment_id =
        PaymentId::parse(required("orderId")?).map_err(|e| malformed(&format!("orderId: {e}")))?;
    let query_id = required("queryId")?;
    let amount_minor =
        parse_fen(required("txnAmt")?).ok_or_else(|| malformed("txnAmt is not integer fen"))?;
    let currency = parse_currency(required("currencyCode")?)
        .ok_or_else(|| malformed("currencyCode is not 156"))?;
    Ok(Notification {
        notify_id: query_id.to_owned(),
        payment_id,
        provider_trade_no: Some(query_id.to_owned()),
        status: trade_status(required("respCode")?),
        amount_minor,
        currency,
    })
}

/// Reads an authenticated `backUrl` notification as what its (now authentic) txnType says: a
/// refund's (04) by [`refund_notification`], anything else by [`notification`].
pub fn verified_notification(fields: &Fields, mer_id: &str) -> Result<Verified, CallbackRejection> {
    if field(fields, "txnType") == Some(TXN_TYPE_REFUND) {
        refund_notification(fields, mer_id).map(Verified::Refund)
    } else {
        notification(fields, mer_id).map(Verified::Payment)
    }
}

/// Reads an authenticated `backUrl` notification of a refund (txnType 04): `orderId` is our
/// refund number, `reqReserved` our payment id (sent with the refund, echoed back), `queryId`
/// the refund's own (it names the notification), `txnAmt` the refund's amount. `respCode` is
/// the refund's result: `00` (or `A6`) refunded, `03`/`04`/`05` still processing (changes
/// nothing), anything else a failed refund, with its code and message.
pub fn refund_notification(
    fields: &Fields,
    mer_id: &str,
) -> Result<RefundNotice, CallbackRejection> {
    let malformed = |what: String| CallbackRejection::Malformed(what);
    let required = |key: &str| {
        field(fields, key)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| malformed(format!("no {key}")))
    };
    let merchant = required("merId")?;
    if merchant != mer_id {
        return Err(CallbackRejection::WrongMerchant(merchant.to_owned()));
    }
    let txn_type = required("txnType")?;
    if txn_type != TXN_TYPE_REFUND {
        return Err(malformed(format!("txnType {txn_type} is not a refund")));
    }
    let refund_no = required("orderId")?;
    if !is_order_id(refund_no) {
        return Err(malformed("orderId is not a refund number".into()));
    }
    let payment_id = PaymentId::parse(required(REQ_RESERVED)?)
        .map_err(|e| malformed(format!("{REQ_RESERVED} is not a payment id: {e}")))?;
    let query_id = required("queryId")?;
    let amount_minor = parse_fen(required("txnAmt")?)
        .filter(|fen| (1..=AMOUNT_MINOR_MAX).contains(fen))
        .ok_or_else(|| malformed("txnAmt is not a positive integer of fen".into()))?;
    if field(fields, "currencyCode").is_some_and(|code| parse_currency(code).is_none()) {
        return Err(malformed("currencyCode is not 156".into()));
    }
    let code = required("respCode")?;
    let state = match classify(code) {
        RespClass::Success => RefundState::Succeeded,
        RespClass::Processing => RefundState::Processing,
        RespClass::NotFound | RespClass::Failed => RefundState::Failed(format!(
            "UnionPay refund {refund_no}: {code} {}",
            field(fields, "respMsg").unwrap_or_default()
        )),
    };
    Ok(RefundNotice {
        notify_id: query_id.to_owned(),
        payment_id,
        refund_no: refund_no.to_owned(),
        state,
        amount_minor,
    })
}
