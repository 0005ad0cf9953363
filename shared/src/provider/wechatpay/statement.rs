//! The trade bill (`GET /v3/bill/tradebill`, then its `download_url`): CSV in Beijing time and
//! yuan, each data field prefixed with a backtick so spreadsheets keep it as text, followed by a
//! summary section. Columns differ by bill type (ALL, SUCCESS, REFUND), so they are found by
//! their header names, never by position.

use time::PrimitiveDateTime;
use time::macros::{format_description, offset};

use crate::domain::{Currency, Timestamp};

/// More lines than this is not one merchant's day; parsing stops with an error.
pub const STATEMENT_LINES_MAX: usize = 2_000_000;

/// The header of the summary section, which ends the per-trade lines.
const SUMMARY_HEADER: &str = "总交易单数";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trade bill line {line}: {reason}")]
pub struct StatementError {
    pub line: usize,
    pub reason: String,
}

/// What a bill line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Paid,
    Refund,
    Revoked,
}

/// One trade-bill line, amounts in fen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub traded_at: Timestamp,
    pub mchid: String,
    /// WeChat Pay's transaction id.
    pub provider_trade_no: String,
    /// Our payment id when the order is ours; other systems on the same merchant id may use
    /// other formats, so it is left for reconciliation to parse.
    pub out_trade_no: String,
    pub kind: StatementKind,
    pub currency: Currency,
    /// The order total (订单金额), the amount notifications and queries report.
    pub amount_minor: i64,
    /// Refund lines only: our refund id and the refund asked for (申请退款金额).
    pub refund: Option<(String, i64)>,
}

/// Where each column we read sits in this bill.
struct Columns {
    traded_at: usize,
    mchid: usize,
    trade_no: usize,
    out_trade_no: usize,
    state: usize,
    currency: usize,
    amount: usize,
    refund_id: Option<usize>,
    refund_amount: Option<usize>,
    count: usize,
}

impl Columns {
    fn from_header(header: &str) -> Result<Self, String> {
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        let need = |name: &str| find(name).ok_or_else(|| format!("no column {name}"));
        Ok(Self {
            traded_at: need("交易时间")?,
            mchid: need("商户号")?,
            trade_no: need("微信订单号")?,
            out_trade_no: need("商户订单号")?,
            state: need("交易状态")?,
            currency: need("货币种类")?,
            amount: need("订单金额")?,
            refund_id: find("商户退款单号"),
            refund_amount: find("申请退款金额"),
            count: names.len(),
        })
    }
}

/// Parses a trade bill. Stops at the summary section; an empty bill is an empty list.
pub fn parse_statement(text: &str) -> Result<Vec<StatementLine>, StatementError> {
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .enumerate()
        .map(|(i, l)| (i + 1, l));
    let (_, header) = lines.next().ok_or_else(|| StatementError {
        line: 1,
        reason: "empty bill".into(),
    })?;
    let columns =
        Columns::from_header(header).map_err(|reason| StatementError { line: 1, reason })?;
    let mut parsed = Vec::new();
    let mut last = 1;
    for (number, line) in lines.take(STATEMENT_LINES_MAX) {
        last = number;
        if line.starts_with(SUMMARY_HEADER) {
            return Ok(parsed);
        }
        if line.is_empty() {
            continue;
        }
        let entry = parse_line(&columns, line).map_err(|reason| StatementError {
            line: number,
            reason,
        })?;
        parsed.push(entry);
    }
    // A bill without its summary was cut short: never take it as complete.
    Err(StatementError {
        line: last,
        reason: format!("no summary section within {STATEMENT_LINES_MAX} lines"),
    })
}

/// Splits on ",`" rather than ",": product names may hold commas, and every field starts with
/// a backtick.
fn fields(line: &str) -> Result<Vec<&str>, String> {
    let rest = line
        .strip_prefix('`')
        .ok_or("data fields must start with a backtick")?;
    Ok(rest.split(",`").collect())
}

fn parse_line(columns: &Columns, line: &str) -> Result<StatementLine, String> {
    let fields = fields(line)?;
    if fields.len() != columns.count {
        return Err(format!(
            "{} fields, the header has {}",
            fields.len(),
            columns.count
        ));
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let yuan = |i: usize| {
        Currency::Cny
            .parse_major(field(i))
            .map_err(|e| format!("amount {:?}: {e}", field(i)))
    };
    let kind = match field(columns.state) {
        "SUCCESS" => StatementKind::Paid,
        "REFUND" => StatementKind::Refund,
        "REVOKED" => StatementKind::Revoked,
        other => return Err(format!("unknown trade state {other:?}")),
    };
    let refund = match (kind, columns.refund_id, columns.refund_amount) {
        (StatementKind::Refund, Some(id), Some(amount)) => {
            Some((field(id).to_owned(), yuan(amount)?))
        }
        (StatementKind::Refund, _, _) => return Err("refund line without refund columns".into()),
        _ => None,
    };
    Ok(StatementLine {
        traded_at: beijing_time(field(columns.traded_at))?,
        mchid: field(columns.mchid).to_owned(),
        provider_trade_no: field(columns.trade_no).to_owned(),
        out_trade_no: field(columns.out_trade_no).to_owned(),
        kind,
        currency: Currency::parse(field(columns.currency))
            .map_err(|_| format!("currency {:?}", field(columns.currency)))?,
        amount_minor: yuan(columns.amount)?,
        refund,
    })
}

/// `2019-06-11 00:00:07`, Beijing time.
fn beijing_time(text: &str) -> Result<Timestamp, String> {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let local =
        PrimitiveDateTime::parse(text, &format).map_err(|e| format!("time {text:?}: {e}"))?;
    Ok(Timestamp::from_unix_s(
        local.assume_offset(offset!(+8)).unix_timestamp(),
    ))
}
