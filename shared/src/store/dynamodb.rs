//! The DynamoDB adapter. Every state change is one conditional write or one transaction; a failed
//! condition returns the item as it was (`ReturnValuesOnConditionCheckFailure=ALL_OLD`) so callers
//! can tell a duplicate from a mismatch without a second request.
//!
//! Payments table (`pk`, `sk`):
//! - `PAY#<payment_id>` / `PAYMENT`: the payment.
//! - `PAY#<payment_id>` / `HIST#<version:05>`: one history entry per version.
//! - `ORDER#<order_id>` / `ORDER`: the order's uniqueness item, pointing at its payment.
//!
//! A pending payment also carries `due_shard` (`DUE#0` to `DUE#7`) next to `next_check_at`:
//! the sparse GSI `due-checks` (`due_shard`, `next_check_at`) finds due checks without a scan
//! and without one hot partition. Every transition out of `pending` removes both.
//!
//! A paid payment carries `effects_shard` (`EFX#0` to `EFX#7`) next to `effects_check_at` until
//! the check-back has seen every consumer record its effects: the sparse GSI `effects-checks`.
//! The table's stream (`NEW_AND_OLD_IMAGES`) is the outbox: every transition raises the
//! `PAYMENT` item's version in the transaction that makes it, and the relay publishes exactly
//! those changes (`app::relay`).
//!
//! Idempotency table (`id`): one record per key, Powertools-style (`expiration` is the TTL).

use std::collections::HashMap;

use anyhow::Context as _;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use serde::{Deserialize, Serialize};
use serde_dynamo::aws_sdk_dynamodb_1::{from_item, to_item};

use crate::domain::idempotency::{IdempotencyRecord, RecordStatus, StoredResponse};
use crate::domain::payment::{ExpiryGuard, Transition, check_transition};
use crate::domain::refund::{Refund, RefundStatus};
use crate::domain::{HistoryEntry, OrderId, Payment, PaymentId, Timestamp};
use crate::domain::{PaymentStatus, RefundId};
use crate::ports::{
    CheckRecord, ClaimOutcome, Compensation, CreateCompletion, DueCheck, IdempotencyStore,
    InsertOutcome, NewPayment, PaymentRecord, PaymentStore, RefundCheck, RefundInsert,
    RefundSettlement, StoreError, TransitionOutcome, due_shard,
};

/// A sparse GSI of items by when something about them is due: only items that carry its shard
/// attribute are in it, spread over [`crate::ports::DUE_SHARDS`] partitions by a hash of the
/// payment id.
pub struct SparseIndex {
    pub name: &'static str,
    /// The hash key: `<shard_prefix><n>`.
    pub shard_attribute: &'static str,
    pub shard_prefix: &'static str,
    /// The range key: unix ms.
    pub at_attribute: &'static str,
}

impl SparseIndex {
    fn shard_key(&self, payment_id: &PaymentId) -> String {
        format!("{}{}", self.shard_prefix, due_shard(payment_id))
    }
}

/// Pending payments and refunds by their next check with the provider.
pub const DUE_INDEX: SparseIndex = SparseIndex {
    name: "due-checks",
    shard_attribute: "due_shard",
    shard_prefix: "DUE#",
    at_attribute: "next_check_at",
};

/// Paid payments by the check-back's next look at their effects.
pub const EFFECTS_INDEX: SparseIndex = SparseIndex {
    name: "effects-checks",
    shard_attribute: "effects_shard",
    shard_prefix: "EFX#",
    at_attribute: "effects_check_at",
};

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn payment_pk(id: &PaymentId) -> String {
    format!("PAY#{id}")
}

fn history_sk(version: u32) -> String {
    format!("HIST#{version:05}")
}

fn order_pk(id: &OrderId) -> String {
    format!("ORDER#{id}")
}

fn with_key(mut item: Item, pk: String, sk: &str, kind: &str) -> Item {
    item.insert("pk".into(), s(pk));
    item.insert("sk".into(), s(sk));
    item.insert("kind".into(), s(kind));
    item
}

fn refund_sk(id: &RefundId) -> String {
    format!("REFUND#{id}")
}

fn refund_item(refund: &Refund) -> anyhow::Result<Item> {
    let mut item: Item = to_item(refund).context("serialize refund")?;
    if refund.status == RefundStatus::Pending && refund.next_check_at.is_some() {
        item.insert(
            "due_shard".into(),
            s(DUE_INDEX.shard_key(&refund.payment_id)),
        );
    }
    Ok(with_key(
        item,
        payment_pk(&refund.payment_id),
        &refund_sk(&refund.refund_id),
        "refund",
    ))
}

fn payment_item(payment: &Payment) -> anyhow::Result<Item> {
    let mut item: Item = to_item(payment).context("serialize payment")?;
    if payment.status == crate::domain::PaymentStatus::Pending && payment.next_check_at.is_some() {
        item.insert(
            "due_shard".into(),
            s(DUE_INDEX.shard_key(&payment.payment_id)),
        );
    }
    if payment.effects_check_at.is_some() {
        item.insert(
            "effects_shard".into(),
            s(EFFECTS_INDEX.shard_key(&payment.payment_id)),
        );
    }
    Ok(with_key(
        item,
        payment_pk(&payment.payment_id),
        "PAYMENT",
        "payment",
    ))
}

fn history_item(payment_id: &PaymentId, entry: &HistoryEntry) -> anyhow::Result<Item> {
    let item = to_item(entry).context("serialize history entry")?;
    Ok(with_key(
        item,
        payment_pk(payment_id),
        &history_sk(entry.version),
        "history",
    ))
}

fn put_new(table: &str, item: Item) -> anyhow::Result<TransactWriteItem> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// How a cancelled transaction ended, item by item.
pub(super) enum Cancelled {
    /// Item `index` failed its condition; `old` is the item as it was, if it existed.
    Condition {
        index: usize,
        old: Option<Item>,
    },
    Conflict,
    Other(String),
}

impl Cancelled {
    /// A cancellation the caller has no answer for: a lost write race stays retryable, anything
    /// else is unexpected, named by `what`.
    pub(super) fn unexpected(self, what: &str) -> StoreError {
        match self {
            Self::Conflict => StoreError::Conflict,
            Self::Condition { index, .. } => {
                StoreError::Unexpected(anyhow::anyhow!("{what}: condition {index} failed"))
            }
            Self::Other(codes) => {
                StoreError::Unexpected(anyhow::anyhow!("{what} cancelled: {codes}"))
            }
        }
    }
}

pub(super) fn classify(err: SdkError<TransactWriteItemsError>) -> Result<Cancelled, StoreError> {
    let service = err.into_service_error();
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = service else {
        if let TransactWriteItemsError::TransactionInProgressException(_) = service {
            return Ok(Cancelled::Conflict);
        }
        return Err(StoreError::Unexpected(
            anyhow::Error::new(service).context("transact write"),
        ));
    };
    let reasons: &[CancellationReason] = cancelled.cancellation_reasons();
    if reasons
        .iter()
        .any(|r| r.code() == Some("TransactionConflict"))
    {
        return Ok(Cancelled::Conflict);
    }
    if let Some((index, reason)) = reasons
        .iter()
        .enumerate()
        .find(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
    {
        return Ok(Cancelled::Condition {
            index,
            old: reason.item().cloned(),
        });
    }
    let codes: Vec<&str> = reasons
        .iter()
        .filter_map(CancellationReason::code)
        .collect();
    Ok(Cancelled::Other(codes.join(",")))
}

/// A cancelled transition transaction, read back: its first item is the guarded payment update.
fn transition_outcome(
    err: SdkError<TransactWriteItemsError>,
) -> Result<TransitionOutcome, StoreError> {
    match classify(err)? {
        Cancelled::Condition {
            index: 0,
            old: None,
        } => Ok(TransitionOutcome::NotFound),
        Cancelled::Condition {
            index: 0,
            old: Some(old),
        } => {
            let payment: Payment = from_item(old).context("deserialize payment")?;
            Ok(TransitionOutcome::GuardFailed(Box::new(payment)))
        }
        other => Err(other.unexpected("transition")),
    }
}

/// What every check that leaves an item pending writes.
struct Counters<'a> {
    next_check_at: Timestamp,
    checks_done: u32,
    unknown_checks: u32,
    recent_checks: &'a [String],
}

/// Sends a check's update; `false` when the item moved on (left `pending`, or another claim).
async fn send_check_update(
    update: UpdateItemFluentBuilder,
    set: &[&str],
) -> Result<bool, StoreError> {
    match update
        .update_expression(format!("SET {}", set.join(", ")))
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if is_condition_failure(&err) => Ok(false),
        Err(err) => Err(StoreError::Unexpected(
            anyhow::Error::new(err).context("record check"),
        )),
    }
}

/// Whether an `UpdateItem` failed on its condition.
pub(super) fn is_condition_failure(
    err: &SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
) -> bool {
    matches!(
        err.as_service_error(),
        Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(_))
    )
}

/// The idempotency table: usable on its own, and a source of writes for other transactions.
#[derive(Debug, Clone)]
pub struct DynamoIdempotency {
    client: Client,
    table: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyItem {
    id: String,
    status: RecordStatus,
    request_hash: String,
    /// Unix milliseconds.
    in_progress_expiration: i64,
    /// Unix seconds: the table's TTL attribute.
    expiration: i64,
    resource_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_body: Option<String>,
}

impl From<&IdempotencyRecord> for IdempotencyItem {
    fn from(r: &IdempotencyRecord) -> Self {
        Self {
            id: r.key.clone(),
            status: r.status,
            request_hash: r.request_hash.clone(),
            in_progress_expiration: r.in_progress_expires_at.unix_ms(),
            expiration: r.expires_at.unix_s(),
            resource_id: r.resource_id.clone(),
            response_status: r.response.as_ref().map(|r| r.status),
            response_body: r.response.as_ref().map(|r| r.body.clone()),
        }
    }
}

impl From<IdempotencyItem> for IdempotencyRecord {
    fn from(i: IdempotencyItem) -> Self {
        let response = match (i.response_status, i.response_body) {
            (Some(status), Some(body)) => Some(StoredResponse { status, body }),
            _ => None,
        };
        Self {
            key: i.id,
            status: i.status,
            request_hash: i.request_hash,
            in_progress_expires_at: Timestamp::from_unix_ms(i.in_progress_expiration),
            expires_at: Timestamp::from_unix_s(i.expiration),
            resource_id: i.resource_id,
            response,
        }
    }
}

fn record_from_item(item: Item) -> Result<IdempotencyRecord, StoreError> {
    let item: IdempotencyItem = from_item(item).context("deserialize idempotency record")?;
    Ok(item.into())
}

impl DynamoIdempotency {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The claim as a conditional put: absent, expired, or in progress past its deadline.
    pub fn claim_put(&self, record: &IdempotencyRecord, now: Timestamp) -> anyhow::Result<Put> {
        self.claim_put_replacing(record, now, None)
    }

    /// [`Self::claim_put`], which may also take a record that names `replaces` (an order's
    /// payment that is over).
    pub fn claim_put_replacing(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
        replaces: Option<&PaymentId>,
    ) -> anyhow::Result<Put> {
        let item =
            to_item(IdempotencyItem::from(record)).context("serialize idempotency record")?;
        let mut condition = "attribute_not_exists(id) OR expiration <= :now_s OR (#status = :in_progress AND in_progress_expiration <= :now_ms)".to_owned();
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now_s", n(now.unix_s()))
            .expression_attribute_values(":now_ms", n(now.unix_ms()))
            .expression_attribute_values(":in_progress", s("IN_PROGRESS"))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(previous) = replaces {
            condition.push_str(" OR resource_id = :replaces");
            put = put.expression_attribute_values(":replaces", s(previous.as_str()));
        }
        Ok(put.condition_expression(condition).build()?)
    }

    /// Completes an in-progress record that we hold (same resource id) with its response.
    pub fn complete_update(
        &self,
        key: &str,
        resource_id: &str,
        response: &StoredResponse,
    ) -> anyhow::Result<Update> {
        Ok(Update::builder()
            .table_name(&self.table)
            .key("id", s(key))
            .update_expression(
                "SET #status = :completed, response_status = :rs, response_body = :rb",
            )
            .condition_expression("#status = :in_progress AND resource_id = :rid")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":completed", s("COMPLETED"))
            .expression_attribute_values(":in_progress", s("IN_PROGRESS"))
            .expression_attribute_values(":rid", s(resource_id))
            .expression_attribute_values(":rs", n(response.status))
            .expression_attribute_values(":rb", s(&response.body))
            .build()?)
    }
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotency {
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        let put = self.claim_put(record, now)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Claimed),
            Err(err) => match classify(err)? {
                Cancelled::Condition { old: Some(old), .. } => {
                    Ok(ClaimOutcome::Blocked(record_from_item(old)?))
                }
                Cancelled::Condition { old: None, .. } => Err(StoreError::Unexpected(
                    anyhow::anyhow!("claim failed without an old record"),
                )),
                other => Err(other.unexpected("claim")),
            },
        }
    }

    async fn complete(
        &self,
        key: &str,
        resource_id: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        let update = self.complete_update(key, resource_id, response)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match classify(err)? {
                Cancelled::Conflict => Err(StoreError::Conflict),
                _ => Err(StoreError::Unexpected(anyhow::anyhow!(
                    "idempotency record {key} is not ours to complete"
                ))),
            },
        }
    }

    async fn record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(key))
            .consistent_read(true)
            .send()
            .await
            .context("get idempotency record")?;
        out.item.map(record_from_item).transpose()
    }
}

/// The payments table plus the idempotency table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    idempotency: DynamoIdempotency,
    compensations: Option<String>,
    check_back_after_s: i64,
}

#[derive(Serialize)]
struct CompensationItem<'a> {
    id: &'a str,
    kind: &'a str,
    payment_id: &'a str,
    reason: &'a str,
    evidence: &'a [String],
    created_at: Timestamp,
    status: &'static str,
}

/// Adds a transition's guards beyond status and version (amount and currency, provider,
/// expiry) to its update's condition.
fn with_guards(
    t: &Transition,
    mut update: aws_sdk_dynamodb::types::builders::UpdateBuilder,
    condition: &mut String,
) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
    if let Some((amount, currency)) = t.amount_guard {
        condition.push_str(" AND amount_minor = :amount AND currency = :currency");
        update = update
            .expression_attribute_values(":amount", n(amount))
            .expression_attribute_values(":currency", s(currency.code()));
    }
    if let Some(provider) = t.provider_guard {
        condition.push_str(" AND provider = :provider");
        update = update.expression_attribute_values(":provider", s(provider.as_str()));
    }
    match t.expiry_guard {
        Some(ExpiryGuard::ExpiredBy(now)) => {
            condition.push_str(" AND expires_at <= :now");
            update = update.expression_attribute_values(":now", n(now.unix_ms()));
        }
        Some(ExpiryGuard::OpenAt(now)) => {
            condition.push_str(" AND expires_at > :now");
            update = update.expression_attribute_values(":now", n(now.unix_ms()));
        }
        None => {}
    }
    update
}

impl DynamoStore {
    pub fn new(
        client: Client,
        payments_table: impl Into<String>,
        idempotency_table: impl Into<String>,
    ) -> Self {
        let idempotency = DynamoIdempotency::new(client.clone(), idempotency_table);
        Self {
            client,
            table: payments_table.into(),
            idempotency,
            compensations: None,
            check_back_after_s: crate::domain::event::DEFAULT_CHECK_BACK_AFTER_S,
        }
    }

    /// How long after a payment is paid the check-back first looks for its effects.
    pub fn with_check_back_after(mut self, seconds: i64) -> Self {
        self.check_back_after_s = seconds;
        self
    }

    /// Claims a due check on item `sk` of the payment's partition: one conditional write that
    /// moves `next_check_at` to the lease's end if the item is pending and due, returning it.
    async fn claim_due(
        &self,
        payment_id: &PaymentId,
        sk: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Item>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(payment_pk(payment_id)))
            .key("sk", s(sk))
            .update_expression("SET next_check_at = :lease")
            .condition_expression("#status = :pending AND next_check_at <= :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":now", n(now.unix_ms()))
            .expression_attribute_values(":lease", n(lease_until.unix_ms()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(
                out.attributes.context("claim answered without the item")?,
            )),
            Err(err) if is_condition_failure(&err) => Ok(None),
            Err(err) => Err(StoreError::Unexpected(
                anyhow::Error::new(err).context("claim check"),
            )),
        }
    }

    /// The update of a check that left item `sk` pending, still held by this claim: the
    /// counters every check writes, and the `SET` clauses so far (callers may add).
    fn check_update(
        &self,
        payment_id: &PaymentId,
        sk: &str,
        lease_until: Timestamp,
        counters: &Counters<'_>,
    ) -> (UpdateItemFluentBuilder, Vec<&'static str>) {
        let recent = counters
            .recent_checks
            .iter()
            .map(|c| s(c.as_str()))
            .collect();
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(payment_pk(payment_id)))
            .key("sk", s(sk))
            .condition_expression("#status = :pending AND next_check_at = :lease")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":lease", n(lease_until.unix_ms()))
            .expression_attribute_values(":next", n(counters.next_check_at.unix_ms()))
            .expression_attribute_values(":done", n(counters.checks_done))
            .expression_attribute_values(":unknown", n(counters.unknown_checks))
            .expression_attribute_values(":recent", AttributeValue::L(recent));
        let set = vec![
            "next_check_at = :next",
            "checks_done = :done",
            "unknown_checks = :unknown",
            "recent_checks = :recent",
        ];
        (update, set)
    }

    /// A compensation record, as a put for a transaction or alone.
    fn compensation_put(&self, compensation: &Compensation) -> anyhow::Result<Put> {
        let table = self
            .compensations
            .as_deref()
            .context("no compensations table configured")?;
        let item = to_item(CompensationItem {
            id: &compensation.id,
            kind: compensation.kind,
            payment_id: compensation.payment_id.as_str(),
            reason: &compensation.reason,
            evidence: &compensation.evidence,
            created_at: compensation.created_at,
            status: "open",
        })
        .context("serialize compensation")?;
        Ok(Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .build()?)
    }

    /// Where [`PaymentStore::escalate`] puts its compensation records.
    pub fn with_compensations(mut self, table: impl Into<String>) -> Self {
        self.compensations = Some(table.into());
        self
    }

    /// The keys (payment id, sort key) due at `now` in one shard of a sparse index, at most
    /// `limit`, earliest first. One unreadable key must not stop the shard: it is skipped, loudly.
    async fn due_in(
        &self,
        index: &SparseIndex,
        shard: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(PaymentId, String)>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index.name)
            .key_condition_expression("#shard = :shard AND #at <= :now")
            .expression_attribute_names("#shard", index.shard_attribute)
            .expression_attribute_names("#at", index.at_attribute)
            .expression_attribute_values(":shard", s(format!("{}{shard}", index.shard_prefix)))
            .expression_attribute_values(":now", n(now.unix_ms()))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .with_context(|| format!("query {}", index.name))?;
        let mut keys = Vec::new();
        for item in out.items() {
            let (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) =
                (item.get("pk"), item.get("sk"))
            else {
                continue;
            };
            match pk.strip_prefix("PAY#").map(PaymentId::parse) {
                Some(Ok(payment_id)) => keys.push((payment_id, sk.clone())),
                _ => tracing::error!(pk, index = index.name, "unreadable payment key skipped"),
            }
        }
        Ok(keys)
    }

    /// The guarded update of a transition. Its condition carries status, version and, when the
    /// trigger reported them, amount and currency.
    fn transition_update(&self, t: &Transition) -> anyhow::Result<Update> {
        let mut set = vec![
            "#status = :to",
            "#version = :new_version",
            "updated_at = :at",
        ];
        let mut remove = vec![];
        let mut condition = "#status = :from AND #version = :expected".to_owned();
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(payment_pk(&t.payment_id)))
            .key("sk", s("PAYMENT"))
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":to", s(t.to.as_str()))
            .expression_attribute_values(":from", s(t.from.as_str()))
            .expression_attribute_values(":expected", n(t.expected_version))
            .expression_attribute_values(":new_version", n(t.new_version()))
            .expression_attribute_values(":at", n(t.at.unix_ms()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        update = with_guards(t, update, &mut condition);
        match &t.reason {
            Some(reason) => {
                set.push("status_reason = :reason");
                update = update.expression_attribute_values(":reason", s(reason));
            }
            None => remove.push("status_reason"),
        }
        if let Some(trade_no) = &t.provider_trade_no {
            set.push("provider_trade_no = :trade_no");
            update = update.expression_attribute_values(":trade_no", s(trade_no));
        }
        if t.to != crate::domain::PaymentStatus::Pending {
            remove.push("next_check_at");
            remove.push("due_shard");
        }
        if let Some(at) = t.effects_check_at(self.check_back_after_s) {
            set.push("effects_shard = :effects_shard");
            set.push("effects_check_at = :effects_at");
            update = update
                .expression_attribute_values(
                    ":effects_shard",
                    s(EFFECTS_INDEX.shard_key(&t.payment_id)),
                )
                .expression_attribute_values(":effects_at", n(at.unix_ms()));
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        Ok(update
            .update_expression(expression)
            .condition_expression(condition)
            .build()?)
    }

    fn transition_items(&self, t: &Transition) -> anyhow::Result<Vec<TransactWriteItem>> {
        check_transition(t.from, t.to)?;
        Ok(vec![
            TransactWriteItem::builder()
                .update(self.transition_update(t)?)
                .build(),
            put_new(
                &self.table,
                history_item(&t.payment_id, &t.history_entry())?,
            )?,
        ])
    }

    fn payment_data_update(
        &self,
        id: &PaymentId,
        completion: &CreateCompletion,
    ) -> anyhow::Result<Update> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(payment_pk(id)))
            .key("sk", s("PAYMENT"))
            .condition_expression("attribute_exists(pk)");
        let update = match completion {
            CreateCompletion::Accepted {
                pay_url,
                provider_trade_no: Some(trade_no),
            } => update
                .update_expression("SET pay_url = :url, provider_trade_no = :trade_no")
                .expression_attribute_values(":url", s(pay_url))
                .expression_attribute_values(":trade_no", s(trade_no)),
            CreateCompletion::Accepted {
                pay_url,
                provider_trade_no: None,
            } => update
                .update_expression("SET pay_url = :url")
                .expression_attribute_values(":url", s(pay_url)),
            CreateCompletion::Unknown => update
                .update_expression("SET create_unknown = :yes")
                .expression_attribute_values(":yes", AttributeValue::Bool(true)),
            CreateCompletion::Rejected(_) => {
                anyhow::bail!("a rejection is a transition, not a data update")
            }
        };
        Ok(update.build()?)
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), SdkError<TransactWriteItemsError>> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
    }
}

/// The order's uniqueness item: new, or moved over from the payment it replaces (only from
/// that one).
fn order_item(
    table: &str,
    payment: &Payment,
    replaces: Option<&PaymentId>,
) -> Result<TransactWriteItem, StoreError> {
    let item = match replaces {
        None => {
            let mut order = HashMap::new();
            order.insert("payment_id".to_owned(), s(payment.payment_id.as_str()));
            order.insert("created_at".to_owned(), n(payment.created_at.unix_ms()));
            order.insert("attempt".to_owned(), n(payment.attempt));
            put_new(
                table,
                with_key(order, order_pk(&payment.order_id), "ORDER", "order"),
            )?
        }
        // The order's next attempt: its item moves over, only from the payment replaced.
        Some(previous) => {
            let update = Update::builder()
                .table_name(table)
                .key("pk", s(order_pk(&payment.order_id)))
                .key("sk", s("ORDER"))
                .update_expression(
                    "SET payment_id = :new, created_at = :created, attempt = :attempt",
                )
                .condition_expression("payment_id = :previous")
                .expression_attribute_values(":new", s(payment.payment_id.as_str()))
                .expression_attribute_values(":created", n(payment.created_at.unix_ms()))
                .expression_attribute_values(":attempt", n(payment.attempt))
                .expression_attribute_values(":previous", s(previous.as_str()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .context("order item update")?;
            TransactWriteItem::builder().update(update).build()
        }
    };
    Ok(item)
}

/// The refund's side of a settlement: from `pending` only.
fn refund_settle_update(
    table: &str,
    settle: &RefundSettlement,
) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
    let refund = Update::builder()
        .table_name(table)
        .key("pk", s(payment_pk(&settle.payment_id)))
        .key("sk", s(refund_sk(&settle.refund_id)))
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":pending", s("pending"))
        .expression_attribute_values(":to", s(settle.to.as_str()))
        .expression_attribute_values(":at", n(settle.at.unix_ms()))
        .condition_expression("#status = :pending");
    match &settle.reason {
        Some(reason) => refund
            .update_expression("SET #status = :to, updated_at = :at, status_reason = :reason REMOVE next_check_at, due_shard")
            .expression_attribute_values(":reason", s(reason)),
        None => refund.update_expression(
            "SET #status = :to, updated_at = :at REMOVE next_check_at, due_shard",
        ),
    }
}

#[async_trait]
impl PaymentStore for DynamoStore {
    async fn insert_payment(
        &self,
        new: &NewPayment,
        now: Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        let payment = &new.payment;
        let order_item = order_item(&self.table, payment, new.replaces.as_ref())?;
        let claim = self
            .idempotency
            .claim_put_replacing(&new.claim, now, new.replaces.as_ref())?;
        let items = vec![
            TransactWriteItem::builder().put(claim).build(),
            put_new(&self.table, payment_item(payment)?)?,
            order_item,
            put_new(
                &self.table,
                history_item(&payment.payment_id, &new.history)?,
            )?,
        ];
        let Err(err) = self.transact(items).await else {
            return Ok(InsertOutcome::Inserted);
        };
        match classify(err)? {
            Cancelled::Condition {
                index: 0,
                old: Some(old),
            } => Ok(InsertOutcome::KeyTaken(record_from_item(old)?)),
            Cancelled::Condition {
                index: 2,
                old: Some(old),
            } => {
                let payment_id = match old.get("payment_id") {
                    Some(AttributeValue::S(id)) => {
                        PaymentId::parse(id).context("order item payment_id")?
                    }
                    _ => {
                        return Err(StoreError::Unexpected(anyhow::anyhow!(
                            "order item without payment_id"
                        )));
                    }
                };
                Ok(InsertOutcome::OrderTaken { payment_id })
            }
            other => Err(other.unexpected("insert payment")),
        }
    }

    async fn complete_create(
        &self,
        payment_id: &PaymentId,
        completion: &CreateCompletion,
        idempotency_key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        let mut items = match completion {
            CreateCompletion::Rejected(t) => self.transition_items(t)?,
            _ => vec![
                TransactWriteItem::builder()
                    .update(self.payment_data_update(payment_id, completion)?)
                    .build(),
            ],
        };
        let complete =
            self.idempotency
                .complete_update(idempotency_key, payment_id.as_str(), response)?;
        items.push(TransactWriteItem::builder().update(complete).build());
        let Err(err) = self.transact(items).await else {
            return Ok(());
        };
        Err(classify(err)?.unexpected("complete create"))
    }

    async fn apply_transition(
        &self,
        transition: &Transition,
    ) -> Result<TransitionOutcome, StoreError> {
        let Err(err) = self.transact(self.transition_items(transition)?).await else {
            return Ok(TransitionOutcome::Applied);
        };
        transition_outcome(err)
    }

    async fn insert_refund(
        &self,
        refund: &Refund,
        payment_amount_minor: i64,
        payment_statuses: &[PaymentStatus],
    ) -> Result<RefundInsert, StoreError> {
        let amount = refund.amount_minor.get();
        let mut statuses = Vec::new();
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(payment_pk(&refund.payment_id)))
            .key("sk", s("PAYMENT"))
            .update_expression(
                "SET refund_reserved_minor = if_not_exists(refund_reserved_minor, :zero) + :amount",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":amount", n(amount))
            .expression_attribute_values(":total", n(payment_amount_minor))
            .expression_attribute_values(":limit", n(payment_amount_minor - amount))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (i, status) in payment_statuses.iter().enumerate() {
            statuses.push(format!(":s{i}"));
            update = update.expression_attribute_values(format!(":s{i}"), s(status.as_str()));
        }
        let condition = format!(
            "#status IN ({}) AND amount_minor = :total AND (attribute_not_exists(refund_reserved_minor) OR refund_reserved_minor <= :limit)",
            statuses.join(", ")
        );
        let items = vec![
            put_new(&self.table, refund_item(refund)?)?,
            TransactWriteItem::builder()
                .update(
                    update
                        .condition_expression(condition)
                        .build()
                        .context("refund reservation")?,
                )
                .build(),
        ];
        let Err(err) = self.transact(items).await else {
            return Ok(RefundInsert::Inserted);
        };
        match classify(err)? {
            Cancelled::Condition {
                index: 0,
                old: Some(old),
            } => {
                let existing: Refund = from_item(old).context("deserialize refund")?;
                Ok(RefundInsert::Exists(Box::new(existing)))
            }
            Cancelled::Condition {
                index: 1,
                old: Some(old),
            } => {
                let payment: Payment = from_item(old).context("deserialize payment")?;
                Ok(RefundInsert::Refused(Box::new(payment)))
            }
            Cancelled::Condition {
                index: 1,
                old: None,
            } => Ok(RefundInsert::PaymentNotFound),
            other => Err(other.unexpected("insert refund")),
        }
    }

    async fn refund(
        &self,
        payment_id: &PaymentId,
        refund_id: &RefundId,
    ) -> Result<Option<Refund>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(payment_pk(payment_id)))
            .key("sk", s(refund_sk(refund_id)))
            .consistent_read(true)
            .send()
            .await
            .context("get refund")?;
        Ok(out
            .item
            .map(|item| from_item(item).context("deserialize refund"))
            .transpose()?)
    }

    async fn refunds(&self, payment_id: &PaymentId) -> Result<Vec<Refund>, StoreError> {
        let mut refunds: Vec<Refund> = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :refund)")
                .expression_attribute_values(":pk", s(payment_pk(payment_id)))
                .expression_attribute_values(":refund", s("REFUND#"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .context("query refunds")?;
            for item in out.items() {
                refunds.push(from_item(item.clone()).context("deserialize refund")?);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        refunds.sort_by(|a, b| (a.created_at, &a.refund_id).cmp(&(b.created_at, &b.refund_id)));
        Ok(refunds)
    }

    async fn settle_refund(&self, settle: &RefundSettlement) -> Result<bool, StoreError> {
        let refund = refund_settle_update(&self.table, settle);
        let mut set = vec![];
        let mut payment = Update::builder()
            .table_name(&self.table)
            .key("pk", s(payment_pk(&settle.payment_id)))
            .key("sk", s("PAYMENT"))
            .condition_expression("#status = :from AND #version = :expected")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":from", s(settle.payment_status.as_str()))
            .expression_attribute_values(":expected", n(settle.payment_version))
            .expression_attribute_values(":amount", n(settle.amount_minor));
        match settle.to {
            RefundStatus::Succeeded => {
                set.push("refunded_minor = if_not_exists(refunded_minor, :zero) + :amount");
                payment = payment.expression_attribute_values(":zero", n(0));
            }
            RefundStatus::Failed => {
                set.push("refund_reserved_minor = refund_reserved_minor - :amount");
            }
            RefundStatus::Pending => {
                return Err(StoreError::Unexpected(anyhow::anyhow!(
                    "a refund is settled to succeeded or failed"
                )));
            }
        }
        let refund = refund.build().context("refund settlement")?;
        let mut items = vec![TransactWriteItem::builder().update(refund).build()];
        if let Some(t) = &settle.transition {
            check_transition(t.from, t.to).map_err(anyhow::Error::new)?;
            set.extend([
                "#status = :to",
                "#version = :new_version",
                "updated_at = :at",
            ]);
            payment = payment
                .expression_attribute_values(":to", s(t.to.as_str()))
                .expression_attribute_values(":new_version", n(t.new_version()))
                .expression_attribute_values(":at", n(t.at.unix_ms()));
            if let Some(reason) = &t.reason {
                set.push("status_reason = :reason");
                payment = payment.expression_attribute_values(":reason", s(reason));
            }
        }
        let payment = payment
            .update_expression(format!("SET {}", set.join(", ")))
            .build()
            .context("payment refund update")?;
        items.push(TransactWriteItem::builder().update(payment).build());
        if let Some(t) = &settle.transition {
            items.push(put_new(
                &self.table,
                history_item(&t.payment_id, &t.history_entry())?,
            )?);
        }
        let Err(err) = self.transact(items).await else {
            return Ok(true);
        };
        match classify(err)? {
            Cancelled::Condition { .. } => Ok(false),
            other => Err(other.unexpected("settle refund")),
        }
    }

    async fn claim_refund_check(
        &self,
        payment_id: &PaymentId,
        refund_id: &RefundId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Refund>, StoreError> {
        let item = self
            .claim_due(payment_id, &refund_sk(refund_id), now, lease_until)
            .await?;
        Ok(item
            .map(|item| from_item(item).context("deserialize refund"))
            .transpose()?)
    }

    async fn put_compensation(&self, compensation: &Compensation) -> Result<bool, StoreError> {
        let put = self.compensation_put(compensation)?;
        let result = self
            .client
            .put_item()
            .table_name(put.table_name())
            .set_item(Some(put.item().clone()))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(err) => Err(StoreError::Unexpected(
                anyhow::Error::new(err).context("put compensation"),
            )),
        }
    }

    async fn record_refund_check(
        &self,
        payment_id: &PaymentId,
        refund_id: &RefundId,
        lease_until: Timestamp,
        check: &RefundCheck,
    ) -> Result<bool, StoreError> {
        let counters = Counters {
            next_check_at: check.next_check_at,
            checks_done: check.checks_done,
            unknown_checks: check.unknown_checks,
            recent_checks: &check.recent_checks,
        };
        let (update, set) =
            self.check_update(payment_id, &refund_sk(refund_id), lease_until, &counters);
        send_check_update(update, &set).await
    }

    async fn escalate(
        &self,
        transition: &Transition,
        compensation: &Compensation,
    ) -> Result<TransitionOutcome, StoreError> {
        let put = self.compensation_put(compensation)?;
        let mut items = self.transition_items(transition)?;
        items.push(TransactWriteItem::builder().put(put).build());
        let Err(err) = self.transact(items).await else {
            return Ok(TransitionOutcome::Applied);
        };
        transition_outcome(err)
    }

    async fn due_checks(
        &self,
        shard: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueCheck>, StoreError> {
        let keys = self.due_in(&DUE_INDEX, shard, now, limit).await?;
        Ok(keys
            .into_iter()
            .filter_map(|(payment_id, sk)| {
                if sk == "PAYMENT" {
                    return Some(DueCheck::Payment(payment_id));
                }
                let refund_id = sk.strip_prefix("REFUND#")?;
                match RefundId::parse(refund_id) {
                    Ok(refund_id) => Some(DueCheck::Refund(payment_id, refund_id)),
                    Err(_) => {
                        tracing::error!(%payment_id, sk, "due index: unreadable refund key skipped");
                        None
                    }
                }
            })
            .collect())
    }

    async fn effect_checks_due(
        &self,
        shard: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<PaymentId>, StoreError> {
        let keys = self.due_in(&EFFECTS_INDEX, shard, now, limit).await?;
        Ok(keys
            .into_iter()
            .filter(|(_, sk)| sk == "PAYMENT")
            .map(|(payment_id, _)| payment_id)
            .collect())
    }

    async fn move_effect_check(
        &self,
        payment_id: &PaymentId,
        at: Timestamp,
        next: Option<Timestamp>,
        republished: u32,
    ) -> Result<bool, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(payment_pk(payment_id)))
            .key("sk", s("PAYMENT"))
            .condition_expression("effects_check_at = :at")
            .expression_attribute_values(":at", n(at.unix_ms()))
            .expression_attribute_values(":republished", n(republished));
        let update = match next {
            Some(next) => update
                .update_expression(
                    "SET effects_check_at = :next, effects_republished = :republished",
                )
                .expression_attribute_values(":next", n(next.unix_ms())),
            None => update.update_expression(
                "SET effects_republished = :republished REMOVE effects_check_at, effects_shard",
            ),
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failure(&err) => Ok(false),
            Err(err) => Err(StoreError::Unexpected(
                anyhow::Error::new(err).context("move effects check"),
            )),
        }
    }

    async fn claim_check(
        &self,
        payment_id: &PaymentId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Payment>, StoreError> {
        let item = self
            .claim_due(payment_id, "PAYMENT", now, lease_until)
            .await?;
        Ok(item
            .map(|item| from_item(item).context("deserialize payment"))
            .transpose()?)
    }

    async fn record_check(
        &self,
        payment_id: &PaymentId,
        lease_until: Timestamp,
        check: &CheckRecord,
    ) -> Result<bool, StoreError> {
        let counters = Counters {
            next_check_at: check.next_check_at,
            checks_done: check.checks_done,
            unknown_checks: check.unknown_checks,
            recent_checks: &check.recent_checks,
        };
        let (mut update, mut set) =
            self.check_update(payment_id, "PAYMENT", lease_until, &counters);
        if let Some(create_unknown) = check.create_unknown {
            set.push("create_unknown = :create_unknown");
            update = update.expression_attribute_values(
                ":create_unknown",
                AttributeValue::Bool(create_unknown),
            );
        }
        if let Some(created) = &check.created {
            set.push("pay_url = :url");
            update = update.expression_attribute_values(":url", s(&created.pay_url));
            if let Some(trade_no) = &created.provider_trade_no {
                set.push("provider_trade_no = :trade_no");
                update = update.expression_attribute_values(":trade_no", s(trade_no));
            }
        }
        send_check_update(update, &set).await
    }

    async fn payment(&self, payment_id: &PaymentId) -> Result<Option<PaymentRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(payment_pk(payment_id)))
            .consistent_read(true)
            .send()
            .await
            .context("query payment")?;
        let mut payment = None;
        let mut history = Vec::new();
        for item in out.items.unwrap_or_default() {
            match item.get("kind") {
                Some(AttributeValue::S(kind)) if kind == "payment" => {
                    payment = Some(from_item::<Payment>(item).context("deserialize payment")?);
                }
                Some(AttributeValue::S(kind)) if kind == "history" => {
                    history.push(from_item::<HistoryEntry>(item).context("deserialize history")?);
                }
                _ => {}
            }
        }
        Ok(payment.map(|payment| PaymentRecord { payment, history }))
    }
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        self.idempotency.claim(record, now).await
    }

    async fn complete(
        &self,
        key: &str,
        resource_id: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        self.idempotency.complete(key, resource_id, response).await
    }

    async fn record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.idempotency.record(key).await
    }
}

#[cfg(test)]
mod tests {
    //! moto never answers `TransactionConflict`, so the classification of DynamoDB's cancellation
    //! reasons is checked here on the SDK's own error values.

    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn cancelled(reasons: Vec<CancellationReason>) -> SdkError<TransactWriteItemsError> {
        let error = TransactionCanceledException::builder()
            .set_cancellation_reasons(Some(reasons))
            .build();
        let raw = Response::new(
            StatusCode::try_from(400).expect("status"),
            SdkBody::from(""),
        );
        SdkError::service_error(
            TransactWriteItemsError::TransactionCanceledException(error),
            raw,
        )
    }

    fn reason(code: &str, item: Option<Item>) -> CancellationReason {
        CancellationReason::builder()
            .code(code)
            .set_item(item)
            .build()
    }

    #[test]
    fn classifies_cancellation_reasons() {
        let conflict = cancelled(vec![
            reason("None", None),
            reason("TransactionConflict", None),
        ]);
        assert!(matches!(classify(conflict), Ok(Cancelled::Conflict)));

        let old: Item = [("status".to_owned(), s("paid"))].into_iter().collect();
        let failed = cancelled(vec![
            reason("ConditionalCheckFailed", Some(old.clone())),
            reason("None", None),
        ]);
        match classify(failed) {
            Ok(Cancelled::Condition {
                index: 0,
                old: Some(item),
            }) => assert_eq!(item, old),
            _ => panic!("expected the first condition to fail with its old item"),
        }

        let missing = cancelled(vec![
            reason("None", None),
            reason("ConditionalCheckFailed", None),
        ]);
        assert!(matches!(
            classify(missing),
            Ok(Cancelled::Condition {
                index: 1,
                old: None
            })
        ));

        let throttled = cancelled(vec![reason("ThrottlingError", None)]);
        assert!(
            matches!(classify(throttled), Ok(Cancelled::Other(codes)) if codes == "ThrottlingError")
        );
    }
}
