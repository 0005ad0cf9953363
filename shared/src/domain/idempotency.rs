//! The idempotency decision, with the semantics of AWS Lambda Powertools' idempotency utility:
//! one record per key, `IN_PROGRESS` while the first request runs, `COMPLETED` with the stored
//! response after. The record is claimed with one conditional write (see the store adapters);
//! this module only decides what to do with the record that blocked the claim.

use serde::{Deserialize, Serialize};

use super::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordStatus {
    InProgress,
    Completed,
}

/// The response returned to the caller, stored so that a replay returns it byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    pub status: RecordStatus,
    /// SHA-256 of the normalized request; a different request under the same key is a mismatch.
    pub request_hash: String,
    /// While `InProgress`, the record blocks others until this instant (the Lambda deadline).
    pub in_progress_expires_at: Timestamp,
    /// After this instant the record is dead and the key may be claimed afresh.
    pub expires_at: Timestamp,
    /// The resource the first request created (for payments, the payment id).
    pub resource_id: String,
    pub response: Option<StoredResponse>,
}

impl IdempotencyRecord {
    /// A fresh in-progress claim.
    pub fn claim(
        key: String,
        request_hash: String,
        in_progress_expires_at: Timestamp,
        expires_at: Timestamp,
        resource_id: String,
    ) -> Self {
        Self {
            key,
            status: RecordStatus::InProgress,
            request_hash,
            in_progress_expires_at,
            // Stored as the table's TTL attribute, in whole seconds; keep the domain in step.
            expires_at: Timestamp::from_unix_s(expires_at.unix_s()),
            resource_id,
            response: None,
        }
    }

    /// Whether the record still blocks a new claim at `now` (mirrors the claim's write condition).
    pub fn blocks_claim(&self, now: Timestamp) -> bool {
        let expired = self.expires_at <= now;
        let in_progress_expired =
            self.status == RecordStatus::InProgress && self.in_progress_expires_at <= now;
        !expired && !in_progress_expired
    }
}

/// What the caller does with a key whose claim failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextAction {
    /// Return the stored response unchanged.
    Replay(StoredResponse),
    /// Another invocation is working on it: 409 `in_progress` with `Retry-After`.
    InProgress { retry_after_s: u64 },
    /// Same key, different request: 409 `idempotency_mismatch`.
    Mismatch,
    /// The blocking record is dead (expired, or its in-progress deadline passed): take it over,
    /// reusing its resource id.
    TakeOver(IdempotencyRecord),
}

/// Decides what to do about the record that blocked a claim.
pub fn decide(existing: IdempotencyRecord, request_hash: &str, now: Timestamp) -> NextAction {
    if existing.request_hash != request_hash && existing.blocks_claim(now) {
        return NextAction::Mismatch;
    }
    if !existing.blocks_claim(now) {
        return NextAction::TakeOver(existing);
    }
    match existing.status {
        RecordStatus::Completed => match existing.response {
            Some(response) => NextAction::Replay(response),
            // A completed record always has a response; treat a damaged one as dead.
            None => NextAction::TakeOver(existing),
        },
        RecordStatus::InProgress => {
            let remaining_ms = existing
                .in_progress_expires_at
                .unix_ms()
                .saturating_sub(now.unix_ms());
            let retry_after_s = u64::try_from(remaining_ms.div_euclid(1000) + 1)
                .unwrap_or(1)
                .clamp(1, 60);
            NextAction::InProgress { retry_after_s }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: RecordStatus, in_progress_until_s: i64, expires_s: i64) -> IdempotencyRecord {
        IdempotencyRecord {
            key: "k".into(),
            status,
            request_hash: "h1".into(),
            in_progress_expires_at: Timestamp::from_unix_s(in_progress_until_s),
            expires_at: Timestamp::from_unix_s(expires_s),
            resource_id: "P1".into(),
            response: (status == RecordStatus::Completed).then(|| StoredResponse {
                status: 201,
                body: "{}".into(),
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_unix_s(100);
        let completed = record(RecordStatus::Completed, 90, 1000);
        assert!(
            matches!(decide(completed.clone(), "h1", now), NextAction::Replay(r) if r.status == 201)
        );
        assert_eq!(decide(completed, "h2", now), NextAction::Mismatch);

        let live = record(RecordStatus::InProgress, 130, 1000);
        assert_eq!(
            decide(live, "h1", now),
            NextAction::InProgress { retry_after_s: 31 }
        );

        let dead = record(RecordStatus::InProgress, 100, 1000);
        assert!(
            matches!(decide(dead, "h1", now), NextAction::TakeOver(r) if r.resource_id == "P1")
        );

        let expired = record(RecordStatus::Completed, 0, 100);
        assert!(matches!(
            decide(expired, "h2", now),
            NextAction::TakeOver(_)
        ));
    }
}
