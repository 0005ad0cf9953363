//! Settlement files: the file transfer (txnType 76, fileType 00), posted to its own host,
//! answers a day's files as `fileContent`: base64 of a zlib stream (`java.util.zip.Deflater`)
//! of a ZIP archive. Its `INN<yyMMdd>88ZM_<merId>` entry is the merchant's transaction file (全渠道
//! 一般交易流水, "ZM"): GBK text, one fixed-width record per line, each field followed by one
//! space, then a reserved tail that may be shorter or absent.
//!
//! - Widths are in bytes of GBK, so a line is cut into fields as bytes and each field is decoded
//!   on its own; a field that is not GBK (or a cut through a character) is an error.
//! - The request names the settle date as `MMDD` only, so the caller names the full date and
//!   the year of each record's `txnTime` (`MMDDhhmmss`, China time) comes from it: a month-day
//!   after the settle date's is in the year before (a 12-31 consume settled on 01-01).
//! - `respCode` 98 (the file is not there yet) and the other refusals are `Rejected`; transport
//!   failures, 5xx, processing codes and unverifiable answers are `Unknown`; an authentic file
//!   that does not unpack or parse is [`DownloadError::BadFile`] or [`DownloadError::BadLine`],
//!   never a partial list.
//! - Records are classified by `txnType`: 01 consume, 04 refund, 31 consume cancel. Any other
//!   type is kept as [`StatementKind::Other`] with its `txnType`, for reconciliation to flag,
//!   rather than failing the whole day.

use std::borrow::Cow;
use std::io::{Cursor, Read};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::read::ZlibDecoder;
use time::macros::offset;
use time::{Date, Month, PrimitiveDateTime, Time};

use super::sign::Fields;
use super::wire::{self, Merchant, RespClass};
use super::{UnionPayProvider, not_sent};
use crate::domain::Timestamp;
use crate::ports::ProviderError;

/// txnType and txnSubType of the file transfer.
pub const FILE_TXN_TYPE: &str = "76";
pub const FILE_TXN_SUB_TYPE: &str = "01";
/// fileType 00: the merchant's ordinary settlement files.
pub const FILE_TYPE: &str = "00";
/// A day's files can take a while; this replaces the payment calls' short timeout.
pub const FILE_TIMEOUT: Duration = Duration::from_secs(120);
/// More lines than this is not one merchant's day; parsing stops with an error.
pub const STATEMENT_LINES_MAX: usize = 2_000_000;

/// Each field of a ZM record: its name and its width in bytes of GBK, in order.
const LAYOUT: [(&str, usize); 40] = [
    ("tradeNo", 3),
    ("acqInsCode", 11),
    ("sendInsCode", 11),
    ("traceNo", 6),
    ("txnTime", 10),
    ("payCardNo", 19),
    ("txnAmt", 12),
    ("merCatCode", 4),
    ("termType", 2),
    ("queryId", 21),
    ("oldPayType", 2),
    ("orderId", 32),
    ("payCardType", 2),
    ("origTradeSysTraceNo", 6),
    ("origTradeTime", 10),
    ("merCharge", 13),
    ("settleAmt", 13),
    ("payType", 4),
    ("groupMerCode", 15),
    ("txnType", 2),
    ("txnSubType", 2),
    ("bizType", 6),
    ("accType", 2),
    ("billType", 4),
    ("billNo", 32),
    ("interactMode", 1),
    ("origQryId", 21),
    ("merId", 15),
    ("accountType", 1),
    ("subMerId", 15),
    ("subMerAbbr", 32),
    ("subMerAcccountAmt", 13),
    ("settleNetAmt", 13),
    ("termId", 8),
    ("merReserved", 32),
    ("discountAmt", 13),
    ("invoiceAmt", 13),
    ("insAdditionCharge", 12),
    ("installmentNum", 2),
    ("tradeMedia", 1),
];

// Positions in LAYOUT of the fields we read.
const TXN_TIME: usize = 4;
const TXN_AMT: usize = 6;
const QUERY_ID: usize = 9;
const ORDER_ID: usize = 11;
const MER_CHARGE: usize = 15;
const SETTLE_AMT: usize = 16;
const TXN_TYPE: usize = 19;
const TXN_SUB_TYPE: usize = 20;
const ORIG_QRY_ID: usize = 26;
const MER_ID: usize = 27;
const SUB_MER_ABBR: usize = 30;

/// A record up to and including the space after its last field.
pub const RECORD_BYTES: usize = record_bytes();

const fn record_bytes() -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < LAYOUT.len() {
        total += LAYOUT[i].1 + 1;
        i += 1;
    }
    total
}

/// The reserved tail after the last field: 131 bytes in the specification, absent or shorter
/// in practice; anything longer than this is not a ZM record.
const RESERVED_BYTES_MAX: usize = 256;

/// Bounds on what unpacking may produce, so a small answer cannot inflate without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// The ZIP archive, once the zlib layer is inflated.
    pub zip_bytes_max: u64,
    /// The ZM entry, once unzipped.
    pub entry_bytes_max: u64,
}

impl UnpackLimits {
    /// A 64 MiB answer holds at most 48 MiB of zlib over an already deflated archive, so the
    /// archive bound leaves room; the entry bound is well over a million records.
    pub const DEFAULT: Self = Self {
        zip_bytes_max: 128 * 1024 * 1024,
        entry_bytes_max: 512 * 1024 * 1024,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ZM file line {line}: {reason}")]
pub struct StatementError {
    pub line: usize,
    pub reason: String,
}

/// Why a day's statement could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// Not sent (a bad date), refused (`respCode` 98: not there yet), or unknown.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// An authentic answer whose file does not unpack: base64, zlib, ZIP, no ZM entry, size.
    #[error("UnionPay settlement file {file_name:?}: {reason}")]
    BadFile { file_name: String, reason: String },
    /// The ZM entry has a record we cannot read.
    #[error("UnionPay settlement file {file_name:?}: {error}")]
    BadLine {
        file_name: String,
        error: StatementError,
    },
}

/// What a record records, by its `txnType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// 01: a consume, our payment paid.
    Paid,
    /// 04: a refund of a consume.
    Refund,
    /// 31: a same-day consume cancel (消费撤销).
    Cancel,
    /// Any other txnType (see [`StatementLine::txn_type`]): kept for reconciliation to flag.
    Other,
}

/// One ZM record, amounts in fen (CNY: the file has no currency field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// `txnTime`, China time, its year taken from the settle date.
    pub traded_at: Timestamp,
    /// `queryId`: UnionPay's id of this transaction.
    pub provider_trade_no: String,
    /// `orderId`, trimmed: our payment id on a consume, our refund or cancel id on those.
    pub out_trade_no: String,
    pub kind: StatementKind,
    /// `txnType` and `txnSubType` as written.
    pub txn_type: String,
    pub txn_sub_type: String,
    /// `txnAmt`: never negative; the kind says which way the money went.
    pub amount_minor: i64,
    /// `settleAmt`, signed: credit (C) to the merchant positive, debit (D) negative.
    pub settle_minor: i64,
    /// `merCharge` (the merchant's fee), signed as written: C positive, D negative.
    pub fee_minor: i64,
    /// `origQryId`, trimmed: the consume a refund or cancel reverses; `None` when blank.
    pub orig_query_id: Option<String>,
    pub mer_id: String,
    /// `subMerAbbr`, trimmed (GBK in the file, so often Chinese).
    pub sub_mer_abbr: String,
}

/// The file the transfer answered: its name and the still packed `fileContent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementFile {
    pub file_name: String,
    pub file_content: String,
}

/// `MMDD` of a settle date, as `settleDate` names it.
fn mmdd(date: Date) -> String {
    format!("{:02}{:02}", u8::from(date.month()), date.day())
}

/// A bill date `yyyy-MM-dd`; anything else is refused before anything is sent.
pub fn parse_bill_date(text: &str) -> Result<Date, ProviderError> {
    let refuse = || ProviderError::Rejected {
        code: "INVALID_BILL_DATE".into(),
        message: format!("bill date {text:?} is not yyyy-MM-dd"),
    };
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return Err(refuse());
    }
    let number = |range: std::ops::Range<usize>| text.get(range).and_then(|t| t.parse().ok());
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return Err(refuse());
    };
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(refuse)?;
    let day = u8::try_from(day).map_err(|_| refuse())?;
    Date::from_calendar_date(year, month, day).map_err(|_| refuse())
}

/// The unsigned file transfer request for `settle_date`'s files.
pub fn file_request_fields(
    merchant: &Merchant<'_>,
    settle_date: Date,
    now: Timestamp,
) -> Result<Fields, String> {
    let txn_time = wire::china_time(now).ok_or_else(|| format!("clock {now} out of range"))?;
    let mut fields = wire::common_fields(merchant, FILE_TXN_TYPE, FILE_TXN_SUB_TYPE);
    for (key, value) in [
        ("fileType", FILE_TYPE.to_owned()),
        ("settleDate", mmdd(settle_date)),
        ("txnTime", txn_time),
    ] {
        fields.insert(key.to_owned(), value);
    }
    Ok(fields)
}

/// Reads an authenticated answer to [`file_request_fields`]; takes the fields by value so
/// the (large) `fileContent` is moved, not copied.
pub fn file_outcome(
    mut fields: Fields,
    mer_id: &str,
    settle_date: Date,
) -> Result<SettlementFile, ProviderError> {
    let unknown = |message: String| ProviderError::Unknown(message);
    for (key, expected) in [
        ("merId", mer_id.to_owned()),
        ("settleDate", mmdd(settle_date)),
    ] {
        if wire::field(&fields, key).is_some_and(|echoed| echoed != expected) {
            return Err(unknown(format!("file answer {key} is not {expected}")));
        }
    }
    match wire::resp_code(&fields)? {
        (_, RespClass::Success) => {}
        (code, RespClass::Processing) => {
            return Err(unknown(format!("file transfer answered {code}")));
        }
        // 98 (no file yet) lands here, as do the other definite refusals.
        (code, RespClass::NotFound | RespClass::Failed) => {
            return Err(wire::rejected(&fields, code));
        }
    }
    let file_content = fields
        .remove("fileContent")
        .filter(|content| !content.is_empty())
        .ok_or_else(|| unknown("file transfer accepted without fileContent".into()))?;
    Ok(SettlementFile {
        file_name: fields.remove("fileName").unwrap_or_default(),
        file_content,
    })
}

/// Reads `reader` to its end, or fails once it gives more than `bytes_max` bytes.
fn read_at_most(reader: impl Read, bytes_max: u64, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader
        .take(bytes_max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("{what}: {e}"))?;
    if u64::try_from(out.len()).map_or(true, |len| len > bytes_max) {
        return Err(format!("{what} is larger than {bytes_max} bytes"));
    }
    Ok(out)
}

/// The index of the one ZM entry: its base name starts with `INN` and holds `ZM_` (names are
/// matched as bytes, whatever their encoding).
fn zm_entry(archive: &zip::ZipArchive<Cursor<Vec<u8>>>) -> Result<usize, String> {
    let mut found = None;
    for (index, raw_name) in archive.file_names_raw().enumerate() {
        let base = raw_name.rsplit(|b| *b == b'/').next().unwrap_or(raw_name);
        if base.starts_with(b"INN") && base.windows(3).any(|w| w == b"ZM_") {
            if found.is_some() {
                return Err("more than one INN...ZM_ entry".into());
            }
            found = Some(index);
        }
    }
    found.ok_or_else(|| "no INN...ZM_ entry in the archive".into())
}

/// `fileContent` -> the bytes of its ZM entry: base64, then zlib, then the ZIP archive, each
/// step bounded by `limits`.
pub fn unpack(file_content: &str, limits: UnpackLimits) -> Result<Vec<u8>, String> {
    // Some encoders wrap base64 lines; the breaks carry nothing.
    let base64: Vec<u8> = file_content
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let deflated = STANDARD
        .decode(&base64)
        .map_err(|e| format!("fileContent is not base64: {e}"))?;
    let archive = read_at_most(
        ZlibDecoder::new(deflated.as_slice()),
        limits.zip_bytes_max,
        "the zlib stream",
    )?;
    let mut archive = zip::ZipArchive::new(Cursor::new(archive))
        .map_err(|e| format!("not a ZIP archive: {e}"))?;
    let index = zm_entry(&archive)?;
    let entry = archive
        .by_index(index)
        .map_err(|e| format!("the ZM entry: {e}"))?;
    if entry.size() > limits.entry_bytes_max {
        return Err(format!(
            "the ZM entry is larger than {} bytes",
            limits.entry_bytes_max
        ));
    }
    // The declared size may lie; the read is bounded on its own, and checks the CRC at its end.
    read_at_most(entry, limits.entry_bytes_max, "the ZM entry")
}

/// Parses a ZM file of `settle_date`. Blank lines are skipped; an empty file is an empty day.
pub fn parse_statement(zm: &[u8], settle_date: Date) -> Result<Vec<StatementLine>, StatementError> {
    let mut parsed = Vec::new();
    for (index, line) in zm.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        if number > STATEMENT_LINES_MAX {
            return Err(StatementError {
                line: number,
                reason: format!("more than {STATEMENT_LINES_MAX} lines"),
            });
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry = parse_line(line, settle_date).map_err(|reason| StatementError {
            line: number,
            reason,
        })?;
        parsed.push(entry);
    }
    Ok(parsed)
}

/// A record's fields, decoded from GBK one by one.
struct Record<'a> {
    fields: Vec<Cow<'a, str>>,
}

impl Record<'_> {
    /// Cuts a line into its fields by byte width, checking each separator.
    fn split(line: &[u8]) -> Result<Record<'_>, String> {
        let mut fields = Vec::with_capacity(LAYOUT.len());
        let mut rest = line;
        let mut offset = 0;
        let short = |name: &str| {
            format!(
                "{} bytes, shorter than a record ({RECORD_BYTES}): it ends at {name}",
                line.len()
            )
        };
        for (i, (name, width)) in LAYOUT.iter().enumerate() {
            let (value, after) = rest.split_at_checked(*width).ok_or_else(|| short(name))?;
            let last = i + 1 == LAYOUT.len();
            rest = match after.split_first() {
                Some((b' ', tail)) => tail,
                None if last => after,
                None => return Err(short(name)),
                Some(_) => {
                    return Err(format!(
                        "no space after {name} at byte {}",
                        offset + width + 1
                    ));
                }
            };
            offset += width + 1;
            fields.push(gbk(value).ok_or_else(|| format!("{name} is not GBK text"))?);
        }
        if rest.len() > RESERVED_BYTES_MAX {
            return Err(format!(
                "{} bytes after the last field, more than {RESERVED_BYTES_MAX}",
                rest.len()
            ));
        }
        gbk(rest).ok_or("the reserved tail is not GBK text")?;
        Ok(Record { fields })
    }

    fn get(&self, index: usize) -> &str {
        self.fields.get(index).map_or("", |field| field.as_ref())
    }

    fn trimmed(&self, index: usize) -> &str {
        self.get(index).trim()
    }

    fn name(index: usize) -> &'static str {
        LAYOUT.get(index).map_or("?", |(name, _)| name)
    }

    /// A 12-digit amount in fen.
    fn fen(&self, index: usize) -> Result<i64, String> {
        let text = self.get(index);
        wire::parse_fen(text)
            .filter(|_| text.len() == 12)
            .ok_or_else(|| format!("{} {text:?} is not 12 digits of fen", Self::name(index)))
    }

    /// A 13-wide amount: `C` (credit) or `D` (debit), then 12 digits of fen.
    fn signed_fen(&self, index: usize) -> Result<i64, String> {
        let text = self.get(index);
        let bad = || {
            format!(
                "{} {text:?} is not C or D and 12 digits of fen",
                Self::name(index)
            )
        };
        let (sign, digits) = text.split_at_checked(1).ok_or_else(bad)?;
        let fen = wire::parse_fen(digits)
            .filter(|_| digits.len() == 12)
            .ok_or_else(bad)?;
        match sign {
            "C" => Ok(fen),
            "D" => Ok(-fen),
            _ => Err(bad()),
        }
    }
}

/// GBK text, strictly: malformed bytes are `None`, never replaced.
fn gbk(bytes: &[u8]) -> Option<Cow<'_, str>> {
    encoding_rs::GBK.decode_without_bom_handling_and_without_replacement(bytes)
}

fn parse_line(line: &[u8], settle_date: Date) -> Result<StatementLine, String> {
    let record = Record::split(line)?;
    let txn_type = record.trimmed(TXN_TYPE);
    let kind = match txn_type {
        "01" => StatementKind::Paid,
        "04" => StatementKind::Refund,
        "31" => StatementKind::Cancel,
        _ => StatementKind::Other,
    };
    let provider_trade_no = record.trimmed(QUERY_ID);
    if provider_trade_no.is_empty() {
        return Err("blank queryId".into());
    }
    let orig_query_id = Some(record.trimmed(ORIG_QRY_ID))
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    Ok(StatementLine {
        traded_at: traded_at(record.get(TXN_TIME), settle_date)?,
        provider_trade_no: provider_trade_no.to_owned(),
        out_trade_no: record.trimmed(ORDER_ID).to_owned(),
        kind,
        txn_type: txn_type.to_owned(),
        txn_sub_type: record.trimmed(TXN_SUB_TYPE).to_owned(),
        amount_minor: record.fen(TXN_AMT)?,
        settle_minor: record.signed_fen(SETTLE_AMT)?,
        fee_minor: record.signed_fen(MER_CHARGE)?,
        orig_query_id,
        mer_id: record.trimmed(MER_ID).to_owned(),
        sub_mer_abbr: record.trimmed(SUB_MER_ABBR).to_owned(),
    })
}

/// `MMDDhhmmss` in China time. A transaction is never settled before it happened, so a
/// month-day later in the year than the settle date's is in the year before.
fn traded_at(text: &str, settle_date: Date) -> Result<Timestamp, String> {
    let bad = |why: &str| format!("txnTime {text:?}: {why}");
    if text.len() != 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not MMDDhhmmss"));
    }
    let two = |at: usize| {
        text.get(at..at + 2)
            .and_then(|t| t.parse::<u8>().ok())
            .unwrap_or(u8::MAX)
    };
    let (month, day) = (two(0), two(2));
    let year = if (month, day) > (u8::from(settle_date.month()), settle_date.day()) {
        settle_date.year() - 1
    } else {
        settle_date.year()
    };
    let date = Month::try_from(month)
        .ok()
        .and_then(|month| Date::from_calendar_date(year, month, day).ok())
        .ok_or_else(|| bad(&format!("no such day in {year}")))?;
    let time = Time::from_hms(two(4), two(6), two(8)).map_err(|_| bad("no such time"))?;
    Ok(Timestamp::from_unix_s(
        PrimitiveDateTime::new(date, time)
            .assume_offset(offset!(+8))
            .unix_timestamp(),
    ))
}

/// The lines of an authentic settlement file: unpacked within `limits`, then parsed.
pub fn read_file(
    file: &SettlementFile,
    settle_date: Date,
    limits: UnpackLimits,
) -> Result<Vec<StatementLine>, DownloadError> {
    let zm = unpack(&file.file_content, limits).map_err(|reason| DownloadError::BadFile {
        file_name: file.file_name.clone(),
        reason,
    })?;
    parse_statement(&zm, settle_date).map_err(|error| DownloadError::BadLine {
        file_name: file.file_name.clone(),
        error,
    })
}

impl UnionPayProvider {
    /// The ZM records settled on `bill_date` (`yyyy-MM-dd`, China time), from the file
    /// transfer host. A day's files are ready the next morning; before that UnionPay answers
    /// 98, a `Rejected`.
    pub async fn download_statement(
        &self,
        bill_date: &str,
    ) -> Result<Vec<StatementLine>, DownloadError> {
        let settle_date = parse_bill_date(bill_date)?;
        let fields = file_request_fields(&self.merchant(), settle_date, self.clock.now())
            .map_err(not_sent)?;
        let answer = self
            .send(
                &self.file_url,
                fields,
                wire::FILE_ANSWER_BYTES_MAX,
                Some(FILE_TIMEOUT),
            )
            .await?;
        let file = file_outcome(answer, &self.config.mer_id, settle_date)?;
        read_file(&file, settle_date, UnpackLimits::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Arc;

    use crate::provider::test_http;
    use flate2::Compression;
    use flate2::write::ZlibEncoder;
    use zip::write::SimpleFileOptions;

    use super::super::sign;
    use super::super::test_pki::{self, COMPANY, MERCHANT_SERIAL, pki};
    use super::super::{UnionPayConfig, cert_serial_decimal};
    use super::*;
    use crate::clock::ManualClock;
    use crate::crypto::{RsaSigner, RsaVerifier};

    const MER_ID: &str = "777290058167151";

    /// The widths again, typed from the specification independently of `LAYOUT`.
    const WIDTHS: [usize; 40] = [
        3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1,
        21, 15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1,
    ];

    /// A paid consume, by field position.
    const PAID: [(usize, &str); 20] = [
        (0, "S22"),
        (1, "00010000"),
        (3, "123456"),
        (4, "1129103000"),
        (5, "6216***********0018"),
        (6, "000000001010"),
        (9, "512511291030001234567"),
        (11, "01KB00000000000000000000PAY1"),
        (15, "D000000000006"),
        (16, "C000000001010"),
        (19, "01"),
        (20, "07"),
        (21, "000000"),
        (27, MER_ID),
        (30, "银联测试商户"),
        (31, "C000000000000"),
        (32, "C000000001004"),
        (35, "C000000000000"),
        (36, "C000000000000"),
        (39, "0"),
    ];

    fn date(text: &str) -> Date {
        parse_bill_date(text).expect("date")
    }

    /// A record: [`PAID`] with `changes`, each value GBK and space-padded to its width, each
    /// field followed by one space, then `tail`.
    fn record(changes: &[(usize, &str)], tail: &[u8]) -> Vec<u8> {
        let mut line = Vec::new();
        for (i, width) in WIDTHS.iter().enumerate() {
            let text = changes
                .iter()
                .chain(PAID.iter())
                .find(|(at, _)| *at == i)
                .map_or("", |(_, text)| text);
            let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
            assert!(!unmappable && bytes.len() <= *width, "field {i}: {text:?}");
            line.extend_from_slice(&bytes);
            line.resize(line.len() + width - bytes.len(), b' ');
            line.push(b' ');
        }
        line.extend_from_slice(tail);
        line
    }

    fn file(lines: &[Vec<u8>]) -> Vec<u8> {
        lines.join(&b"\r\n"[..])
    }

    fn paid_line() -> StatementLine {
        StatementLine {
            // 2025-11-29 10:30:00 +08:00
            traded_at: Timestamp::from_unix_s(1_764_383_400),
            provider_trade_no: "512511291030001234567".into(),
            out_trade_no: "01KB00000000000000000000PAY1".into(),
            kind: StatementKind::Paid,
            txn_type: "01".into(),
            txn_sub_type: "07".into(),
            amount_minor: 1010,
            settle_minor: 1010,
            fee_minor: -6,
            orig_query_id: None,
            mer_id: MER_ID.into(),
            sub_mer_abbr: "银联测试商户".into(),
        }
    }

    #[test]
    fn a_record_is_476_bytes_before_its_reserved_tail() {
        assert_eq!(RECORD_BYTES, 476);
        assert_eq!(LAYOUT.map(|(_, width)| width), WIDTHS);
        assert_eq!(record(&[], b"").len(), 476);
    }

    #[test]
    fn parses_consumes_refunds_and_cancels_exactly() {
        let refund = record(
            &[
                (0, "S30"),
                (4, "1129180000"),
                (6, "000000000500"),
                (9, "512511291800009876543"),
                (11, "REFUND01"),
                (15, "C000000000003"),
                (16, "D000000000500"),
                (19, "04"),
                (20, "00"),
                (26, "512511291030001234567"),
            ],
            b"",
        );
        let cancel = record(
            &[
                (9, "512511291900001111111"),
                (11, "CANCEL01"),
                (16, "D000000001010"),
                (19, "31"),
                (20, "00"),
                (26, "512511291030001234567"),
            ],
            b"",
        );
        let lines = parse_statement(
            &file(&[record(&[], &[b' '; 131]), refund, cancel]),
            date("2025-11-29"),
        )
        .expect("file");
        let refund_line = StatementLine {
            traded_at: Timestamp::from_unix_s(1_764_410_400),
            provider_trade_no: "512511291800009876543".into(),
            out_trade_no: "REFUND01".into(),
            kind: StatementKind::Refund,
            txn_type: "04".into(),
            txn_sub_type: "00".into(),
            amount_minor: 500,
            settle_minor: -500,
            fee_minor: 3,
            orig_query_id: Some("512511291030001234567".into()),
            ..paid_line()
        };
        let cancel_line = StatementLine {
            provider_trade_no: "512511291900001111111".into(),
            out_trade_no: "CANCEL01".into(),
            kind: StatementKind::Cancel,
            txn_type: "31".into(),
            txn_sub_type: "00".into(),
            settle_minor: -1010,
            orig_query_id: Some("512511291030001234567".into()),
            ..paid_line()
        };
        assert_eq!(lines, vec![paid_line(), refund_line, cancel_line]);
    }

    #[test]
    fn fields_are_gbk_byte_widths() {
        // Six Chinese characters are 12 bytes in GBK but 18 in UTF-8: cutting the decoded text
        // would shift every later field.
        let line = record(&[(30, "银联商户全称测试商户简称")], b"");
        let parsed = parse_statement(&line, date("2025-11-29")).expect("line");
        assert_eq!(parsed[0].sub_mer_abbr, "银联商户全称测试商户简称");
        assert_eq!(parsed[0].settle_minor, 1010);

        let mut broken = record(&[], b"");
        // 0x81 opens a two-byte GBK character; the padding space after the text cannot close it.
        let sub_mer_abbr: usize = WIDTHS[..30].iter().map(|w| w + 1).sum();
        broken[sub_mer_abbr + 12] = 0x81;
        let err = parse_statement(&broken, date("2025-11-29")).expect_err("not GBK");
        assert_eq!(err.line, 1);
        assert!(err.reason.contains("subMerAbbr is not GBK"), "{err}");
    }

    #[test]
    fn the_reserved_tail_may_be_absent_or_short_but_a_record_may_not() {
        let full = record(&[], b"");
        for line in [
            full.clone(),
            full[..475].to_vec(),
            record(&[], b"RESERVED"),
            record(&[], &[b' '; 131]),
        ] {
            assert_eq!(
                parse_statement(&line, date("2025-11-29")).expect("line"),
                vec![paid_line()]
            );
        }
        let cut = parse_statement(&full[..470], date("2025-11-29")).expect_err("cut");
        assert!(cut.reason.contains("shorter than a record"), "{cut}");
        let long = parse_statement(&record(&[], &[b' '; 300]), date("2025-11-29"));
        assert!(long.is_err());
        let mut shifted = full.clone();
        shifted.insert(1, b'0');
        let err = parse_statement(&shifted, date("2025-11-29")).expect_err("shifted");
        assert!(
            err.reason.contains("no space after tradeNo at byte 4"),
            "{err}"
        );
    }

    #[test]
    fn bad_amounts_are_errors_with_their_line_number() {
        let check = |change: (usize, &str), expected: &str| {
            let text = file(&[record(&[], b""), b"".to_vec(), record(&[change], b"")]);
            let err = parse_statement(&text, date("2025-11-29")).expect_err("bad");
            assert_eq!(err.line, 3, "{err}");
            assert!(err.reason.contains(expected), "{err}");
        };
        check((6, "00000000101A"), "txnAmt");
        check((6, "1010"), "txnAmt");
        check((6, "-00000001010"), "txnAmt");
        check((16, "X000000001010"), "settleAmt");
        check((16, "C00000000101."), "settleAmt");
        check((16, "+000000001010"), "settleAmt");
        check((15, "D"), "merCharge");
        check((4, "1129256000"), "txnTime");
        check((9, ""), "queryId");
    }

    #[test]
    fn the_year_comes_from_the_settle_date() {
        let at = |txn_time: &str, settle: &str| {
            parse_statement(&record(&[(4, txn_time)], b""), date(settle)).map(|l| l[0].traded_at)
        };
        // 2025-12-31 23:59:59 +08:00, settled on 2026-01-01.
        assert_eq!(
            at("1231235959", "2026-01-01"),
            Ok(Timestamp::from_unix_s(1_767_196_799))
        );
        // 2026-01-01 00:00:01 +08:00.
        assert_eq!(
            at("0101000001", "2026-01-01"),
            Ok(Timestamp::from_unix_s(1_767_196_801))
        );
        assert_eq!(
            at("0229120000", "2024-03-01"),
            Ok(Timestamp::from_unix_s(1_709_179_200))
        );
        assert!(at("0229120000", "2026-03-01").is_err(), "no 2026-02-29");
        assert!(at("1301120000", "2026-03-01").is_err());
    }

    #[test]
    fn other_txn_types_are_kept_and_blank_lines_skipped() {
        let text = file(&[
            b"".to_vec(),
            record(&[(19, "02"), (20, "01")], b""),
            b"   ".to_vec(),
        ]);
        let lines = parse_statement(&text, date("2025-11-29")).expect("file");
        assert_eq!(
            (lines.len(), lines[0].kind, lines[0].txn_type.as_str()),
            (1, StatementKind::Other, "02")
        );
        assert_eq!(parse_statement(b"", date("2025-11-29")), Ok(vec![]));
    }

    #[test]
    fn lines_are_capped() {
        let text = vec![b'\n'; STATEMENT_LINES_MAX + 1];
        let err = parse_statement(&text, date("2025-11-29")).expect_err("cap");
        assert_eq!(err.line, STATEMENT_LINES_MAX + 1);
    }

    // ---- unpacking ----

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            writer
                .start_file(*name, SimpleFileOptions::default())
                .expect("entry");
            writer.write_all(data).expect("write");
        }
        writer.finish().expect("zip").into_inner()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).expect("deflate");
        encoder.finish().expect("deflate")
    }

    fn packed(entries: &[(&str, &[u8])]) -> String {
        STANDARD.encode(zlib(&zip_of(entries)))
    }

    const ZM_NAME: &str = "INN25112988ZM_777290058167151";

    #[test]
    fn unpack_finds_the_zm_entry_among_the_others() {
        let zm = file(&[record(&[], b"")]);
        let content = packed(&[
            ("INN25112988ZME_777290058167151", b"errors"),
            ("IER25112988ZM_777290058167151", b"not INN"),
            (ZM_NAME, &zm),
        ]);
        assert_eq!(unpack(&content, UnpackLimits::DEFAULT), Ok(zm.clone()));
        let wrapped: String = content
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
            .collect();
        assert_eq!(unpack(&wrapped, UnpackLimits::DEFAULT), Ok(zm.clone()));
        let nested = packed(&[(&format!("0119/{ZM_NAME}"), &zm)]);
        assert_eq!(unpack(&nested, UnpackLimits::DEFAULT), Ok(zm));
    }

    #[test]
    fn unpack_refuses_what_is_not_a_settlement_file() {
        let check = |content: &str, expected: &str| {
            let err = unpack(content, UnpackLimits::DEFAULT).expect_err("refused");
            assert!(err.contains(expected), "{err}");
        };
        check("not base64!", "not base64");
        check(&STANDARD.encode(b"not zlib at all"), "zlib");
        // Raw deflate without the zlib wrapper is not what UnionPay's Deflater writes.
        let raw = {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
            e.write_all(&zip_of(&[(ZM_NAME, b"x")])).expect("deflate");
            e.finish().expect("deflate")
        };
        check(&STANDARD.encode(raw), "zlib");
        check(&STANDARD.encode(zlib(b"PK but not a zip")), "not a ZIP");
        check(&packed(&[("INN25112988ZME_1", b"x")]), "no INN...ZM_ entry");
        check(
            &packed(&[(ZM_NAME, b"a"), ("INN25112999ZM_777290058167151", b"b")]),
            "more than one",
        );
    }

    #[test]
    fn unpack_is_bounded() {
        let zm = vec![b' '; 10_000];
        let content = packed(&[(ZM_NAME, &zm)]);
        let limits = |zip_bytes_max, entry_bytes_max| UnpackLimits {
            zip_bytes_max,
            entry_bytes_max,
        };
        let err = unpack(&content, limits(100, 1 << 20)).expect_err("archive bound");
        assert!(
            err.contains("zlib stream is larger than 100 bytes"),
            "{err}"
        );
        let err = unpack(&content, limits(1 << 20, 9_999)).expect_err("entry bound");
        assert!(err.contains("ZM entry is larger than 9999 bytes"), "{err}");
        assert_eq!(unpack(&content, limits(1 << 20, 10_000)), Ok(zm));
    }

    // ---- the request and its answer ----

    fn merchant() -> Merchant<'static> {
        Merchant {
            mer_id: MER_ID,
            cert_id: MERCHANT_SERIAL,
            back_url: "https://pay.example.com/callbacks/unionpay",
        }
    }

    #[test]
    fn bill_dates_are_full_dates() {
        assert_eq!(
            parse_bill_date("2024-02-29").map(mmdd),
            Ok("0229".to_owned())
        );
        for bad in [
            "2025-02-29",
            "2025-13-01",
            "2025-1-01",
            "20250101",
            "",
            "2025-01-01x",
            "+025-01-01",
        ] {
            assert!(
                matches!(parse_bill_date(bad), Err(ProviderError::Rejected { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_request_carries_the_file_transfer_fields() {
        // 2025-11-29T16:00:00Z is 2025-11-30 00:00:00 in China.
        let now = Timestamp::from_unix_s(1_764_432_000);
        let fields = file_request_fields(&merchant(), date("2025-11-29"), now).expect("fields");
        let expected: Fields = [
            ("accessType", "0"),
            ("bizType", "000000"),
            ("certId", MERCHANT_SERIAL),
            ("encoding", "UTF-8"),
            ("fileType", "00"),
            ("merId", MER_ID),
            ("settleDate", "1129"),
            ("signMethod", "01"),
            ("txnSubType", "01"),
            ("txnTime", "20251130000000"),
            ("txnType", "76"),
            ("version", "5.1.0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(fields, expected);
    }

    fn answer(changes: &[(&str, &str)]) -> Fields {
        let mut fields: Fields = [
            ("merId", MER_ID),
            ("settleDate", "1129"),
            ("respCode", "00"),
            ("respMsg", "成功[0000000]"),
            ("fileName", "777290058167151_20251129.zip"),
            ("fileContent", "eJwDAAAAAAE="),
        ]
        .into_iter()
        .chain(changes.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        fields.retain(|_, v| v != "<absent>");
        fields
    }

    #[test]
    fn answers_map_to_a_file_a_refusal_or_unknown() {
        let outcome =
            |changes: &[(&str, &str)]| file_outcome(answer(changes), MER_ID, date("2025-11-29"));
        assert_eq!(
            outcome(&[]),
            Ok(SettlementFile {
                file_name: "777290058167151_20251129.zip".into(),
                file_content: "eJwDAAAAAAE=".into(),
            })
        );
        assert_eq!(
            outcome(&[("respCode", "98"), ("respMsg", "文件不存在")]),
            Err(ProviderError::Rejected {
                code: "98".into(),
                message: "文件不存在".into()
            })
        );
        assert!(matches!(
            outcome(&[("respCode", "11")]),
            Err(ProviderError::Rejected { .. })
        ));
        for unknown in [
            &[("respCode", "03")][..],
            &[("respCode", "<absent>")],
            &[("merId", "777290058100000")],
            &[("settleDate", "1130")],
            &[("fileContent", "")],
            &[("fileContent", "<absent>")],
        ] {
            assert!(
                matches!(outcome(unknown), Err(ProviderError::Unknown(_))),
                "{unknown:?}"
            );
        }
    }

    #[test]
    fn file_urls_default_to_unionpays_file_host() {
        for (base, expected) in [
            (
                "https://gateway.95516.com",
                "https://filedownload.95516.com/",
            ),
            (
                "https://gateway.test.95516.com",
                "https://filedownload.test.95516.com/",
            ),
            (
                "http://127.0.0.1:4000",
                "http://127.0.0.1:4000/unionpay/file/",
            ),
            (
                "http://127.0.0.1:4000/",
                "http://127.0.0.1:4000/unionpay/file/",
            ),
            (
                "https://gateway.example.com",
                "https://gateway.example.com/unionpay/file/",
            ),
        ] {
            assert_eq!(super::super::default_file_url(base), expected, "{base}");
        }
    }

    // ---- through the provider, against a one-shot HTTP server ----

    struct Served {
        url: String,
        request: tokio::task::JoinHandle<Vec<u8>>,
    }

    /// Answers one request with `status` and `body` (declaring `declared` bytes when set) and
    /// hands back the request body.
    async fn serve_once(status: u16, body: Vec<u8>, declared: Option<usize>) -> Served {
        let (listener, base) = test_http::listener().await;
        let canned = test_http::answer(status, &[], &body, Some(declared.unwrap_or(body.len())));
        let server = test_http::serve(listener, vec![canned]);
        let request = tokio::spawn(async move { server.await.expect("server").remove(0).body });
        Served {
            url: format!("{base}/file/"),
            request,
        }
    }

    fn valid_now() -> Timestamp {
        Timestamp::from_unix_s(test_pki::validity_s(&pki().signer_pem).0 + 60)
    }

    fn provider(file_url: &str) -> UnionPayProvider {
        let pki = pki();
        let config = UnionPayConfig {
            base_url: "http://127.0.0.1:9".into(),
            mer_id: MER_ID.into(),
            sign_key: RsaSigner::from_pem(&pki.merchant_key_pem).expect("key"),
            sign_cert_serial_decimal: cert_serial_decimal(&pki.merchant_cert_pem).expect("serial"),
            root_cert_pem: pki.root_pem.clone(),
            intermediate_cert_pem: pki.intermediate_pem.clone(),
            expected_signer_cn: COMPANY.into(),
            back_url: "https://pay.example.com/callbacks/unionpay".into(),
            timeout: Duration::from_secs(5),
        };
        UnionPayProvider::new(config, Arc::new(ManualClock::at(valid_now())))
            .expect("provider")
            .with_file_url(Some(file_url.to_owned()))
            .expect("file url")
    }

    /// A file answer as UnionPay signs it, as raw `k=v&...`.
    fn signed_answer(changes: &[(&str, &str)], forge: bool) -> Vec<u8> {
        let pki = pki();
        let mut fields = answer(changes);
        for (key, value) in [
            ("version", "5.1.0"),
            ("encoding", "UTF-8"),
            ("signMethod", "01"),
            ("txnType", "76"),
            ("txnSubType", "01"),
            ("bizType", "000000"),
            ("accessType", "0"),
            ("fileType", "00"),
            ("signPubKeyCert", pki.signer_pem.as_str()),
        ] {
            fields.insert(key.to_owned(), value.to_owned());
        }
        sign::sign(
            &mut fields,
            &RsaSigner::from_pem(&pki.signer_key_pem).expect("signer"),
        );
        if forge {
            fields.insert("respMsg".into(), "forged".into());
        }
        let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join("&").into_bytes()
    }

    fn form_fields(body: &[u8]) -> Fields {
        form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[tokio::test]
    async fn downloads_a_signed_file_over_the_ordinary_answer_bound() {
        // Enough records that the answer is far over the 64 KiB of ordinary answers; varied
        // query ids keep the deflated archive from shrinking below it.
        let lines: Vec<Vec<u8>> = (0..4_000u64)
            .map(|i| {
                let query_id = format!(
                    "{:021}",
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10u64.pow(19)
                );
                let order_id = format!(
                    "{:032x}",
                    u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
                );
                record(&[(9, &query_id), (11, &order_id)], b"")
            })
            .collect();
        let content = packed(&[(ZM_NAME, &file(&lines))]);
        let body = signed_answer(&[("fileContent", &content)], false);
        assert!(body.len() > wire::BODY_BYTES_MAX, "{} bytes", body.len());

        let served = serve_once(200, body, None).await;
        let statement = provider(&served.url)
            .download_statement("2025-11-29")
            .await
            .expect("statement");
        assert_eq!(statement.len(), 4_000);
        assert!(statement.iter().all(|l| l.amount_minor == 1010));

        let request = form_fields(&served.request.await.expect("request"));
        for (key, value) in [
            ("txnType", "76"),
            ("txnSubType", "01"),
            ("fileType", "00"),
            ("settleDate", "1129"),
            ("merId", MER_ID),
            ("certId", MERCHANT_SERIAL),
        ] {
            assert_eq!(request.get(key).map(String::as_str), Some(value), "{key}");
        }
        let merchant_key = RsaVerifier::from_pem(&pki().merchant_public_pem).expect("public");
        assert!(sign::signature_verifies(&request, &merchant_key));
    }

    #[tokio::test]
    async fn refusals_unknowns_and_bad_files_stay_apart() {
        let download = |status: u16, body: Vec<u8>, declared: Option<usize>| async move {
            let served = serve_once(status, body, declared).await;
            provider(&served.url).download_statement("2025-11-29").await
        };
        assert!(matches!(
            download(200, signed_answer(&[("respCode", "98")], false), None).await,
            Err(DownloadError::Provider(ProviderError::Rejected { code, .. })) if code == "98"
        ));
        for (status, body) in [
            (200, signed_answer(&[], true)),
            (500, signed_answer(&[], false)),
            (200, b"respCode=00".to_vec()),
        ] {
            assert!(matches!(
                download(status, body, None).await,
                Err(DownloadError::Provider(ProviderError::Unknown(_)))
            ));
        }
        let too_long = download(200, Vec::new(), Some(wire::FILE_ANSWER_BYTES_MAX + 1)).await;
        assert!(
            matches!(&too_long, Err(DownloadError::Provider(ProviderError::Unknown(m))) if m.contains("longer")),
            "{too_long:?}"
        );
        let bad = download(200, signed_answer(&[("fileContent", "AAAA")], false), None).await;
        assert!(
            matches!(&bad, Err(DownloadError::BadFile { file_name, .. }) if file_name.ends_with(".zip")),
            "{bad:?}"
        );
        let bad_line = packed(&[(ZM_NAME, &record(&[(6, "12345678901X")], b""))]);
        let bad = download(
            200,
            signed_answer(&[("fileContent", &bad_line)], false),
            None,
        )
        .await;
        assert!(
            matches!(&bad, Err(DownloadError::BadLine { error, .. }) if error.line == 1),
            "{bad:?}"
        );
        assert!(matches!(
            provider("http://127.0.0.1:9/").download_statement("2025-11-31").await,
            Err(DownloadError::Provider(ProviderError::Rejected { code, .. })) if code == "INVALID_BILL_DATE"
        ));
        assert!(
            provider("http://127.0.0.1:9/")
                .with_file_url(Some("ftp://x/".into()))
                .is_err()
        );
    }
}
