//! The trade bill: `GET /v3/bill/tradebill` builds the day's CSV from the sandbox's own paid
//! WeChat Pay trades, keeps it for 30 seconds under a random token, and answers its
//! `download_url` with the file's SHA-1; `GET /v3/billdownload/file?token=..` (authenticated,
//! answered unsigned) serves exactly those bytes. Keeping the bytes, rather than building them
//! again, makes the hash hold even when a trade is paid between the two calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use time::{Date, OffsetDateTime};

use super::super::server::ApiError;
use super::super::state::{Protocol, Shared, Status, unix_now};
use super::{WechatPayConfig, sign};

/// How long a `download_url` works, as WeChat Pay documents it (real seconds, not scaled).
const URL_VALID_SECS: i64 = 30;
/// Bills kept at once; the oldest goes first. Each lives 30 s, so this is plenty.
const BILLS_KEPT_MAX: usize = 64;
const LINE_END: &str = "\r\n";
/// The sandbox's fee rate, 0.6 %, in the bill's own words.
const FEE_RATE: &str = "0.60%";

const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// Bills handed out, oldest first.
#[derive(Default)]
pub(crate) struct Bills {
    kept: Mutex<VecDeque<Kept>>,
}

/// One bill file, served under `token` until `expires_at` (unix seconds).
struct Kept {
    token: String,
    expires_at: i64,
    file: Arc<Vec<u8>>,
}

impl Bills {
    fn keep(&self, token: String, expires_at: i64, file: Arc<Vec<u8>>) {
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() >= BILLS_KEPT_MAX {
            kept.pop_front();
        }
        kept.push_back(Kept {
            token,
            expires_at,
            file,
        });
    }

    fn get(&self, token: &str, now: i64) -> Option<Arc<Vec<u8>>> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.iter()
            .find(|k| k.token == token && now < k.expires_at)
            .map(|k| Arc::clone(&k.file))
    }
}

fn param_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
}

fn wechatpay(shared: &Shared) -> Result<&WechatPayConfig, ApiError> {
    shared
        .config
        .wechatpay
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint"))
}

/// `YYYY-MM-DD`, a real calendar day.
fn parse_bill_date(text: &str) -> Option<Date> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let month = time::Month::try_from(text.get(5..7)?.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(
        text.get(..4)?.parse().ok()?,
        month,
        text.get(8..10)?.parse().ok()?,
    )
    .ok()
}

/// `GET /v3/bill/tradebill?bill_date=YYYY-MM-DD[&bill_type=ALL]` -> 200 `{download_url,
/// hash_type, hash_value}`. Only `ALL` and no `tar_type` (plain CSV); a day that has not begun
/// is 400 `NO_STATEMENT_EXIST`; today is served as far as it goes.
pub(crate) async fn trade_bill(
    State(shared): State<Arc<Shared>>,
    Extension(bills): Extension<Arc<Bills>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let cfg = wechatpay(&shared)?;
    let date = params
        .get("bill_date")
        .and_then(|d| parse_bill_date(d))
        .ok_or_else(|| param_error("bill_date must be YYYY-MM-DD"))?;
    if params.get("bill_type").is_some_and(|t| t != "ALL") {
        return Err(param_error("the sandbox serves bill_type ALL only"));
    }
    if params.contains_key("tar_type") {
        return Err(param_error(
            "the sandbox serves plain CSV only (no tar_type)",
        ));
    }
    if date > OffsetDateTime::now_utc().to_offset(offset!(+8)).date() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NO_STATEMENT_EXIST",
            "the bill does not exist",
        ));
    }
    let file = bill_csv(cfg, &paid_rows(&shared, cfg, date)).into_bytes();
    let hash_value = sha1_hex(&file);
    let token = sign::random_alnum(40);
    let download_url = format!(
        "{}/v3/billdownload/file?token={token}",
        shared.config.base_url
    );
    bills.keep(token, unix_now() + URL_VALID_SECS, Arc::new(file));
    Ok(Json(json!({
        "download_url": download_url,
        "hash_type": "SHA1",
        "hash_value": hash_value,
    })))
}

/// `GET /v3/billdownload/file?token=..`: the kept bytes while the token is valid; unknown or
/// expired -> 400 `INVALID_REQUEST`.
pub(crate) async fn download(
    State(shared): State<Arc<Shared>>,
    Extension(bills): Extension<Arc<Bills>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    wechatpay(&shared)?;
    let file = params
        .get("token")
        .and_then(|token| bills.get(token, unix_now()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "download token unknown or expired",
            )
        })?;
    Ok((
        [(CONTENT_TYPE, "text/plain;charset=utf-8")],
        file.as_slice().to_vec(),
    )
        .into_response())
}

/// One paid trade as the bill shows it.
struct Row {
    /// `yyyy-MM-dd HH:mm:ss`, Beijing time.
    paid_at: String,
    transaction_id: String,
    out_trade_no: String,
    description: String,
    total_fen: i64,
}

/// The merchant's paid WeChat Pay trades of that Beijing day, in payment order.
fn paid_rows(shared: &Shared, cfg: &WechatPayConfig, date: Date) -> Vec<Row> {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let inner = shared.lock();
    let mut rows: Vec<Row> = inner
        .trades
        .values()
        .filter(|t| {
            t.protocol == Protocol::WechatPay
                && t.status == Status::Paid
                && t.merchant_id == cfg.mchid
        })
        .filter_map(|t| {
            let paid = OffsetDateTime::parse(t.paid_at.as_deref()?, &Rfc3339)
                .ok()?
                .to_offset(offset!(+8));
            (paid.date() == date).then(|| Row {
                paid_at: paid.format(&format).unwrap_or_default(),
                transaction_id: t.trade_no.clone(),
                out_trade_no: t.out_trade_no.clone(),
                description: t.subject.clone(),
                total_fen: t.amount_minor,
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.paid_at, &a.transaction_id).cmp(&(&b.paid_at, &b.transaction_id)));
    rows
}

/// Lower-case hex SHA-1, the form `hash_value` takes.
fn sha1_hex(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fen as yuan with two decimals.
fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// The 0.6 % fee of `fen`, in yuan with five decimals as the bill writes fees: 0.6 % of one fen
/// is 0.00006 yuan, so the fee in units of 0.00001 yuan is `fen * 6`.
fn fee(fen: i64) -> String {
    let units = fen.saturating_mul(6);
    format!("{}.{:05}", units / 100_000, units % 100_000)
}

/// A text field: a backtick or a line break would break the layout.
fn text(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '`' => '\'',
            '\r' | '\n' => ' ',
            other => other,
        })
        .collect()
}

/// `` `a,`b,`c ``: every data field starts with a backtick.
fn data_line(fields: &[String]) -> String {
    let mut line = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push('`');
        line.push_str(field);
    }
    line.push_str(LINE_END);
    line
}

/// The ALL bill: the header, one `SUCCESS` row per paid trade, then the summary.
fn bill_csv(cfg: &WechatPayConfig, rows: &[Row]) -> String {
    let mut csv = format!("{HEADER}{LINE_END}");
    for row in rows {
        let total = yuan(row.total_fen);
        let fields = [
            row.paid_at.clone(),
            cfg.appid.clone(),
            cfg.mchid.clone(),
            "0".into(),
            String::new(),
            row.transaction_id.clone(),
            row.out_trade_no.clone(),
            "oSandboxPayer0000000000000000".into(),
            "NATIVE".into(),
            "SUCCESS".into(),
            "OTHERS".into(),
            "CNY".into(),
            total.clone(),
            "0.00".into(),
            "0".into(),
            "0".into(),
            "0.00".into(),
            "0.00".into(),
            String::new(),
            String::new(),
            text(&row.description),
            String::new(),
            fee(row.total_fen),
            FEE_RATE.into(),
            total,
            "0.00".into(),
            String::new(),
        ];
        csv.push_str(&data_line(&fields));
    }
    let total_fen: i64 = rows.iter().map(|r| r.total_fen).sum();
    csv.push_str(SUMMARY_HEADER);
    csv.push_str(LINE_END);
    csv.push_str(&data_line(&[
        rows.len().to_string(),
        yuan(total_fen),
        "0.00".into(),
        "0.00".into(),
        fee(total_fen),
        yuan(total_fen),
        "0.00".into(),
    ]));
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_is_lower_case_hex() {
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn fees_and_yuan_are_exact() {
        assert_eq!(yuan(1010), "10.10");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(fee(1), "0.00006");
        assert_eq!(fee(1010), "0.06060");
        assert_eq!(fee(1_000_000), "60.00000");
    }

    #[test]
    fn bill_dates_are_real_days() {
        assert!(parse_bill_date("2024-02-29").is_some());
        for bad in ["2023-02-29", "2024-2-01", "20240201", "2024-02-01&x", ""] {
            assert_eq!(parse_bill_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn kept_bills_expire_and_are_bounded() {
        let bills = Bills::default();
        bills.keep("T0".into(), 100, Arc::new(b"first".to_vec()));
        assert_eq!(
            bills.get("T0", 99).as_deref().map(Vec::as_slice),
            Some(&b"first"[..])
        );
        assert!(bills.get("T0", 100).is_none());
        assert!(bills.get("T1", 0).is_none());
        for i in 1..=BILLS_KEPT_MAX {
            bills.keep(format!("T{i}"), 100, Arc::new(Vec::new()));
        }
        assert!(bills.get("T0", 0).is_none(), "the oldest goes first");
        assert!(bills.get(&format!("T{BILLS_KEPT_MAX}"), 0).is_some());
    }
}
