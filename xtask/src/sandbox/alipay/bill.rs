//! The trade bill: `alipay.data.dataservice.bill.downloadurl.query` hands out a 30-second
//! `bill_download_url` back to the sandbox, and `GET /alipay/bills/{token}` serves the zip there,
//! built from the sandbox's own paid Alipay trades: `{pid}_{date}_业务明细.csv` and
//! `{pid}_{date}_业务明细(汇总).csv`, both GBK, entry names GBK too (no UTF-8 flag), as Alipay
//! packs them.

use std::io::{Cursor, Write as _};
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use time::{Date, Month, OffsetDateTime};
use tracing::warn;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::super::state::{Protocol, Shared, Status, unix_now};
use super::AlipayConfig;
use super::amount::format_yuan;
use super::gateway::{business, invalid, success};

/// How long a `bill_download_url` works, as Alipay documents it (real seconds, not scaled).
const URL_VALID_SECS: i64 = 30;
/// The partner id in file names and the `#账号` line when no `seller_id` is configured.
const DEFAULT_PID: &str = "2088000000000001";
const LINE_END: &str = "\r\n";

const DETAIL_HEADER: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";
const SUMMARY_HEADER: &str = "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）";
const DETAIL_RULE: &str = "#-----------------------------------------业务明细列表----------------------------------------";
const DETAIL_RULE_END: &str = "#-----------------------------------------业务明细列表结束------------------------------------";
const SUMMARY_RULE: &str = "#-----------------------------------------业务汇总列表----------------------------------------";
const SUMMARY_RULE_END: &str = "#-----------------------------------------业务汇总列表结束------------------------------------";

/// A bill period: one China-time day (`yyyy-MM-dd`) or month (`yyyy-MM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Day(Date),
    Month(i32, Month),
}

impl Period {
    fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let shape_ok = matches!(bytes.len(), 7 | 10)
            && bytes.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !shape_ok {
            return None;
        }
        let year: i32 = text.get(..4)?.parse().ok()?;
        let month = Month::try_from(text.get(5..7)?.parse::<u8>().ok()?).ok()?;
        match text.get(8..10) {
            None => Some(Self::Month(year, month)),
            Some(day) => Date::from_calendar_date(year, month, day.parse().ok()?)
                .ok()
                .map(Self::Day),
        }
    }

    fn first_day(self) -> Option<Date> {
        match self {
            Self::Day(date) => Some(date),
            Self::Month(year, month) => Date::from_calendar_date(year, month, 1).ok(),
        }
    }

    /// The first day after the period.
    fn end_day(self) -> Option<Date> {
        match self {
            Self::Day(date) => date.next_day(),
            Self::Month(year, Month::December) => {
                Date::from_calendar_date(year + 1, Month::January, 1).ok()
            }
            Self::Month(year, month) => Date::from_calendar_date(year, month.next(), 1).ok(),
        }
    }

    fn contains(self, date: Date) -> bool {
        match self {
            Self::Day(day) => day == date,
            Self::Month(year, month) => date.year() == year && date.month() == month,
        }
    }

    /// `yyyyMMdd` or `yyyyMM`, as in the entry names.
    fn compact(self) -> String {
        match self {
            Self::Day(date) => format!(
                "{:04}{:02}{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            ),
            Self::Month(year, month) => format!("{year:04}{:02}", u8::from(month)),
        }
    }

    /// Back to the `bill_date` text.
    fn text(self) -> String {
        match self {
            Self::Day(date) => format!(
                "{:04}-{:02}-{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            ),
            Self::Month(year, month) => format!("{year:04}-{:02}", u8::from(month)),
        }
    }
}

fn china_today() -> Date {
    OffsetDateTime::now_utc().to_offset(offset!(+8)).date()
}

/// `alipay.data.dataservice.bill.downloadurl.query`, bill_type `trade` only. A period that has
/// not begun is `isp.bill_not_exist`; the current day or month is served as far as it goes.
pub(super) fn download_url(base_url: &str, biz: &Map<String, Value>) -> Value {
    if biz.get("bill_type").and_then(Value::as_str) != Some("trade") {
        return invalid("isv.invalid-arguments", "bill_type must be trade");
    }
    let bill_date = biz
        .get("bill_date")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(period) = Period::parse(bill_date) else {
        return invalid(
            "isv.invalid-arguments",
            "bill_date must be yyyy-MM-dd or yyyy-MM",
        );
    };
    if period.first_day().is_none_or(|first| first > china_today()) {
        return business("isp.bill_not_exist", "bill not exist");
    }
    let token = format!("{}.{}", period.text(), unix_now() + URL_VALID_SECS);
    success(json!({ "bill_download_url": format!("{base_url}/alipay/bills/{token}") }))
}

/// `GET /alipay/bills/{token}`: the zip, while the URL is valid. Unknown or expired -> 404.
pub(crate) async fn bill_file(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "bill url is invalid or expired").into_response();
    let Some(cfg) = shared.config.alipay.as_ref() else {
        return not_found();
    };
    let Ok(Path(token)) = path else {
        return not_found();
    };
    let Some(period) = valid_token(&token, unix_now()) else {
        return not_found();
    };
    let rows = paid_rows(&shared, cfg, period);
    let pid = cfg.seller_id.as_deref().unwrap_or(DEFAULT_PID);
    match bill_zip(pid, period, &rows) {
        Ok(zip) => (
            [
                (CONTENT_TYPE, "application/zip".to_owned()),
                (
                    CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{pid}_{}.csv.zip\"",
                        period.compact()
                    ),
                ),
            ],
            zip,
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "sandbox: cannot build the Alipay bill zip");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `{bill_date}.{expires_at}` while `now` is before `expires_at`.
fn valid_token(token: &str, now: i64) -> Option<Period> {
    let (date, expires_at) = token.split_once('.')?;
    let expires_at: i64 = expires_at.parse().ok()?;
    (now < expires_at).then(|| Period::parse(date)).flatten()
}

/// One paid trade as the bill shows it.
struct Row {
    trade_no: String,
    out_trade_no: String,
    subject: String,
    /// `yyyy-MM-dd HH:mm:ss`, China time.
    paid_at: String,
    amount_fen: i64,
}

/// The app's paid Alipay trades whose payment falls in the period, in payment order.
fn paid_rows(shared: &Shared, cfg: &AlipayConfig, period: Period) -> Vec<Row> {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let inner = shared.lock();
    let mut rows: Vec<Row> = inner
        .trades
        .values()
        .filter(|t| {
            t.protocol == Protocol::Alipay
                && t.status == Status::Paid
                && t.merchant_id == cfg.app_id
        })
        .filter_map(|t| {
            let paid = OffsetDateTime::parse(t.paid_at.as_deref()?, &Rfc3339)
                .ok()?
                .to_offset(offset!(+8));
            period.contains(paid.date()).then(|| Row {
                trade_no: t.trade_no.clone(),
                out_trade_no: t.out_trade_no.clone(),
                subject: t.subject.clone(),
                paid_at: paid.format(&format).unwrap_or_default(),
                amount_fen: t.amount_minor,
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.paid_at, &a.trade_no).cmp(&(&b.paid_at, &b.trade_no)));
    rows
}

/// A text field: commas and line breaks would break the CSV, so they become spaces; Alipay pads
/// text fields with a tab.
fn text(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| {
            if matches!(c, ',' | '\r' | '\n') {
                ' '
            } else {
                c
            }
        })
        .collect();
    format!("{clean}\t")
}

/// `2026年01月02日 00:00:00`.
fn chinese_date(date: Option<Date>) -> String {
    date.map(|d| {
        format!(
            "{:04}年{:02}月{:02}日 00:00:00",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    })
    .unwrap_or_default()
}

fn chinese_now() -> String {
    let now = OffsetDateTime::now_utc().to_offset(offset!(+8));
    format!(
        "{:04}年{:02}月{:02}日 {:02}:{:02}:{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The `#` lines above a list: title, account, period, rule.
fn preamble(title: &str, pid: &str, period: Period, rule: &str) -> String {
    [
        format!("#{title}"),
        format!("#账号：[{pid}0156]"),
        format!(
            "#起始日期：[{}]   终止日期：[{}]",
            chinese_date(period.first_day()),
            chinese_date(period.end_day())
        ),
        rule.to_owned(),
    ]
    .map(|line| line + LINE_END)
    .concat()
}

/// 业务明细: one `交易` row per paid trade. The sandbox charges no fees and gives no discounts.
fn detail_csv(pid: &str, period: Period, rows: &[Row]) -> String {
    let mut csv = preamble("支付宝业务明细查询", pid, period, DETAIL_RULE);
    csv.push_str(DETAIL_HEADER);
    csv.push_str(LINE_END);
    for row in rows {
        let amount = format_yuan(row.amount_fen);
        let fields = [
            text(&row.trade_no),
            text(&row.out_trade_no),
            text("交易"),
            text(&row.subject),
            row.paid_at.clone(),
            row.paid_at.clone(),
            text(""),
            text(""),
            text(""),
            text(""),
            text("sandbox***@example.com"),
            amount.clone(),
            amount,
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            text(""),
            "0.00".into(),
            "0.00".into(),
            text(""),
            "0.00".into(),
            "0.00".into(),
            text(""),
        ];
        csv.push_str(&fields.join(","));
        csv.push_str(LINE_END);
    }
    let total = format_yuan(rows.iter().map(|r| r.amount_fen).sum());
    for line in [
        DETAIL_RULE_END.to_owned(),
        format!(
            "#交易合计：{}笔，商家实收共{total}元，商家优惠共0.00元",
            rows.len()
        ),
        "#退款合计：0笔，商家实收退款共0.00元，商家优惠退款共0.00元".to_owned(),
        format!("#导出时间：[{}]", chinese_now()),
    ] {
        csv.push_str(&line);
        csv.push_str(LINE_END);
    }
    csv
}

/// 业务明细(汇总): one `合计` row.
fn summary_csv(pid: &str, period: Period, rows: &[Row]) -> String {
    let mut csv = preamble("支付宝业务汇总查询", pid, period, SUMMARY_RULE);
    let total = format_yuan(rows.iter().map(|r| r.amount_fen).sum());
    for line in [
        SUMMARY_HEADER.to_owned(),
        format!(
            "合计,,{},0,{total},{total},0.00,0.00,0.00,0.00,0.00,{total}",
            rows.len()
        ),
        SUMMARY_RULE_END.to_owned(),
        format!("#导出时间：[{}]", chinese_now()),
    ] {
        csv.push_str(&line);
        csv.push_str(LINE_END);
    }
    csv
}

/// The zip: detail first, then the summary, both deflated; text and names in GBK.
fn bill_zip(pid: &str, period: Period, rows: &[Row]) -> anyhow::Result<Vec<u8>> {
    let stem = format!("{pid}_{}", period.compact());
    let entries = [
        (
            format!("{stem}_业务明细.csv"),
            detail_csv(pid, period, rows),
        ),
        (
            format!("{stem}_业务明细(汇总).csv"),
            summary_csv(pid, period, rows),
        ),
    ];
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content) in &entries {
        let (name, _, _) = encoding_rs::GBK.encode(name);
        let (content, _, _) = encoding_rs::GBK.encode(content);
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .name(&name);
        zip.start_file_with_options(options)?;
        zip.write_all(&content)?;
    }
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_strictly_and_bound_their_days() {
        let day = Period::parse("2026-02-28").expect("day");
        assert_eq!(day.compact(), "20260228");
        assert_eq!(chinese_date(day.end_day()), "2026年03月01日 00:00:00");
        let december = Period::parse("2025-12").expect("month");
        assert_eq!(december.compact(), "202512");
        assert_eq!(chinese_date(december.end_day()), "2026年01月01日 00:00:00");
        for bad in [
            "2026-02-30",
            "2026-13",
            "2026-1-01",
            "20260101",
            "2026-01-01x",
            "",
        ] {
            assert_eq!(Period::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_expire() {
        assert!(valid_token("2026-01-02.100", 99).is_some());
        assert!(valid_token("2026-01-02.100", 100).is_none());
        assert!(valid_token("2026-01-02", 0).is_none());
        assert!(valid_token("nope.100", 0).is_none());
    }
}
