//! The trade bill: `alipay.data.dataservice.bill.downloadurl.query` (bill_type `trade`) answers
//! a short-lived `bill_download_url` of a zip; its `..._业务明细.csv` (GBK) is what
//! [`parse_statement`] reads, once decoded to UTF-8. That file has `#` header lines, a column
//! header row, one row per trade or refund in China time and yuan, then `#` footer lines
//! (totals, export time). Fields are often padded with tabs or spaces. Columns are found by
//! their header names, never by position.
//!
//! [`AlipayProvider::download_statement`] does the whole walk: the URL query, a plain GET of the
//! zip (unsigned: the URL itself is the credential, valid for 30 seconds), the one entry whose
//! name ends `业务明细.csv` (not the `业务明细(汇总).csv` summary beside it; entry names come
//! in GBK or UTF-8), strict GBK decoding, then [`parse_statement`]. The zip, and the CSV
//! inflated from it, are each bounded by [`STATEMENT_FILE_BYTES_MAX`].

use std::io::{Cursor, Read as _};

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

/// The most we download of a bill zip, and the most we inflate of its detail CSV. A month of one
/// merchant's trades is well below this; more is a broken or hostile answer, refused before it
/// can exhaust memory.
pub const STATEMENT_FILE_BYTES_MAX: usize = 256 << 20;

/// How the trade-detail entry's name ends. The summary beside it ends `业务明细(汇总).csv`.
const DETAIL_ENTRY_SUFFIX: &str = "业务明细.csv";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trade bill line {line}: {reason}")]
pub struct StatementError {
    pub line: usize,
    pub reason: String,
}

/// Why [`AlipayProvider::download_statement`] has no statement to give.
#[derive(Debug, thiserror::Error)]
pub enum DownloadStatementError {
    /// The URL query or the download failed. `Rejected` means asking again now will not help
    /// (`isp.bill_not_exist`: the bill is not ready yet; a malformed date); `Unknown` is a
    /// network failure, a non-200 download, or an answer that does not verify: ask again later.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The zip, or the CSV inflated from it, is over the limit.
    #[error("bill file larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    /// Not a zip, not exactly one detail entry, or an entry that does not inflate.
    #[error("bill archive: {0}")]
    Archive(String),
    /// The detail CSV is not valid GBK.
    #[error("bill encoding: {0}")]
    Encoding(String),
    #[error(transparent)]
    Parse(#[from] StatementError),
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

    /// The day's (`yyyy-MM-dd`) or month's (`yyyy-MM`) trade bill, parsed: [`Self::statement_url`],
    /// a GET of the zip there, its detail CSV decoded from GBK, then [`parse_statement`].
    pub async fn download_statement(
        &self,
        bill_date: &str,
    ) -> Result<Vec<StatementLine>, DownloadStatementError> {
        self.fetch_statement(bill_date, STATEMENT_FILE_BYTES_MAX)
            .await
    }

    /// [`Self::download_statement`] with the size limit as a parameter, so tests can reach it.
    async fn fetch_statement(
        &self,
        bill_date: &str,
        limit_bytes: usize,
    ) -> Result<Vec<StatementLine>, DownloadStatementError> {
        let url = self.statement_url(bill_date).await?;
        // Unsigned: the short-lived URL is the credential. The client's timeout bounds the time.
        let response = self.http.get(&url).send().await.map_err(unknown)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(unknown(format!("bill download answered {status}")).into());
        }
        let zip = read_bounded(response, limit_bytes).await?;
        statement_from_zip(&zip, limit_bytes)
    }
}

fn unknown(err: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unknown(err.to_string())
}

/// Reads the body, refusing it as soon as it is known to exceed `limit_bytes`: by its declared
/// length up front, else by what has arrived.
async fn read_bounded(
    mut response: reqwest::Response,
    limit_bytes: usize,
) -> Result<Vec<u8>, DownloadStatementError> {
    let too_large = || DownloadStatementError::TooLarge { limit_bytes };
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

/// The bill zip to statement lines: the detail entry, GBK, then [`parse_statement`].
fn statement_from_zip(
    zip: &[u8],
    limit_bytes: usize,
) -> Result<Vec<StatementLine>, DownloadStatementError> {
    let csv = detail_csv(zip, limit_bytes)?;
    let text = decode_gbk(&csv)?;
    Ok(parse_statement(&text)?)
}

/// An entry name as Alipay writes it: GBK without the zip's UTF-8 flag, or UTF-8. `None` when it
/// is neither, which is not the entry we want.
fn entry_name(raw: &[u8]) -> Option<String> {
    match std::str::from_utf8(raw) {
        Ok(name) => Some(name.to_owned()),
        Err(_) => encoding_rs::GBK
            .decode_without_bom_handling_and_without_replacement(raw)
            .map(|name| name.into_owned()),
    }
}

fn is_detail_entry(name: &str) -> bool {
    let file_name = name.rsplit(['/', '\\']).next().unwrap_or(name);
    file_name.ends_with(DETAIL_ENTRY_SUFFIX)
}

/// The inflated bytes of the one `..._业务明细.csv` entry. Two such entries would leave the
/// choice to chance, so they are refused like none.
fn detail_csv(zip: &[u8], limit_bytes: usize) -> Result<Vec<u8>, DownloadStatementError> {
    let archive_error = |what: &str, e: &dyn std::fmt::Display| {
        DownloadStatementError::Archive(format!("{what}: {e}"))
    };
    let mut archive =
        zip::ZipArchive::new(Cursor::new(zip)).map_err(|e| archive_error("not a zip", &e))?;
    let details: Vec<usize> = archive
        .file_names_raw()
        .enumerate()
        .filter(|(_, raw)| entry_name(raw).is_some_and(|name| is_detail_entry(&name)))
        .map(|(index, _)| index)
        .collect();
    let &[index] = details.as_slice() else {
        return Err(DownloadStatementError::Archive(format!(
            "{} entries named *{DETAIL_ENTRY_SUFFIX}, expected one",
            details.len()
        )));
    };
    let entry = archive
        .by_index(index)
        .map_err(|e| archive_error("detail entry", &e))?;
    // One byte over the limit is enough to know: the declared size is not trusted.
    let mut csv = Vec::new();
    entry
        .take(
            u64::try_from(limit_bytes)
                .unwrap_or(u64::MAX)
                .saturating_add(1),
        )
        .read_to_end(&mut csv)
        .map_err(|e| archive_error("inflating the detail entry", &e))?;
    if csv.len() > limit_bytes {
        return Err(DownloadStatementError::TooLarge { limit_bytes });
    }
    Ok(csv)
}

/// Strict GBK: a malformed sequence is an error, never a replacement character passing for data.
fn decode_gbk(bytes: &[u8]) -> Result<String, DownloadStatementError> {
    encoding_rs::GBK
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|text| text.into_owned())
        .ok_or_else(|| DownloadStatementError::Encoding("the detail CSV is not valid GBK".into()))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::provider::test_http::{answer, serve};
    use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};

    use super::super::AlipayConfig;
    use super::*;
    use crate::clock::ManualClock;
    use crate::crypto::{RsaSigner, RsaVerifier};

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

    // ---- the zip, GBK and the download ----

    const DETAIL: &str = "20881234567890120156_20190611_业务明细.csv";
    const SUMMARY: &str = "20881234567890120156_20190611_业务明细(汇总).csv";
    const SUMMARY_CSV: &str = "#支付宝业务汇总查询\r\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）\r\n合计,,1,0,12.34,12.30\r\n#导出时间：[2019年06月12日 09:01:02]\r\n";

    fn gbk(text: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
        assert!(!unmappable, "{text:?} is all GBK");
        bytes.into_owned()
    }

    /// A zip of (raw name, content) entries, written in order.
    fn zip_of(method: CompressionMethod, entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in entries {
            let options = SimpleFileOptions::default()
                .compression_method(method)
                .name(name);
            zip.start_file_with_options(options).expect("entry");
            zip.write_all(content).expect("content");
        }
        zip.finish().expect("zip").into_inner()
    }

    /// Alipay's zip: the summary first (so picking the first entry would be wrong), names in
    /// GBK without the UTF-8 flag, contents in GBK.
    fn alipay_zip(detail_csv: &[u8]) -> Vec<u8> {
        zip_of(
            CompressionMethod::Deflated,
            &[
                (&gbk(SUMMARY), &gbk(SUMMARY_CSV)),
                (&gbk(DETAIL), detail_csv),
            ],
        )
    }

    fn paid_line() -> StatementLine {
        StatementLine {
            traded_at: Timestamp::from_unix_s(1_560_218_409),
            provider_trade_no: "2019061122001412341234567890".into(),
            out_trade_no: "01J0000000000000000000PAY1".into(),
            kind: StatementKind::Paid,
            amount_minor: 1234,
            received_minor: 1230,
            refund_request_no: None,
        }
    }

    #[test]
    fn the_detail_entry_is_read_not_the_summary_whatever_the_name_encoding() {
        let detail = gbk(&bill(&[PAID]));
        let lines =
            statement_from_zip(&alipay_zip(&detail), STATEMENT_FILE_BYTES_MAX).expect("gbk names");
        assert_eq!(lines, vec![paid_line()]);
        let utf8_names = zip_of(
            CompressionMethod::Deflated,
            &[
                (SUMMARY.as_bytes(), &gbk(SUMMARY_CSV)),
                (format!("2019-06/{DETAIL}").as_bytes(), &detail),
            ],
        );
        let lines = statement_from_zip(&utf8_names, STATEMENT_FILE_BYTES_MAX).expect("utf-8 names");
        assert_eq!(lines, vec![paid_line()]);
    }

    #[test]
    fn gbk_text_is_decoded_before_parsing() {
        // Chinese in a free-text column, beside the headers and 交易 the parser reads.
        let row = PAID.replacen("Coffee", "咖啡（大杯）", 1);
        let detail = gbk(&bill(&[&row]));
        assert!(
            std::str::from_utf8(&detail).is_err(),
            "the test bytes are GBK"
        );
        let lines =
            statement_from_zip(&alipay_zip(&detail), STATEMENT_FILE_BYTES_MAX).expect("bill");
        assert_eq!(lines, vec![paid_line()]);
    }

    #[test]
    fn a_malformed_gbk_byte_is_an_error_not_a_replacement() {
        let mut detail = gbk(&bill(&[PAID]));
        let at = detail
            .windows(6)
            .position(|w| w == b"Coffee")
            .expect("subject");
        // 0xFF is never a GBK byte.
        detail[at] = 0xFF;
        let err = statement_from_zip(&alipay_zip(&detail), STATEMENT_FILE_BYTES_MAX)
            .expect_err("malformed");
        assert!(matches!(err, DownloadStatementError::Encoding(_)), "{err}");
    }

    #[test]
    fn bad_archives_are_errors() {
        let archive_error = |zip: &[u8]| {
            matches!(
                statement_from_zip(zip, STATEMENT_FILE_BYTES_MAX),
                Err(DownloadStatementError::Archive(_))
            )
        };
        assert!(archive_error(b"PK\x03\x04 not really a zip"));
        assert!(archive_error(b""));
        let detail = gbk(&bill(&[PAID]));
        let summary_only = zip_of(
            CompressionMethod::Deflated,
            &[(&gbk(SUMMARY), &gbk(SUMMARY_CSV))],
        );
        assert!(archive_error(&summary_only), "no detail entry");
        let two_details = zip_of(
            CompressionMethod::Deflated,
            &[
                (&gbk(DETAIL), &detail),
                (&gbk(&DETAIL.replace("0611", "0612")), &detail),
            ],
        );
        assert!(archive_error(&two_details), "which one?");
        // A stored entry with one byte flipped fails its CRC.
        let mut corrupt = zip_of(CompressionMethod::Stored, &[(&gbk(DETAIL), &detail)]);
        let at = corrupt
            .windows(6)
            .position(|w| w == b"Coffee")
            .expect("stored content");
        corrupt[at] = b'c';
        assert!(archive_error(&corrupt), "CRC mismatch");
    }

    #[test]
    fn the_inflated_csv_is_bounded() {
        let detail = gbk(&bill(&[PAID]));
        let zip = alipay_zip(&detail);
        assert!(statement_from_zip(&zip, detail.len()).is_ok());
        assert!(matches!(
            statement_from_zip(&zip, detail.len() - 1),
            Err(DownloadStatementError::TooLarge { .. })
        ));
        // A small zip that inflates to far more than it weighs.
        let zeros = vec![b'0'; 4 << 20];
        let bomb = zip_of(CompressionMethod::Deflated, &[(&gbk(DETAIL), &zeros)]);
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            statement_from_zip(&bomb, 1 << 20),
            Err(DownloadStatementError::TooLarge { limit_bytes }) if limit_bytes == 1 << 20
        ));
    }

    /// A canned answer with its content type, the length declared or not.
    fn http_answer(status: u16, content_type: &str, body: &[u8], declare_length: bool) -> Vec<u8> {
        answer(
            status,
            &[("Content-Type", content_type)],
            body,
            declare_length.then_some(body.len()),
        )
    }

    /// A provider whose gateway is a local listener, and the key that signs as Alipay.
    async fn local_provider() -> (AlipayProvider, RsaSigner, tokio::net::TcpListener, String) {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
        let private: Pkcs8V1Der<'_> = key.as_der().expect("pkcs8");
        let public: PublicKeyX509Der<'_> = key.public_key().as_der().expect("spki");
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let config = AlipayConfig {
            gateway_url: format!("{base}/gateway.do"),
            app_id: "2021000000000001".into(),
            seller_id: None,
            // One key plays both sides: the local gateway checks nothing.
            app_private_key: RsaSigner::from_pem(&pem).expect("signer"),
            alipay_public_key: RsaVerifier::from_der(public.as_ref()).expect("verifier"),
            notify_url: "https://pay.example.com/callbacks/alipay".into(),
            timeout: Duration::from_secs(5),
        };
        let clock = Arc::new(ManualClock::at(Timestamp::from_unix_s(1_560_300_000)));
        let provider = AlipayProvider::new(config, clock).expect("provider");
        (
            provider,
            RsaSigner::from_pem(&pem).expect("signer"),
            listener,
            base,
        )
    }

    /// The gateway's signed answer to the bill URL query.
    fn bill_url_answer(alipay: &RsaSigner, value: &str) -> Vec<u8> {
        let sign = alipay.sign_base64(value.as_bytes());
        let body = format!(
            r#"{{"alipay_data_dataservice_bill_downloadurl_query_response":{value},"sign":"{sign}"}}"#
        );
        http_answer(200, "application/json;charset=utf-8", body.as_bytes(), true)
    }

    #[tokio::test]
    async fn download_statement_queries_fetches_and_parses() {
        let (provider, alipay, listener, base) = local_provider().await;
        let zip = alipay_zip(&gbk(&bill(&[PAID, REFUND])));
        let url_answer = bill_url_answer(
            &alipay,
            &format!(
                r#"{{"code":"10000","msg":"Success","bill_download_url":"{base}/bill.zip?token=T1"}}"#
            ),
        );
        let server = serve(
            listener,
            vec![url_answer, http_answer(200, "application/zip", &zip, true)],
        );
        let lines = provider
            .download_statement("2019-06-11")
            .await
            .expect("statement");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], paid_line());
        assert_eq!(lines[1].amount_minor, -500);
        let heads = crate::provider::test_http::heads(server).await;
        assert!(
            heads[0].starts_with("POST /gateway.do?charset=utf-8 "),
            "{}",
            heads[0]
        );
        assert!(
            heads[1].starts_with("GET /bill.zip?token=T1 "),
            "{}",
            heads[1]
        );
        assert!(
            !heads[1].to_ascii_lowercase().contains("authorization"),
            "the download is unsigned"
        );
    }

    #[tokio::test]
    async fn the_download_is_bounded_and_failures_keep_their_meaning() {
        let (provider, alipay, listener, base) = local_provider().await;
        let zip = alipay_zip(&gbk(&bill(&[PAID])));
        let url_answer = bill_url_answer(
            &alipay,
            &format!(r#"{{"code":"10000","msg":"Success","bill_download_url":"{base}/bill.zip"}}"#),
        );
        let not_ready = bill_url_answer(
            &alipay,
            r#"{"code":"40004","msg":"Business Failed","sub_code":"isp.bill_not_exist","sub_msg":"bill not exist"}"#,
        );
        let server = serve(
            listener,
            vec![
                url_answer.clone(),
                http_answer(200, "application/zip", &zip, true),
                url_answer.clone(),
                http_answer(200, "application/zip", &zip, false),
                url_answer,
                http_answer(503, "text/plain", b"busy", true),
                not_ready,
            ],
        );
        let limit = zip.len() - 1;
        for declared in [true, false] {
            let err = provider
                .fetch_statement("2019-06-11", limit)
                .await
                .expect_err("too large");
            assert!(
                matches!(err, DownloadStatementError::TooLarge { limit_bytes } if limit_bytes == limit),
                "declared length {declared}: {err}"
            );
        }
        assert!(matches!(
            provider.download_statement("2019-06-11").await,
            Err(DownloadStatementError::Provider(ProviderError::Unknown(_)))
        ));
        assert!(matches!(
            provider.download_statement("2019-06-11").await,
            Err(DownloadStatementError::Provider(ProviderError::Rejected { code, .. })) if code == "isp.bill_not_exist"
        ));
        assert!(matches!(
            provider.download_statement("2019-6-11").await,
            Err(DownloadStatementError::Provider(
                ProviderError::Rejected { .. }
            ))
        ));
        assert_eq!(server.await.expect("server").len(), 7);
    }
}
