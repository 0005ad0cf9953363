//! The traits the use cases need. Adapters implement them; tests swap them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::event::{Consumer, PaymentEvent};
use crate::domain::idempotency::{IdempotencyRecord, StoredResponse};
use crate::domain::payment::Transition;
use crate::domain::refund::{Refund, RefundStatus};
pub use crate::domain::report::{
    CloseOutcome, Compensation, NotifiedStatus, ProviderTrade, RefundState,
};
use crate::domain::{
    Currency, HistoryEntry, Money, OrderId, Payment, PaymentId, PaymentStatus, ProviderName,
    RefundId, Timestamp,
};

/// All time comes from here.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// Mints payment ids.
pub trait IdSource: Send + Sync {
    fn payment_id(&self, now: Timestamp) -> PaymentId;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A concurrent transaction touched the same item; retrying may succeed.
    #[error("lost a write conflict with a concurrent transaction")]
    Conflict,
    /// Stored data this code cannot use (a record of the wrong shape, a broken reference): no
    /// retry can help until someone repairs it.
    #[error("corrupt stored data: {0:#}")]
    Corrupt(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Everything the first write of a create puts down at once.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub payment: Payment,
    pub history: HistoryEntry,
    pub claim: IdempotencyRecord,
    /// A new attempt for an order whose active payment (this one) is closed or failed: the
    /// order's item moves from it to the new payment, and the order's idempotency record may be
    /// taken from it, both only if they still point at it.
    pub replaces: Option<PaymentId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    /// The idempotency key is held by this record (returned with the failed write).
    KeyTaken(IdempotencyRecord),
    /// The order already has a payment, and no live idempotency record covers it.
    OrderTaken {
        payment_id: PaymentId,
    },
}

/// What the provider said to our create, stored together with the completed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateCompletion {
    Accepted {
        pay_url: String,
        provider_trade_no: Option<String>,
    },
    /// The provider definitely refused: the payment moves `pending -> failed`.
    Rejected(Transition),
    /// The outcome is unknown: the payment stays `pending` (its check has been due since the
    /// insert) and is marked so that only a query resolves it.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    Applied,
    /// No payment with that id.
    NotFound,
    /// The guard did not hold; this is the payment as it is now (returned with the failed write).
    GuardFailed(Box<Payment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub payment: Payment,
    pub history: Vec<HistoryEntry>,
}

#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Claims the idempotency key and writes the payment, its order-uniqueness item and its first
    /// history entry, all or nothing.
    async fn insert_payment(
        &self,
        new: &NewPayment,
        now: Timestamp,
    ) -> Result<InsertOutcome, StoreError>;

    /// Stores the provider's answer to the create and completes the idempotency record.
    async fn complete_create(
        &self,
        payment_id: &PaymentId,
        completion: &CreateCompletion,
        idempotency_key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError>;

    /// Applies a guarded transition and its history entry, all or nothing.
    async fn apply_transition(
        &self,
        transition: &Transition,
    ) -> Result<TransitionOutcome, StoreError>;

    async fn payment(&self, payment_id: &PaymentId) -> Result<Option<PaymentRecord>, StoreError>;

    /// Pending payments and refunds whose check is due at `now`, from one shard of the due
    /// index (0 to [`DUE_SHARDS`] - 1), at most `limit`. Eventually consistent: claim first.
    async fn due_checks(
        &self,
        shard: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueCheck>, StoreError>;

    /// Claims a due check with one conditional write: the payment must be `pending` and due at
    /// `now`; its next check moves to `lease_until`, so an overlapping run does not see it as
    /// due and a crashed run's claim lapses. Returns the payment as claimed, `None` if it was
    /// not due (someone else claimed it, or it left `pending`).
    async fn claim_check(
        &self,
        payment_id: &PaymentId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Payment>, StoreError>;

    /// Records a check that left the payment `pending`, if it still is and is still held by
    /// this claim (its next check is `lease_until`). `false` if it moved on meanwhile.
    async fn record_check(
        &self,
        payment_id: &PaymentId,
        lease_until: Timestamp,
        check: &CheckRecord,
    ) -> Result<bool, StoreError>;

    /// Applies a transition and puts a compensation record, all or nothing.
    async fn escalate(
        &self,
        transition: &Transition,
        compensation: &Compensation,
    ) -> Result<TransitionOutcome, StoreError>;

    /// Writes a new `pending` refund and reserves its amount on the payment, all or nothing:
    /// the payment must be in one of `payment_statuses`, and its reserved sum plus this refund
    /// must stay within its amount, whatever refunds run at the same time.
    async fn insert_refund(
        &self,
        refund: &Refund,
        payment_amount_minor: i64,
        payment_statuses: &[PaymentStatus],
    ) -> Result<RefundInsert, StoreError>;

    async fn refund(
        &self,
        payment_id: &PaymentId,
        refund_id: &RefundId,
    ) -> Result<Option<Refund>, StoreError>;

    /// Every refund of a payment, oldest first.
    async fn refunds(&self, payment_id: &PaymentId) -> Result<Vec<Refund>, StoreError>;

    /// Settles a `pending` refund, all or nothing (see [`RefundSettlement`]). `false` when a
    /// guard failed: the refund was settled already, or the payment moved (read and retry).
    async fn settle_refund(&self, settlement: &RefundSettlement) -> Result<bool, StoreError>;

    /// [`Self::claim_check`] for a pending refund.
    async fn claim_refund_check(
        &self,
        payment_id: &PaymentId,
        refund_id: &RefundId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Refund>, StoreError>;

    /// Puts a compensation record once per id: `true` when this call wrote it, `false` when it
    /// existed already (a human may have worked on it since; it is never overwritten).
    async fn put_compensation(&self, compensation: &Compensation) -> Result<bool, StoreError>;

    /// [`Self::record_check`] for a refund still pending.
    async fn record_refund_check(
        &self,
        payment_id: &PaymentId,
        refund_id: &RefundId,
        lease_until: Timestamp,
        check: &RefundCheck,
    ) -> Result<bool, StoreError>;

    /// Paid payments whose effects check is due at `now`, from one shard (0 to [`DUE_SHARDS`] -
    /// 1) of the effects index, at most `limit`, earliest first. Eventually consistent.
    async fn effect_checks_due(
        &self,
        shard: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<PaymentId>, StoreError>;

    /// Moves a payment's effects check from `at` to `next` (`None` takes it out of the index)
    /// and sets its republish count, if the check is still at `at`. `false` if it moved
    /// meanwhile (another run, or the payment is gone).
    async fn move_effect_check(
        &self,
        payment_id: &PaymentId,
        at: Timestamp,
        next: Option<Timestamp>,
        republished: u32,
    ) -> Result<bool, StoreError>;
}

/// What applying an event's effect found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The effect is now recorded, with its dedupe record.
    Applied,
    /// This consumer had already recorded this event: nothing changed.
    Duplicate,
    /// The order's effect was already made by another payment's event (a second payment of the
    /// order): only the dedupe record was written.
    OrderAlreadyDone { by_payment: PaymentId },
}

/// One consumer's effects and its dedupe records (consumer + event id), in the consumer's own
/// table. Each effect is keyed by its business key, the order, so it happens at most once per
/// order whatever events arrive.
#[async_trait]
pub trait Effects: Send + Sync {
    fn consumer(&self) -> Consumer;

    /// Applies the effect of a `payment.paid` event at most once: the dedupe record and the
    /// effect in one transaction.
    async fn apply(&self, event: &PaymentEvent, now: Timestamp) -> Result<Applied, StoreError>;

    /// Whether this consumer has recorded `event_id` (applied, or found its order done).
    async fn recorded(&self, event_id: &str) -> Result<bool, StoreError>;
}

/// `events` could not all be sent: the first `sent` of them reached every consumer asked for.
#[derive(Debug, thiserror::Error)]
#[error("published {sent} event(s), then: {error}")]
pub struct PublishError {
    pub sent: usize,
    pub error: anyhow::Error,
}

/// Delivers events to the consumers' queues (at least once; consumers dedupe).
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Sends every event, in order, to the queue of each consumer in `to`.
    async fn publish(&self, events: &[PaymentEvent], to: &[Consumer]) -> Result<(), PublishError>;
}

/// One message as a queue consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// The queue's own attributes (`ApproximateReceiveCount`, `SentTimestamp`, ...).
    pub attributes: BTreeMap<String, String>,
    /// The sender's string message attributes.
    pub message_attributes: BTreeMap<String, String>,
    /// ARN of the queue it came from.
    pub source_arn: String,
}

impl QueueMessage {
    pub fn receive_count(&self) -> u32 {
        self.attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1)
    }

    /// A queue attribute holding epoch milliseconds (`SentTimestamp`, ...).
    pub fn timestamp(&self, name: &str) -> Option<Timestamp> {
        self.attributes
            .get(name)
            .and_then(|n| n.parse().ok())
            .map(Timestamp::from_unix_ms)
    }
}

/// Message attributes a consumer adds when it sends a message to its dead-letter queue itself
/// ([`ConsumerQueue::dead_letter`]); a redrive leaves them out.
pub const DEAD_LETTER_ATTRIBUTES: [&str; 4] =
    ["error", "consumer", "source_message_id", "receive_count"];

/// What a consumer does with a message besides acknowledging it.
#[async_trait]
pub trait ConsumerQueue: Send + Sync {
    /// Sends the message to the consumer's dead-letter queue at once (a permanent error), its
    /// attributes kept and `error`, `consumer`, `source_message_id` and `receive_count` added.
    async fn dead_letter(&self, message: &QueueMessage, error: &str) -> anyhow::Result<()>;

    /// Hides the message for `seconds` before its next delivery (growing retry delays).
    async fn delay_retry(&self, message: &QueueMessage, seconds: u32) -> anyhow::Result<()>;
}

/// Sends a stored message back to a queue (`payctl dlq redrive`).
#[async_trait]
pub trait MessageSender: Send + Sync {
    async fn send(
        &self,
        queue_url: &str,
        body: &str,
        message_attributes: &BTreeMap<String, String>,
    ) -> anyhow::Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    Open,
    /// Sent back to its source queue by `payctl dlq redrive`.
    Redriven,
    /// Its effect re-run directly by `payctl compensate`.
    Compensated,
}

/// A dead message, stored whole: the compensations table, not the queue, is its place of record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `dead-letter:<consumer>:<original message id>`.
    pub id: String,
    /// Who gave up on it: a consumer, or `outbox-relay` for the stream's failure records.
    pub consumer: String,
    /// Where `payctl dlq redrive` sends it back; `None` when there is nowhere (relay failures).
    pub source_queue_url: Option<String>,
    pub dead_letter_queue_arn: String,
    pub message_id: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    pub message_attributes: BTreeMap<String, String>,
    pub error: String,
    pub receive_count: u32,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub status: DeadLetterStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_changed_at: Option<Timestamp>,
}

pub fn dead_letter_id(consumer: &str, message_id: &str) -> String {
    format!("dead-letter:{consumer}:{message_id}")
}

#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Stores a dead message once per id: `false` (and only `last_seen` moved) if it is there and
    /// open. One that was redriven or compensated and died again is opened again (`true`: a new
    /// death, worth an alarm).
    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<bool, StoreError>;

    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError>;

    /// Every stored dead message, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;

    /// Moves a dead message from status `from` to `to`; `false` if it was not in `from`.
    async fn mark_dead_letter(
        &self,
        id: &str,
        from: DeadLetterStatus,
        to: DeadLetterStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// One entry of the due index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueCheck {
    Payment(PaymentId),
    Refund(PaymentId, RefundId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundInsert {
    Inserted,
    /// A refund with this id exists (returned as it is).
    Exists(Box<Refund>),
    /// The payment's status or its remaining amount does not allow it (returned as it is).
    Refused(Box<Payment>),
    PaymentNotFound,
}

/// What settling a refund writes together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundSettlement {
    pub payment_id: PaymentId,
    pub refund_id: RefundId,
    pub amount_minor: i64,
    /// `Succeeded` adds the amount to the payment's refunded sum; `Failed` releases the
    /// reservation.
    pub to: RefundStatus,
    pub reason: Option<String>,
    pub at: Timestamp,
    /// The payment as read: its status and version must still hold.
    pub payment_status: PaymentStatus,
    pub payment_version: u32,
    /// The payment's own transition when the refunded sum changes its status.
    pub transition: Option<Transition>,
}

/// What one check that left a refund `pending` changes on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundCheck {
    pub checks_done: u32,
    pub unknown_checks: u32,
    pub next_check_at: Timestamp,
    pub recent_checks: Vec<String>,
}

/// Shards of the due-check index: pending payments spread over this many partitions.
pub const DUE_SHARDS: u32 = 8;

/// The due-index shard of a payment: stable, spread by the id's random tail.
pub fn due_shard(payment_id: &PaymentId) -> u32 {
    payment_id
        .as_str()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % DUE_SHARDS
}

/// What one check that left a payment `pending` changes on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    pub checks_done: u32,
    pub unknown_checks: u32,
    pub next_check_at: Timestamp,
    pub recent_checks: Vec<String>,
    /// Set when the check re-created the trade at the provider and got its answer.
    pub created: Option<ProviderCreated>,
    /// What this check learned of our create's outcome: still unknown, or known now. `None`
    /// leaves the stored flag alone: the create itself may be setting it while the check runs
    /// on the payment as claimed.
    pub create_unknown: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed,
    Blocked(IdempotencyRecord),
}

/// The idempotency layer's own storage, usable alone; [`PaymentStore`] embeds the same claim in
/// its transactions.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// One conditional write: succeeds if the key is absent, expired, or in progress past its
    /// deadline; otherwise returns the blocking record.
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError>;
    async fn complete(
        &self,
        key: &str,
        resource_id: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError>;
    async fn record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCreate {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub money: Money,
    pub subject: String,
    pub expires_at: Timestamp,
}

impl ProviderCreate {
    /// The create of this payment: its id is the provider's order number, so asking again is
    /// the same trade there.
    pub fn for_payment(payment: &Payment) -> Self {
        Self {
            payment_id: payment.payment_id.clone(),
            order_id: payment.order_id.clone(),
            money: Money {
                amount: payment.amount_minor,
                currency: payment.currency,
            },
            subject: payment.subject.clone(),
            expires_at: payment.expires_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCreated {
    pub pay_url: String,
    pub provider_trade_no: Option<String>,
}

/// Outbound failures, split by what we know about the provider's side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider definitely did not do it.
    #[error("provider rejected the request: {code}: {message}")]
    Rejected { code: String, message: String },
    /// Timeout, 5xx, unverifiable answer: it may or may not have happened.
    #[error("provider outcome unknown: {0}")]
    Unknown(String),
}

/// A verified provider notification, in one shape for every provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub notify_id: String,
    pub payment_id: PaymentId,
    pub provider_trade_no: Option<String>,
    pub status: NotifiedStatus,
    /// What the provider says was paid; checked against our record in the write condition.
    pub amount_minor: i64,
    pub currency: Currency,
}

/// Why a callback was refused before touching any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackRejection {
    #[error("signature invalid: {0}")]
    BadSignature(String),
    #[error("timestamp {skew_s} s off the clock (limit {limit_s} s)")]
    StaleTimestamp { skew_s: u64, limit_s: u64 },
    #[error("malformed notification: {0}")]
    Malformed(String),
    #[error("notification for another merchant or app: {0}")]
    WrongMerchant(String),
}

/// What we tell the provider about a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackAnswer {
    /// Received and handled (or already handled): stop resending.
    Success,
    /// Could not handle it now: resend later.
    RetryLater,
    /// Not acceptable (bad signature, unknown payment): the provider's failure format.
    Rejected,
}

/// A reply in the provider's own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    fn name(&self) -> ProviderName;
    async fn create(&self, request: &ProviderCreate) -> Result<ProviderCreated, ProviderError>;
    /// The provider's view of our payment; `None` when the provider has no such trade.
    async fn query(&self, payment_id: &PaymentId) -> Result<Option<ProviderTrade>, ProviderError>;
    /// Closes an unpaid trade so it can no longer be paid.
    async fn close(&self, payment_id: &PaymentId) -> Result<CloseOutcome, ProviderError>;
    /// Asks for a refund; asking again with the same `refund_no` is the same refund.
    async fn refund(&self, refund: &ProviderRefund) -> Result<RefundState, ProviderError>;
    /// The provider's view of a refund; `None` when it has no such refund.
    async fn query_refund(
        &self,
        refund: &ProviderRefund,
    ) -> Result<Option<RefundState>, ProviderError>;
    /// Verifies the raw callback (signature over the raw body, replay window, merchant), then
    /// reads the verified content and says what it is: a payment or a refund notification
    /// (providers that send refund results to the same route: WeChat Pay `REFUND.*` events,
    /// UnionPay's refund `backUrl`, the sandbox). Nothing of the body is read to choose how to
    /// verify it. Pure: no I/O.
    fn verify_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Verified, CallbackRejection>;
    fn reply(&self, answer: CallbackAnswer, detail: &str) -> CallbackReply;
}

/// A callback whose signature, replay window and merchant have been checked, by what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Payment(Notification),
    Refund(RefundNotice),
}

/// A verified refund notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotice {
    pub notify_id: String,
    pub payment_id: PaymentId,
    /// Our refund number at the provider ([`ProviderRefund::refund_no`]).
    pub refund_no: String,
    /// `Processing` changes nothing.
    pub state: RefundState,
    pub amount_minor: i64,
}

/// A refund as a provider is asked for it, or about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRefund {
    pub payment_id: PaymentId,
    /// Our refund number at the provider: letters and digits, 32 long.
    pub refund_no: String,
    pub amount_minor: i64,
    /// The payment's amount.
    pub total_minor: i64,
    pub currency: Currency,
    pub reason: String,
    /// The provider's number for the paid trade (UnionPay refunds name the consume's `queryId`).
    pub provider_trade_no: Option<String>,
    /// When the refund was first asked for (UnionPay queries a transaction by its `txnTime`).
    pub requested_at: Timestamp,
}

/// The providers configured in this deployment.
#[derive(Clone, Default)]
pub struct Providers(HashMap<ProviderName, Arc<dyn PaymentProvider>>);

impl Providers {
    pub fn with(mut self, provider: Arc<dyn PaymentProvider>) -> Self {
        self.0.insert(provider.name(), provider);
        self
    }

    pub fn get(&self, name: ProviderName) -> Option<&Arc<dyn PaymentProvider>> {
        self.0.get(&name)
    }
}
