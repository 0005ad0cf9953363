//! The trade bill: `alipay.data.dataservice.bill.downloadurl.query` (bill_type `trade`) answers
//! a short-lived `bill_download_url` of a zip; its `..._业务明细.csv` (GBK, decoded to UTF-8
//! by the caller) is what [`parse_statement`] reads. That file has `#` header lines, a column
//! header row, one row per trade or refund in China time and yuan, then `#` footer lines
//! (totals, export time). Fields are often padded with tabs or spaces. Columns are found by
//! their header names, never by position.
//!
//! Fetching and unzipping the file is not done here: it needs a zip reader and a GBK decoder.

use serde::Deserialize;
use time::PrimitiveDateTime;
use time::macros::{format_description, offset};

use super::AlipayProvider;
use super::answer::AnswerStatus;
use crate::domain::{Currency, Timestamp};
use crate::ports::ProviderError;

pub const BILL_URL_QUERY: &str = "alipay.data.dataservice.bill.downloadurl.query";

/// More lines than this is not one merchant's day; parsing stops with an error.
pub const STATEMENT_LINES_MAX: usize = 2_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trade bill line {line}: {reason}")]
pub struct StatementError {
    pub line: usize,
    pub reason: String,
}

/// What a bill line records (业务类型).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// 交易
    Paid,
    /// 退款
    Refund,
}

/// One trade-bill line, amounts in fen, CNY (Alipay bills are in yuan only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// 完成时间, China time.
    pub traded_at: Timestamp,
    /// Alipay's trade number (支付宝交易号).
    pub provider_trade_no: String,
    /// Our payment id when the trade is ours; left for reconciliation to parse.
    pub out_trade_no: String,
    pub kind: StatementKind,
    /// 订单金额（元）. Refund lines carry it negative, as Alipay writes them.
    pub amount_minor: i64,
    /// 商家实收（元）: what the merchant received (negative on refunds).
    pub received_minor: i64,
    /// Refund lines: 退款批次号/请求号 (our refund id, `out_request_no`), when present.
    pub refund_request_no: Option<String>,
}

/// Where each column we read sits in this bill.
struct Columns {
    trade_no: usize,
    out_trade_no: usize,
    kind: usize,
    finished_at: usize,
    amount: usize,
    received: usize,
    refund_request_no: Option<usize>,
    count: usize,
}

impl Columns {
    fn from_header(header: &str) -> Result<Self, String> {
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        let need = |name: &str| find(name).ok_or_else(|| format!("no column {name}"));
        Ok(Self {
            trade_no: need("支付宝交易号")?,
            out_trade_no: need("商户订单号")?,
            kind: need("业务类型")?,
            finished_at: need("完成时间")?,
            amount: need("订单金额（元）")?,
            received: need("商家实收（元）")?,
            refund_request_no: find("退款批次号/请求号"),
            count: names.len(),
        })
    }
}

/// Parses the trade detail bill. Stops at the first `#` line after the column header (the
/// footer); a bill without it was cut short and is an error. No data rows is an empty list.
pub fn parse_statement(text: &str) -> Result<Vec<StatementLine>, StatementError> {
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .take(STATEMENT_LINES_MAX);
    let mut columns = None;
    for (number, line) in lines.by_ref() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        columns = Some(Columns::from_header(line).map_err(|reason| StatementError {
            line: number,
            reason,
        })?);
        break;
    }
    let columns = columns.ok_or_else(|| StatementError {
        line: 1,
        reason: "no column header".into(),
    })?;
    let mut parsed = Vec::new();
    let mut last = 1;
    for (number, line) in lines {
        last = number;
        if line.starts_with('#') {
            return Ok(parsed);
        }
        if line.trim().is_empty() {
            continue;
        }
        let entry = parse_line(&columns, line).map_err(|reason| StatementError {
            line: number,
            reason,
        })?;
        parsed.push(entry);
    }
    // A bill without its footer was cut short: never take it as complete.
    Err(StatementError {
        line: last,
        reason: format!("no `#` footer within {STATEMENT_LINES_MAX} lines"),
    })
}

/// Exact yuan to fen; Alipay writes refunds with a leading `-`.
fn signed_yuan(text: &str) -> Result<i64, String> {
    let bad = |e: &dyn std::fmt::Display| format!("amount {text:?}: {e}");
    match text.strip_prefix('-') {
        Some(rest) => Currency::Cny
            .parse_major(rest)
            .map(|v| -v)
            .map_err(|e| bad(&e)),
        None => Currency::Cny.parse_major(text).map_err(|e| bad(&e)),
    }
}

fn parse_line(columns: &Columns, line: &str) -> Result<StatementLine, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.len() != columns.count {
        return Err(format!(
            "{} fields, the header has {}",
            fields.len(),
            columns.count
        ));
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let kind = match field(columns.kind) {
        "交易" => StatementKind::Paid,
        "退款" => StatementKind::Refund,
        other => return Err(format!("unknown business type {other:?}")),
    };
    let refund_request_no = match (kind, columns.refund_request_no) {
        (StatementKind::Refund, Some(i)) => Some(field(i).to_owned()).filter(|s| !s.is_empty()),
        _ => None,
    };
    let provider_trade_no = field(columns.trade_no);
    if provider_trade_no.is_empty() {
        return Err("empty 支付宝交易号".into());
    }
    Ok(StatementLine {
        traded_at: china_time(field(columns.finished_at))?,
        provider_trade_no: provider_trade_no.to_owned(),
        out_trade_no: field(columns.out_trade_no).to_owned(),
        kind,
        amount_minor: signed_yuan(field(columns.amount))?,
        received_minor: signed_yuan(field(columns.received))?,
        refund_request_no,
    })
}

/// `2019-06-11 10:00:09`, China time.
fn china_time(text: &str) -> Result<Timestamp, String> {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let local =
        PrimitiveDateTime::parse(text, &format).map_err(|e| format!("time {text:?}: {e}"))?;
    Ok(Timestamp::from_unix_s(
        local.assume_offset(offset!(+8)).unix_timestamp(),
    ))
}

/// `yyyy-MM-dd` (daily bill) or `yyyy-MM` (monthly), digits only.
fn is_bill_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    matches!(bytes.len(), 7 | 10)
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// `biz_content` of the bill URL query; a malformed date never leaves.
pub(super) fn bill_url_biz(bill_date: &str) -> Result<String, ProviderError> {
    if !is_bill_date(bill_date) {
        return Err(ProviderError::Rejected {
            code: "INVALID_BILL_DATE".into(),
            message: format!("bill date {bill_date:?} is not yyyy-MM-dd or yyyy-MM"),
        });
    }
    Ok(serde_json::json!({ "bill_type": "trade", "bill_date": bill_date }).to_string())
}

#[derive(Deserialize)]
struct BillUrlAnswer {
    #[serde(default)]
    bill_download_url: String,
}

/// The verified answer to the bill URL query. A bill not ready yet is a rejection
/// (`isp.bill_not_exist`).
pub(super) fn parse_bill_url(content: &[u8]) -> Result<String, ProviderError> {
    AnswerStatus::parse(content)?.outcome()?;
    let answer: BillUrlAnswer = serde_json::from_slice(content)
        .map_err(|e| ProviderError::Unknown(format!("answer: {e}")))?;
    if answer.bill_download_url.is_empty() {
        return Err(ProviderError::Unknown(
            "bill query answered without bill_download_url".into(),
        ));
    }
    Ok(answer.bill_download_url)
}

impl AlipayProvider {
    /// Where to download the day's (`yyyy-MM-dd`) or month's (`yyyy-MM`) trade bill zip. The
    /// URL is valid for 30 seconds; a day's bill is ready from about 09:00 the next day.
    pub async fn statement_url(&self, bill_date: &str) -> Result<String, ProviderError> {
        let biz_content = bill_url_biz(bill_date)?;
        let content = self.call(BILL_URL_QUERY, &biz_content, None).await?;
        parse_bill_url(&content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";

    const PAID: &str = "2019061122001412341234567890\t,01J0000000000000000000PAY1\t,交易\t,Coffee\t,2019-06-11 10:00:01,2019-06-11 10:00:09,\t,\t,\t,\t,buy***@example.com\t,12.34,12.30,0.00,0.00,0.04,0.00,0.00,\t,0.00,0.00,\t,-0.07,0.00,\t";

    const REFUND: &str = "2019061122001412341234567890\t,01J0000000000000000000PAY1\t,退款\t,Coffee\t,2019-06-11 11:00:00,2019-06-11 11:00:02,\t,\t,\t,\t,buy***@example.com\t,-5.00,-5.00,0.00,0.00,0.00,0.00,0.00,\t,0.00,0.00,\tREFUND01\t,0.03,0.00,\t";

    fn bill(rows: &[&str]) -> String {
        let mut text = String::from(
            "#支付宝业务明细查询\r\n#账号：[20881234567890120156]\r\n#起始日期：[2019年06月11日 00:00:00]   终止日期：[2019年06月12日 00:00:00]\r\n#-----------------------------------------业务明细列表----------------------------------------\r\n",
        );
        text.push_str(HEADER);
        text.push_str("\r\n");
        for row in rows {
            text.push_str(row);
            text.push_str("\r\n");
        }
        text.push_str("#-----------------------------------------业务明细列表结束------------------------------------\r\n#交易合计：1笔，商家实收共12.30元，商家优惠共0.00元\r\n#退款合计：1笔，商家实收退款共-5.00元\r\n#导出时间：[2019年06月12日 09:01:02]\r\n");
        text
    }

    #[test]
    fn parses_trades_and_refunds_exactly() {
        let lines = parse_statement(&bill(&[PAID, REFUND])).expect("bill");
        assert_eq!(
            lines,
            vec![
                StatementLine {
                    // 2019-06-11 10:00:09 +08:00
                    traded_at: Timestamp::from_unix_s(1_560_218_409),
                    provider_trade_no: "2019061122001412341234567890".into(),
                    out_trade_no: "01J0000000000000000000PAY1".into(),
                    kind: StatementKind::Paid,
                    amount_minor: 1234,
                    received_minor: 1230,
                    refund_request_no: None,
                },
                StatementLine {
                    traded_at: Timestamp::from_unix_s(1_560_222_002),
                    provider_trade_no: "2019061122001412341234567890".into(),
                    out_trade_no: "01J0000000000000000000PAY1".into(),
                    kind: StatementKind::Refund,
                    amount_minor: -500,
                    received_minor: -500,
                    refund_request_no: Some("REFUND01".into()),
                },
            ]
        );
    }

    #[test]
    fn an_empty_day_is_an_empty_list_and_a_bom_is_ignored() {
        let text = format!("\u{feff}{}", bill(&[]));
        assert_eq!(parse_statement(&text).expect("bill"), vec![]);
    }

    #[test]
    fn bad_amounts_are_errors_with_the_line() {
        for bad in ["12.345", "1,2", "abc", "", "--1.00", "+1.00"] {
            let row = PAID.replacen("12.34", bad, 1);
            let err = parse_statement(&bill(&[&row])).expect_err(bad);
            assert_eq!(err.line, 6, "{bad:?}: {err}");
        }
    }

    #[test]
    fn missing_columns_and_cut_bills_are_errors() {
        let text = bill(&[PAID]).replace(",商家实收（元）", ",实收");
        let err = parse_statement(&text).expect_err("missing column");
        assert_eq!(err.line, 5);
        assert!(err.reason.contains("商家实收（元）"), "{err}");

        let text = bill(&[PAID]);
        let cut = &text[..text
            .find("#-----------------------------------------业务明细列表结束")
            .expect("footer")];
        assert!(parse_statement(cut).is_err());
        assert!(parse_statement("#only comments\n").is_err());
        assert!(parse_statement("").is_err());
    }

    #[test]
    fn misaligned_rows_and_unknown_types_are_errors() {
        let extra = PAID.replacen("Coffee", "Coffee, large", 1);
        assert!(parse_statement(&bill(&[&extra])).is_err());
        let other = PAID.replacen("交易", "转账", 1);
        assert!(parse_statement(&bill(&[&other])).is_err());
        let no_time = PAID.replacen("2019-06-11 10:00:09", "", 1);
        assert!(parse_statement(&bill(&[&no_time])).is_err());
    }

    #[test]
    fn bill_url_request_and_answer() {
        assert_eq!(
            bill_url_biz("2019-06-11").expect("biz"),
            r#"{"bill_date":"2019-06-11","bill_type":"trade"}"#
        );
        assert!(bill_url_biz("2019-06").is_ok());
        for bad in ["2019-6-11", "20190611", "2019-06-11\"}", ""] {
            assert!(
                matches!(bill_url_biz(bad), Err(ProviderError::Rejected { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            super::super::answer::response_key(BILL_URL_QUERY),
            "alipay_data_dataservice_bill_downloadurl_query_response"
        );
        let ok = br#"{"code":"10000","msg":"Success","bill_download_url":"http://dwbillcenter.alipay.com/downloadBillFile.resource?bizType=trade&fileType=csv.zip"}"#;
        assert_eq!(
            parse_bill_url(ok).expect("url"),
            "http://dwbillcenter.alipay.com/downloadBillFile.resource?bizType=trade&fileType=csv.zip"
        );
        let not_ready = br#"{"code":"40004","msg":"Business Failed","sub_code":"isp.bill_not_exist","sub_msg":"bill not exist"}"#;
        assert!(matches!(
            parse_bill_url(not_ready),
            Err(ProviderError::Rejected { code, .. }) if code == "isp.bill_not_exist"
        ));
        assert!(matches!(
            parse_bill_url(br#"{"code":"10000","msg":"Success"}"#),
            Err(ProviderError::Unknown(_))
        ));
    }
}
