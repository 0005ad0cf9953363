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
use tracing::info;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    Native,
    Alipay,
    WechatPay,
    UnionPay,
}

impl Protocol {
    /// WeChat Pay's `out_refund_no` and UnionPay's refund `orderId` are unique per merchant, and
    /// a refund is queried by that number alone; elsewhere a refund number is unique per trade.
    pub fn names_refunds_alone(self) -> bool {
        matches!(self, Self::WechatPay | Self::UnionPay)
    }
}

/// One delivery (one HTTP request, or one attempt lost by `drop_first`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct DeliveryRecord {
    pub notify_id: String,
    /// The merchant's refund number when this is a refund notification; absent for the
    /// payment's (and the early `WAIT_PAY` notice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_no: Option<String>,
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
    /// Oldest first; their amounts never add up to more than `amount_minor`.
    pub refunds: Vec<Refund>,
}

impl Trade {
    /// What every refund of the trade adds up to, PROCESSING ones included.
    pub fn committed_minor(&self) -> i64 {
        self.refunds.iter().map(|r| r.amount_minor).sum()
    }

    /// What the refunds that are SUCCESS add up to: the money that went back.
    pub fn refunded_minor(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Success)
            .map(|r| r.amount_minor)
            .sum()
    }
}

/// Most refunds one trade takes (WeChat Pay's limit), so the per-trade list is bounded.
pub(crate) const REFUNDS_PER_TRADE_MAX: usize = 50;

/// A refund's status as the provider reports it. The sandbox never fails a refund it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RefundStatus {
    Processing,
    Success,
}

/// One refund of a trade, as the admin view shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Refund {
    /// The merchant's number: unique per trade (per merchant and protocol, in fact).
    pub refund_no: String,
    /// The provider's own number for it, in the protocol's format.
    pub provider_refund_no: String,
    pub amount_minor: i64,
    pub reason: String,
    pub status: RefundStatus,
    /// How many refund requests named it (idempotent repeats included); money moved once.
    pub requests: u32,
    /// RFC 3339 UTC.
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub succeeded_at: Option<String>,
    /// UnionPay: the refund's own `txnTime`, which a query of it must repeat; empty elsewhere.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub txn_time: String,
    /// Where its refund notification goes once it is SUCCESS; empty: none is sent.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub notify_url: String,
    /// UnionPay: the request's `reqReserved`, echoed in the refund's notification; empty
    /// elsewhere.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub req_reserved: String,
}

/// A refund as a protocol asks for it.
pub(crate) struct RefundAsk {
    pub refund_no: String,
    /// Positive (each protocol checks its own field first).
    pub amount_minor: i64,
    pub reason: String,
    /// UnionPay's `txnTime`; empty elsewhere. A repeat must carry the same.
    pub txn_time: String,
    /// Used only when this request creates the refund.
    pub provider_refund_no: String,
    /// The `refund_processing` knob.
    pub processing: bool,
    /// Where the refund notification goes (the protocol's choice); empty: none is sent.
    pub notify_url: String,
    /// UnionPay's `reqReserved`; empty elsewhere.
    pub req_reserved: String,
}

/// Why a refund is refused; each protocol words it in its own style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefundRefusal {
    /// No trade of this protocol by that number.
    NoTrade,
    /// The trade is waiting for payment or closed.
    NotPaid,
    /// The refund number is taken by a refund with other terms, or of another trade.
    OtherTerms,
    /// The refunds would add up to more than the paid amount.
    Exceeds { refundable_minor: i64 },
    /// The trade has [`REFUNDS_PER_TRADE_MAX`] refunds already.
    TooMany,
}

/// A refund with what the answers say about its trade.
#[derive(Clone, Debug)]
pub(crate) struct RefundView {
    pub refund: Refund,
    pub out_trade_no: String,
    pub trade_no: String,
    pub total_minor: i64,
    /// [`Trade::refunded_minor`] when the view was taken.
    pub refunded_minor: i64,
    /// False for an idempotent repeat (or a query).
    pub created: bool,
    /// This call made the refund SUCCESS (created so, or a PROCESSING one resolved by this
    /// query): its refund notification is due.
    pub succeeded_now: bool,
}

impl RefundView {
    fn of(trade: &Trade, refund: &Refund, created: bool) -> Self {
        Self {
            refund: refund.clone(),
            out_trade_no: trade.out_trade_no.clone(),
            trade_no: trade.trade_no.clone(),
            total_minor: trade.amount_minor,
            refunded_minor: trade.refunded_minor(),
            created,
            succeeded_now: created && refund.status == RefundStatus::Success,
        }
    }
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
    /// (protocol, refund number) -> the out_trade_no of the trade it refunds, for the protocols
    /// whose refund numbers are unique per merchant ([`Protocol::names_refunds_alone`]).
    pub refund_nos: HashMap<(Protocol, String), String>,
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

    /// The out_trade_no of the trade whose refund this is, for protocols that name a refund by
    /// its number alone.
    pub fn refund_owner(&self, protocol: Protocol, refund_no: &str) -> Option<&str> {
        self.refund_nos
            .get(&(protocol, refund_no.to_owned()))
            .map(String::as_str)
    }

    /// Records a refund of a paid trade, or finds the same refund again (same number, amount
    /// and `txn_time`): money moves once per refund number.
    pub fn refund(
        &mut self,
        protocol: Protocol,
        out_trade_no: &str,
        ask: RefundAsk,
    ) -> Result<RefundView, RefundRefusal> {
        if self
            .refund_owner(protocol, &ask.refund_no)
            .is_some_and(|owner| owner != out_trade_no)
        {
            return Err(RefundRefusal::OtherTerms);
        }
        let trade = self
            .trades
            .get_mut(out_trade_no)
            .filter(|t| t.protocol == protocol)
            .ok_or(RefundRefusal::NoTrade)?;
        if let Some(i) = trade
            .refunds
            .iter()
            .position(|r| r.refund_no == ask.refund_no)
        {
            let existing = &mut trade.refunds[i];
            if existing.amount_minor != ask.amount_minor || existing.txn_time != ask.txn_time {
                return Err(RefundRefusal::OtherTerms);
            }
            existing.requests += 1;
            return Ok(RefundView::of(trade, &trade.refunds[i], false));
        }
        if trade.status != Status::Paid {
            return Err(RefundRefusal::NotPaid);
        }
        if trade.refunds.len() >= REFUNDS_PER_TRADE_MAX {
            return Err(RefundRefusal::TooMany);
        }
        let refundable_minor = trade.amount_minor - trade.committed_minor();
        if ask.amount_minor > refundable_minor {
            return Err(RefundRefusal::Exceeds { refundable_minor });
        }
        let now = rfc3339_now();
        let refund = Refund {
            refund_no: ask.refund_no,
            provider_refund_no: ask.provider_refund_no,
            amount_minor: ask.amount_minor,
            reason: ask.reason,
            status: if ask.processing {
                RefundStatus::Processing
            } else {
                RefundStatus::Success
            },
            requests: 1,
            succeeded_at: (!ask.processing).then(|| now.clone()),
            created_at: now,
            txn_time: ask.txn_time,
            notify_url: ask.notify_url,
            req_reserved: ask.req_reserved,
        };
        info!(%out_trade_no, refund_no = %refund.refund_no, amount_minor = refund.amount_minor, status = ?refund.status, "sandbox: refund recorded");
        trade.refunds.push(refund);
        let view = trade
            .refunds
            .last()
            .map(|r| RefundView::of(trade, r, true))
            .ok_or(RefundRefusal::NoTrade)?;
        if protocol.names_refunds_alone() {
            self.refund_nos.insert(
                (protocol, view.refund.refund_no.clone()),
                out_trade_no.to_owned(),
            );
        }
        Ok(view)
    }

    /// A refund as a query sees it. A PROCESSING refund is answered as such once more, and is
    /// SUCCESS from then on (the `refund_processing` knob resolves by polling).
    pub fn query_refund(
        &mut self,
        protocol: Protocol,
        out_trade_no: &str,
        refund_no: &str,
    ) -> Option<RefundView> {
        let trade = self
            .trades
            .get_mut(out_trade_no)
            .filter(|t| t.protocol == protocol)?;
        let i = trade
            .refunds
            .iter()
            .position(|r| r.refund_no == refund_no)?;
        let mut view = RefundView::of(trade, &trade.refunds[i], false);
        let refund = &mut trade.refunds[i];
        if refund.status == RefundStatus::Processing {
            refund.status = RefundStatus::Success;
            refund.succeeded_at = Some(rfc3339_now());
            view.succeeded_now = true;
            info!(%out_trade_no, %refund_no, "sandbox: refund succeeded");
        }
        Some(view)
    }

    /// Appends to the trade's delivery log and bumps the counters. `refund_no` names the refund
    /// a refund notification is about (`None` for the payment's).
    pub fn record(
        &mut self,
        out_trade_no: &str,
        notify_id: &str,
        refund_no: Option<&str>,
        attempt: u32,
        outcome: Outcome,
    ) {
        let refund_no = refund_no.map(str::to_owned);
        let record = match outcome {
            Outcome::Answered { http_status, acked } => {
                if acked {
                    self.stats.acked += 1;
                } else {
                    self.stats.rejected += 1;
                }
                DeliveryRecord {
                    notify_id: notify_id.into(),
                    refund_no,
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
                    refund_no,
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
