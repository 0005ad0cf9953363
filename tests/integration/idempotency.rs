//! The idempotency layer alone against moto: the claim's conditional write, completion by the
//! holder only, and what `decide` makes of the record that blocked a claim. Every condition compares
//! against the `now` passed in, so the tests use explicit timestamps, never the real clock.

use shared::domain::Timestamp;
use shared::domain::idempotency::{
    IdempotencyRecord, NextAction, RecordStatus, StoredResponse, decide,
};
use shared::ports::{ClaimOutcome, IdempotencyStore, StoreError};
use shared::store::DynamoIdempotency;
use tests::{dynamo, fresh_tables, unique};

/// An instant far from the real clock, so nothing here can depend on it.
const T0_MS: i64 = 4_000_000_000_000;

fn at_ms(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(T0_MS + ms)
}

fn at(s: i64) -> Timestamp {
    at_ms(s * 1000)
}

fn response(status: u16, body: &str) -> StoredResponse {
    StoredResponse {
        status,
        body: body.to_owned(),
    }
}

/// The 201 a create stores; non-ASCII and escaped quotes must come back byte for byte.
const CREATED: &str = r#"{"payment_id":"P1","subject":"caf\u00e9 \"q\" é","pay_url":null}"#;

enum Expect {
    Claimed,
    /// The claim is refused and `decide` on the returned record gives this.
    Blocked(NextAction),
}

enum Step {
    /// `holder` claims at `now` for a request hashing to `hash`, in progress until `until`, dead at `expires`.
    Claim {
        now: Timestamp,
        hash: &'static str,
        holder: &'static str,
        until: Timestamp,
        expires: Timestamp,
        expect: Expect,
    },
    /// `holder` completes the record with `response`; `ok` says whether that must succeed.
    Complete {
        holder: &'static str,
        response: StoredResponse,
        ok: bool,
    },
}

/// A claim in progress for 30 s that lives for an hour.
fn claim(now_s: i64, hash: &'static str, holder: &'static str, expect: Expect) -> Step {
    claim_timed(
        at(now_s),
        hash,
        holder,
        at(now_s + 30),
        at(now_s + 3600),
        expect,
    )
}

/// Like [`claim`], with the deadline `until` and expiry `expires` given rather than derived.
fn claim_timed(
    now: Timestamp,
    hash: &'static str,
    holder: &'static str,
    until: Timestamp,
    expires: Timestamp,
    expect: Expect,
) -> Step {
    Step::Claim {
        now,
        hash,
        holder,
        until,
        expires,
        expect,
    }
}

fn complete(holder: &'static str, response: StoredResponse, ok: bool) -> Step {
    Step::Complete {
        holder,
        response,
        ok,
    }
}

/// Runs `steps` on a fresh key, checking each outcome and, after each step, that the stored record
/// is exactly what the successful steps so far put there.
async fn check(store: &DynamoIdempotency, name: &str, steps: Vec<Step>) {
    let key = format!("create-payment#{}", unique("idem"));
    let mut model: Option<IdempotencyRecord> = None;
    for (i, step) in steps.into_iter().enumerate() {
        let case = format!("{name}, step {i}");
        match step {
            Step::Claim {
                now,
                hash,
                holder,
                until,
                expires,
                expect,
            } => {
                let record = IdempotencyRecord::claim(
                    key.clone(),
                    hash.into(),
                    until,
                    expires,
                    holder.into(),
                );
                let outcome = store
                    .claim(&record, now)
                    .await
                    .unwrap_or_else(|e| panic!("{case}: {e:#}"));
                match (expect, outcome) {
                    (Expect::Claimed, ClaimOutcome::Claimed) => model = Some(record),
                    (Expect::Blocked(action), ClaimOutcome::Blocked(existing)) => {
                        assert_eq!(
                            Some(&existing),
                            model.as_ref(),
                            "{case}: the blocking record"
                        );
                        assert_eq!(decide(existing, hash, now), action, "{case}: decision");
                    }
                    (Expect::Claimed, other) => panic!("{case}: expected a claim, got {other:?}"),
                    (Expect::Blocked(action), other) => {
                        panic!("{case}: expected blocked ({action:?}), got {other:?}")
                    }
                }
            }
            Step::Complete {
                holder,
                response,
                ok,
            } => {
                let result = store.complete(&key, holder, &response).await;
                if ok {
                    result.unwrap_or_else(|e| panic!("{case}: complete failed: {e:#}"));
                    let record = model
                        .as_mut()
                        .unwrap_or_else(|| panic!("{case}: completed a record that is not there"));
                    record.status = RecordStatus::Completed;
                    record.response = Some(response);
                } else {
                    assert!(
                        matches!(result, Err(StoreError::Unexpected(_))),
                        "{case}: complete by {holder} should fail: {result:?}"
                    );
                }
            }
        }
        let stored = store
            .record(&key)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:#}"));
        assert_eq!(stored, model, "{case}: stored record");
    }
}

async fn store() -> DynamoIdempotency {
    let client = dynamo(None).await;
    let (_, idempotency) = fresh_tables(&client).await;
    DynamoIdempotency::new(client, idempotency)
}

#[tokio::test]
async fn claims_and_decisions() {
    use Expect::{Blocked, Claimed};
    use NextAction::{InProgress, Mismatch, Replay};
    let store = store().await;
    let cases: Vec<(&str, Vec<Step>)> = vec![
        ("first claim", vec![claim(0, "h1", "P1", Claimed)]),
        (
            "second claim while in progress",
            vec![
                claim(0, "h1", "P1", Claimed),
                // 20 s of the 30 s deadline are left: retry after 21 s.
                claim(10, "h1", "P2", Blocked(InProgress { retry_after_s: 21 })),
                claim(29, "h1", "P2", Blocked(InProgress { retry_after_s: 2 })),
            ],
        ),
        (
            "in progress past its deadline is taken over",
            vec![
                claim_timed(at(0), "h1", "P1", at(1), at(3600), Claimed),
                claim_timed(
                    at_ms(999),
                    "h1",
                    "P2",
                    at(2),
                    at(3600),
                    Blocked(InProgress { retry_after_s: 1 }),
                ),
                claim_timed(at(2), "h1", "P2", at(32), at(3600), Claimed),
            ],
        ),
        (
            "in progress at exactly its deadline is taken over",
            vec![
                claim_timed(at(0), "h1", "P1", at(1), at(3600), Claimed),
                claim_timed(at(1), "h1", "P2", at(31), at(3600), Claimed),
            ],
        ),
        (
            "completed record replays its response",
            vec![
                claim(0, "h1", "P1", Claimed),
                complete("P1", response(201, CREATED), true),
                claim(60, "h1", "P2", Blocked(Replay(response(201, CREATED)))),
                // Long after the in-progress deadline: a completed record still answers.
                claim(3599, "h1", "P2", Blocked(Replay(response(201, CREATED)))),
            ],
        ),
        (
            "a stored refusal replays too",
            vec![
                claim(0, "h1", "P1", Claimed),
                complete(
                    "P1",
                    response(
                        502,
                        r#"{"error":{"code":"provider_rejected","message":"x"}}"#,
                    ),
                    true,
                ),
                claim(
                    1,
                    "h1",
                    "P2",
                    Blocked(Replay(response(
                        502,
                        r#"{"error":{"code":"provider_rejected","message":"x"}}"#,
                    ))),
                ),
            ],
        ),
        (
            "different request while completed",
            vec![
                claim(0, "h1", "P1", Claimed),
                complete("P1", response(201, CREATED), true),
                claim(5, "h2", "P2", Blocked(Mismatch)),
            ],
        ),
        (
            "different request while in progress",
            vec![
                claim(0, "h1", "P1", Claimed),
                claim(5, "h2", "P2", Blocked(Mismatch)),
            ],
        ),
        (
            "completed record past its expiry is claimed afresh",
            vec![
                claim_timed(at(0), "h1", "P1", at(30), at(100), Claimed),
                complete("P1", response(201, CREATED), true),
                claim(99, "h1", "P2", Blocked(Replay(response(201, CREATED)))),
                // Dead records are not mismatches: a different request takes the key.
                claim(100, "h2", "P2", Claimed),
            ],
        ),
        (
            "in progress past its expiry is claimed afresh",
            vec![
                claim_timed(at(0), "h1", "P1", at(600), at(100), Claimed),
                claim(101, "h2", "P2", Claimed),
            ],
        ),
    ];
    for (name, steps) in cases {
        check(&store, name, steps).await;
    }
}

#[tokio::test]
async fn only_the_holder_completes() {
    use Expect::Claimed;
    let store = store().await;
    let created = || response(201, CREATED);
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "nothing to complete",
            vec![complete("P1", created(), false)],
        ),
        (
            "another resource id",
            vec![
                claim(0, "h1", "P1", Claimed),
                complete("P2", created(), false),
                complete("P1", created(), true),
            ],
        ),
        (
            "completed once only",
            vec![
                claim(0, "h1", "P1", Claimed),
                complete("P1", created(), true),
                complete("P1", response(502, "{}"), false),
            ],
        ),
        (
            "the holder that was taken over",
            vec![
                claim_timed(at(0), "h1", "P1", at(1), at(3600), Claimed),
                claim_timed(at(2), "h1", "P2", at(32), at(3600), Claimed),
                complete("P1", created(), false),
                complete("P2", created(), true),
            ],
        ),
    ];
    for (name, steps) in cases {
        check(&store, name, steps).await;
    }
}
