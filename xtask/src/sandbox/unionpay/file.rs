//! The file transfer (txnType 76, txnSubType 01, fileType 00): UnionPay's separate file host,
//! played here at `POST /unionpay/file/`. The merchant's request is checked like the gateway's;
//! the signed answer carries `fileName` and `fileContent`, base64 of a zlib stream (as Java's
//! `Deflater` writes) of a ZIP archive whose one entry, `INN<yyMMdd>88ZM_<merId>`, is the ZM
//! file of the settle date: GBK, one fixed-width record per line, each field followed by one
//! space. It lists the sandbox's UnionPay consumes paid on that day in China time (which is
//! also the `settleDate` of their notifications).

use std::io::{Cursor, Write as _};
use std::sync::Arc;

use anyhow::{Context, ensure};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use time::{Date, Month, OffsetDateTime};
use tracing::{info, warn};
use zip::write::SimpleFileOptions;

use super::super::state::{Protocol, Shared, Status};
use super::UnionPayConfig;
use super::gateway::{
    Refusal, answer_fields, china_time_s, get, not_found, refusal_answer, refuse, signed_answer,
    unionpay, verify_request,
};
use super::sign::Fields;

/// Where the file transfer is served.
pub(crate) const FILE_PATH: &str = "/unionpay/file/";

/// How many years back a `settleDate` (`MMDD`, no year) may name: the latest such day that is
/// not after today.
const SETTLE_YEARS_BACK: i32 = 4;

/// A consume paid on the settle date, as its ZM record needs it.
struct PaidConsume {
    order_id: String,
    query_id: String,
    amount_minor: i64,
    /// The consume's own `txnTime` (`yyyyMMddHHmmss`), when the sandbox kept it.
    txn_time: Option<String>,
    paid_at: OffsetDateTime,
}

/// `POST /unionpay/file/`.
pub(crate) async fn file_transfer(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(cfg) = unionpay(&shared) else {
        return not_found();
    };
    let fields = match verify_request(cfg, &body) {
        Ok(fields) => fields,
        Err((fields, refusal)) => return refusal_answer(cfg, &fields, &refusal),
    };
    let today = OffsetDateTime::now_utc().to_offset(offset!(+8)).date();
    let settle_date = match validate_file_request(&fields, today) {
        Ok(day) => day,
        Err(refusal) => return refusal_answer(cfg, &fields, &refusal),
    };
    let paid = paid_on(&shared, &cfg.mer_id, settle_date);
    let count = paid.len();
    let (file_name, content) = match settlement_file(cfg, settle_date, &paid) {
        Ok(file) => file,
        Err(e) => {
            warn!(error = %e, "sandbox: cannot write the UnionPay settlement file");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    info!(%settle_date, records = count, "sandbox: UnionPay settlement file served");
    let mut answer = answer_fields(&fields, "00", "成功[0000000]");
    for (key, value) in [
        ("settleDate", get(&fields, "settleDate").to_owned()),
        ("fileType", "00".to_owned()),
        ("fileName", file_name),
        ("fileContent", content),
    ] {
        answer.insert(key.into(), value);
    }
    signed_answer(cfg, answer)
}

/// The file transfer's own fields; answers the settle date they name.
fn validate_file_request(fields: &Fields, today: Date) -> Result<Date, Refusal> {
    if get(fields, "txnType") != "76" || get(fields, "txnSubType") != "01" {
        return Err(refuse(
            "40",
            "交易类型不支持: the file transfer is txnType 76/01",
        ));
    }
    if get(fields, "bizType") != "000000" || get(fields, "fileType") != "00" {
        return Err(refuse("30", "bizType must be 000000 and fileType 00"));
    }
    if china_time_s(get(fields, "txnTime")).is_none() {
        return Err(refuse("30", "txnTime must be yyyyMMddHHmmss"));
    }
    settle_day(get(fields, "settleDate"), today)
        .ok_or_else(|| refuse("30", "settleDate must be MMDD"))
}

/// The latest day with month and day `mmdd` that is not after `today`.
fn settle_day(mmdd: &str, today: Date) -> Option<Date> {
    if mmdd.len() != 4 || !mmdd.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let month = Month::try_from(mmdd.get(..2)?.parse::<u8>().ok()?).ok()?;
    let day = mmdd.get(2..)?.parse::<u8>().ok()?;
    (0..=SETTLE_YEARS_BACK).find_map(|back| {
        Date::from_calendar_date(today.year() - back, month, day)
            .ok()
            .filter(|date| *date <= today)
    })
}

/// The merchant's UnionPay consumes paid on `day` (China time), oldest first.
fn paid_on(shared: &Shared, mer_id: &str, day: Date) -> Vec<PaidConsume> {
    let inner = shared.lock();
    let mut paid: Vec<PaidConsume> = inner
        .trades
        .values()
        .filter(|t| {
            t.protocol == Protocol::UnionPay && t.status == Status::Paid && t.merchant_id == mer_id
        })
        .filter_map(|t| {
            let paid_at = OffsetDateTime::parse(t.paid_at.as_deref()?, &Rfc3339)
                .ok()?
                .to_offset(offset!(+8));
            (paid_at.date() == day).then(|| PaidConsume {
                order_id: t.out_trade_no.clone(),
                query_id: t.trade_no.clone(),
                amount_minor: t.amount_minor,
                txn_time: inner.unionpay_txn_times.get(&t.out_trade_no).cloned(),
                paid_at,
            })
        })
        .collect();
    paid.sort_by(|a, b| (a.paid_at, &a.order_id).cmp(&(b.paid_at, &b.order_id)));
    paid
}

/// `fileName` and `fileContent` of the day's archive.
fn settlement_file(
    cfg: &UnionPayConfig,
    day: Date,
    paid: &[PaidConsume],
) -> anyhow::Result<(String, String)> {
    let mut zm = Vec::with_capacity(paid.len() * 640);
    for consume in paid {
        zm.extend_from_slice(&zm_record(cfg, consume)?);
        zm.extend_from_slice(b"\r\n");
    }
    let yymmdd = day.format(format_description!("[year repr:last_two][month][day]"))?;
    let entry = format!("INN{yymmdd}88ZM_{}", cfg.mer_id);
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file(entry, SimpleFileOptions::default())?;
    zip.write_all(&zm)?;
    let archive = zip.finish()?.into_inner();
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
    zlib.write_all(&archive)?;
    let yyyymmdd = day.format(format_description!("[year][month][day]"))?;
    Ok((
        format!("{}_{yyyymmdd}.zip", cfg.mer_id),
        STANDARD.encode(zlib.finish()?),
    ))
}

/// Appends `value` as GBK, space-padded to `width` bytes, then the separator space.
fn put(out: &mut Vec<u8>, name: &str, width: usize, value: &str) -> anyhow::Result<()> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(value);
    ensure!(!unmappable, "{name} {value:?} has no GBK form");
    ensure!(
        bytes.len() <= width,
        "{name} {value:?} is wider than {width} bytes"
    );
    out.extend_from_slice(&bytes);
    out.resize(out.len() + width - bytes.len(), b' ');
    out.push(b' ');
    Ok(())
}

/// One ZM record of a paid consume, in the order and widths of UnionPay's ZM layout, without
/// the line break. The reserved tail is written in full (131 spaces).
fn zm_record(cfg: &UnionPayConfig, consume: &PaidConsume) -> anyhow::Result<Vec<u8>> {
    let amount = format!("{:012}", consume.amount_minor);
    ensure!(amount.len() == 12, "amount {amount} is over 12 digits");
    let credit = format!("C{amount}");
    let zero = "C000000000000";
    let txn_time = match &consume.txn_time {
        Some(full) => full
            .get(4..14)
            .context("stored txnTime is short")?
            .to_owned(),
        None => consume
            .paid_at
            .format(format_description!("[month][day][hour][minute][second]"))?,
    };
    let trace_no: String = consume.query_id.chars().rev().take(6).collect();
    let fields: [(&str, usize, &str); 40] = [
        ("tradeNo", 3, "S22"),
        ("acqInsCode", 11, "00010000"),
        ("sendInsCode", 11, "00010000"),
        ("traceNo", 6, &trace_no),
        ("txnTime", 10, &txn_time),
        ("payCardNo", 19, "6216***********0018"),
        ("txnAmt", 12, &amount),
        ("merCatCode", 4, "5812"),
        ("termType", 2, "08"),
        ("queryId", 21, &consume.query_id),
        ("oldPayType", 2, ""),
        ("orderId", 32, &consume.order_id),
        ("payCardType", 2, "01"),
        ("origTradeSysTraceNo", 6, ""),
        ("origTradeTime", 10, ""),
        // No fee in the sandbox: the merchant is settled the whole amount.
        ("merCharge", 13, zero),
        ("settleAmt", 13, &credit),
        ("payType", 4, "0001"),
        ("groupMerCode", 15, ""),
        ("txnType", 2, "01"),
        ("txnSubType", 2, "07"),
        ("bizType", 6, "000000"),
        ("accType", 2, "01"),
        ("billType", 4, ""),
        ("billNo", 32, ""),
        ("interactMode", 1, "1"),
        ("origQryId", 21, ""),
        ("merId", 15, &cfg.mer_id),
        ("accountType", 1, "0"),
        ("subMerId", 15, ""),
        ("subMerAbbr", 32, "沙箱测试商户"),
        ("subMerAcccountAmt", 13, zero),
        ("settleNetAmt", 13, &credit),
        ("termId", 8, ""),
        ("merReserved", 32, ""),
        ("discountAmt", 13, zero),
        ("invoiceAmt", 13, zero),
        ("insAdditionCharge", 12, "000000000000"),
        ("installmentNum", 2, "00"),
        ("tradeMedia", 1, "0"),
    ];
    let mut record = Vec::with_capacity(640);
    for (name, width, value) in fields {
        put(&mut record, name, width, value)?;
    }
    record.resize(record.len() + 131, b' ');
    Ok(record)
}
