//! The events the outbox publishes, and the consumers that apply their effects.
//!
//! An event is one transition of one payment, named by the version it produced: the transition's
//! transaction moves the payment's item to that version, and the stream relay turns exactly that
//! change into the event (`event_id = <payment_id>:v<version>`). Everything in it is fixed once
//! the transition is written, so the check-back can rebuild the same event later from the payment
//! and its history entry.

use serde::{Deserialize, Serialize};

use super::{
    AmountMinor, Currency, HistoryEntry, OrderId, Payment, PaymentId, PaymentStatus, ProviderName,
    Timestamp,
};

/// The schema this code writes, and the only one it reads. A consumer that meets another version
/// cannot know what it means: a permanent error, not a retry.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// How long after a payment is paid the check-back first looks for its effects, by default.
pub const DEFAULT_CHECK_BACK_AFTER_S: i64 = 600;

/// The type of the event consumers act on.
pub const PAYMENT_PAID: &str = "payment.paid";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub schema_version: u32,
    /// `<payment_id>:v<version>`: unique per transition, the same however often it is published.
    pub event_id: String,
    /// `payment.<status>`: the status the transition reached.
    #[serde(rename = "type")]
    pub event_type: String,
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub attempt: u32,
    pub version: u32,
    /// `None` for the creation (`payment.pending`).
    pub from: Option<PaymentStatus>,
    pub status: PaymentStatus,
    pub amount_minor: AmountMinor,
    pub currency: Currency,
    pub provider: ProviderName,
    pub occurred_at: Timestamp,
}

/// Why a message is not an event this code can act on. Every variant is permanent: the same
/// bytes fail the same way on every retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("unknown event schema version {0} (this code reads {EVENT_SCHEMA_VERSION})")]
    UnknownSchema(u32),
    #[error("invalid event: {0}")]
    Invalid(String),
}

pub fn event_id(payment_id: &PaymentId, version: u32) -> String {
    format!("{payment_id}:v{version}")
}

impl PaymentEvent {
    /// The event of the transition that left `payment` as it is now (`from` is its status before).
    pub fn of_change(payment: &Payment, from: Option<PaymentStatus>) -> Self {
        Self::build(
            payment,
            payment.version,
            from,
            payment.status,
            payment.updated_at,
        )
    }

    /// The event of an earlier transition of `payment`, from its history entry.
    pub fn of_history(payment: &Payment, entry: &HistoryEntry) -> Self {
        Self::build(payment, entry.version, entry.from, entry.to, entry.at)
    }

    fn build(
        payment: &Payment,
        version: u32,
        from: Option<PaymentStatus>,
        status: PaymentStatus,
        at: Timestamp,
    ) -> Self {
        Self {
            schema_version: EVENT_SCHEMA_VERSION,
            event_id: event_id(&payment.payment_id, version),
            event_type: format!("payment.{status}"),
            payment_id: payment.payment_id.clone(),
            order_id: payment.order_id.clone(),
            attempt: payment.attempt,
            version,
            from,
            status,
            amount_minor: payment.amount_minor,
            currency: payment.currency,
            provider: payment.provider,
            occurred_at: at,
        }
    }

    /// Reads a message body: the schema version first (an unknown one is reported as such even
    /// when the rest would not parse), then the whole event, then its internal consistency.
    pub fn parse(body: &str) -> Result<Self, EventError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let version: Version =
            serde_json::from_str(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        if version.schema_version != EVENT_SCHEMA_VERSION {
            return Err(EventError::UnknownSchema(version.schema_version));
        }
        let event: Self =
            serde_json::from_str(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        if event.event_id != event_id(&event.payment_id, event.version) {
            return Err(EventError::Invalid(format!(
                "event_id {:?} does not name payment {} version {}",
                event.event_id, event.payment_id, event.version
            )));
        }
        if event.event_type != format!("payment.{}", event.status) {
            return Err(EventError::Invalid(format!(
                "type {:?} does not match status {}",
                event.event_type, event.status
            )));
        }
        Ok(event)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn is_paid(&self) -> bool {
        self.status == PaymentStatus::Paid
    }
}

/// The downstream consumers of payment events. Each applies its effect once per event, and at
/// most once per order (its business key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consumer {
    /// Marks the order paid in the order platform.
    OrderUpdater,
    /// Grants the "paid order" coupon.
    CouponGranter,
}

impl Consumer {
    pub const ALL: [Self; 2] = [Self::OrderUpdater, Self::CouponGranter];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderUpdater => "order-updater",
            Self::CouponGranter => "coupon-granter",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment() -> Payment {
        serde_json::from_value(serde_json::json!({
            "payment_id": "01J00000000000000000000000",
            "order_id": "order-1",
            "amount_minor": 1234,
            "currency": "CNY",
            "provider": "sandbox",
            "subject": "s",
            "status": "paid",
            "version": 2,
            "expires_at": 1_000_000,
            "created_at": 1_000,
            "updated_at": 2_000,
        }))
        .expect("payment")
    }

    #[test]
    fn the_relay_and_the_check_back_build_the_same_event() {
        let p = payment();
        let from_stream = PaymentEvent::of_change(&p, Some(PaymentStatus::Pending));
        let entry = HistoryEntry {
            version: 2,
            from: Some(PaymentStatus::Pending),
            to: PaymentStatus::Paid,
            at: Timestamp::from_unix_ms(2_000),
            source: "callback".into(),
            reason: None,
        };
        let mut later = p.clone();
        later.status = PaymentStatus::Refunded;
        later.version = 3;
        assert_eq!(from_stream, PaymentEvent::of_history(&later, &entry));
        assert_eq!(from_stream.event_id, format!("{}:v2", p.payment_id));
        assert_eq!(from_stream.event_type, PAYMENT_PAID);
        assert_eq!(PaymentEvent::parse(&from_stream.to_json()), Ok(from_stream));
    }

    #[test]
    fn parse_refuses_what_a_retry_cannot_fix() {
        let good: serde_json::Value =
            serde_json::from_str(&PaymentEvent::of_change(&payment(), None).to_json())
                .expect("json");
        let with = |key: &str, value: serde_json::Value| {
            let mut v = good.clone();
            v[key] = value;
            v.to_string()
        };
        assert!(matches!(
            PaymentEvent::parse("not json"),
            Err(EventError::Malformed(_))
        ));
        assert_eq!(
            PaymentEvent::parse(&with("schema_version", 2.into())),
            Err(EventError::UnknownSchema(2))
        );
        assert_eq!(
            PaymentEvent::parse(r#"{"schema_version":7}"#),
            Err(EventError::UnknownSchema(7))
        );
        assert!(matches!(
            PaymentEvent::parse(&with("amount_minor", (-1).into())),
            Err(EventError::Malformed(_))
        ));
        assert!(matches!(
            PaymentEvent::parse(&with("amount_minor", 1.5.into())),
            Err(EventError::Malformed(_))
        ));
        assert!(matches!(
            PaymentEvent::parse(&with("version", 9.into())),
            Err(EventError::Invalid(_))
        ));
        assert!(matches!(
            PaymentEvent::parse(&with("type", "payment.closed".into())),
            Err(EventError::Invalid(_))
        ));
    }
}
