//! In-memory state: trades, their delivery logs, fault knobs and counters.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rsa::KeyPair;
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use super::alipay::AlipayConfig;
use super::faults::{FaultTable, Faults};
use super::keys;
use super::unionpay::UnionPayConfig;
use super::wechatpay::WechatPayConfig;

pub(crate) const HEADER_MERCHANT: &str = "x-sandbox-merchant";
pub(crate) const HEADER_TIMESTAMP: &str = "x-sandbox-timestamp";
pub(crate) const HEADER_NONCE: &str = "x-sandbox-nonce";
pub(crate) const HEADER_SIGNATURE: &str = "x-sandbox-signature";

/// Trade status as the provider reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Status {
    WaitPay,
    Paid,
    Closed,
}

/// Which protocol created a trade (decides the notification format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    Native,
    Alipay,
    WechatPay,
    UnionPay,
}

/// One delivery (one HTTP request, or one attempt lost by `drop_first`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct DeliveryRecord {
    pub notify_id: String,
    pub attempt: u32,
    /// `None` when no HTTP answer came back (lost, refused, timed out).
    pub http_status: Option<u16>,
    pub acked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A trade and its delivery log.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Trade {
    pub trade_no: String,
    pub out_trade_no: String,
    pub merchant_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub subject: String,
    pub notify_url: String,
    pub expires_at: i64,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    pub pay_url: String,
    pub protocol: Protocol,
    /// How many create requests named this trade (idempotent replays included).
    pub create_calls: u32,
    pub deliveries: Vec<DeliveryRecord>,
}

/// Counters served by `GET /admin/stats`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Stats {
    pub trades: u64,
    /// Every HTTP request sent (duplicates included) plus every attempt lost by `drop_first`.
    pub deliveries: u64,
    pub acked: u64,
    pub rejected: u64,
    pub failed_connections: u64,
    /// Distinct notify_ids issued.
    pub notifications: u64,
}

/// How one delivery ended.
pub(crate) enum Outcome {
    /// An HTTP answer; `acked` when it was 200 `{"code":"SUCCESS"}`.
    Answered { http_status: u16, acked: bool },
    /// No HTTP answer (dropped by a knob, refused, timed out).
    NoAnswer(String),
}

#[derive(Default)]
pub(crate) struct Inner {
    /// By out_trade_no.
    pub trades: HashMap<String, Trade>,
    /// trade_no -> out_trade_no.
    pub trade_nos: HashMap<String, String>,
    pub faults: FaultTable,
    pub stats: Stats,
    /// UnionPay consumes: orderId -> the consume's `txnTime`, echoed by its notification.
    pub unionpay_txn_times: HashMap<String, String>,
}

impl Inner {
    pub fn trade_by_no(&mut self, trade_no: &str) -> Option<&mut Trade> {
        let out_trade_no = self.trade_nos.get(trade_no)?;
        self.trades.get_mut(out_trade_no)
    }

    /// Knobs for the stored trade (or the `""` scope when the trade is unknown).
    pub fn faults_for_trade(&self, out_trade_no: &str) -> Faults {
        let subject = self
            .trades
            .get(out_trade_no)
            .map_or("", |t| t.subject.as_str());
        self.faults.for_subject(subject)
    }

    /// Appends to the trade's delivery log and bumps the counters.
    pub fn record(&mut self, out_trade_no: &str, notify_id: &str, attempt: u32, outcome: Outcome) {
        let record = match outcome {
            Outcome::Answered { http_status, acked } => {
                if acked {
                    self.stats.acked += 1;
                } else {
                    self.stats.rejected += 1;
                }
                DeliveryRecord {
                    notify_id: notify_id.into(),
                    attempt,
                    http_status: Some(http_status),
                    acked,
                    error: None,
                }
            }
            Outcome::NoAnswer(error) => {
                self.stats.failed_connections += 1;
                DeliveryRecord {
                    notify_id: notify_id.into(),
                    attempt,
                    http_status: None,
                    acked: false,
                    error: Some(error),
                }
            }
        };
        self.stats.deliveries += 1;
        if let Some(trade) = self.trades.get_mut(out_trade_no) {
            trade.deliveries.push(record);
        }
    }
}

/// Fixed configuration, parsed once at start.
pub(crate) struct Config {
    pub merchant_id: String,
    pub merchant_public_der: Vec<u8>,
    pub provider_key: KeyPair,
    pub base_url: String,
    pub time_scale: u32,
    /// `None`: `/gateway.do` answers 404.
    pub alipay: Option<AlipayConfig>,
    /// `None`: `/v3/*` answers 404.
    pub wechatpay: Option<WechatPayConfig>,
    /// `None`: `/gateway/api/*` answers 404.
    pub unionpay: Option<UnionPayConfig>,
}

/// Everything the handlers and delivery tasks share.
pub(crate) struct Shared {
    pub config: Config,
    pub http: reqwest::Client,
    pub inner: Mutex<Inner>,
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// Locks the state; a poisoned lock is recovered (the state stays usable for a dev tool).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sleeps for `d`; returns false when the sandbox shut down meanwhile.
    pub async fn sleep(&self, d: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = shutdown.wait_for(|down| *down) => false,
        }
    }

    pub fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// `X-Sandbox-Timestamp`, `X-Sandbox-Nonce` and `X-Sandbox-Signature` for `body`;
    /// `forge` breaks the signature (the `forge` knob).
    pub fn sign_headers(&self, body: &[u8], forge: bool) -> anyhow::Result<HeaderMap> {
        let timestamp = unix_now();
        let nonce = ulid::Ulid::new().to_string();
        let mut signature = keys::sign(
            &self.config.provider_key,
            &keys::provider_message(timestamp, &nonce, body),
        )?;
        if forge {
            signature = keys::forge(&signature);
        }
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(HEADER_NONCE, HeaderValue::try_from(nonce)?);
        headers.insert(HEADER_SIGNATURE, HeaderValue::try_from(signature)?);
        Ok(headers)
    }
}

/// Real unix seconds.
pub(crate) fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

/// Now as RFC 3339 UTC, whole seconds.
pub(crate) fn rfc3339_now() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}
