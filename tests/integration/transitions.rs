//! The DynamoDB store's guarded writes against moto, on fresh tables: a transition applies only
//! when status, version and (when given) amount, currency and expiry all match, all or nothing with its
//! history entry; the first insert of a payment claims its key and its order, all or nothing.

use aws_sdk_dynamodb::types::AttributeValue;
use shared::domain::event::DEFAULT_CHECK_BACK_AFTER_S;
use shared::domain::idempotency::IdempotencyRecord;
use shared::domain::idempotency::StoredResponse;
use shared::domain::payment::{
    ExpiryGuard, INITIAL_VERSION, Transition, TransitionError, check_transition,
};
use shared::domain::{
    AmountMinor, Currency, HistoryEntry, OrderId, Payment, PaymentId, PaymentStatus, ProviderName,
    Timestamp,
};
use shared::ports::{
    CheckRecord, CreateCompletion, IdempotencyStore, InsertOutcome, NewPayment, PaymentRecord,
    PaymentStore, StoreError, TransitionOutcome,
};
use shared::store::DynamoStore;
use tests::{dynamo, fresh_tables, unique};

use PaymentStatus::{Closed, Exception, Failed, Paid, Pending};

/// An instant far from the real clock; nothing here reads the real clock.
const T0_S: i64 = 4_000_000_000;
const AMOUNT: i64 = 1234;

fn at(s: i64) -> Timestamp {
    Timestamp::from_unix_s(T0_S + s)
}

fn new_payment_id() -> PaymentId {
    PaymentId::parse(&ulid::Ulid::new().to_string()).unwrap()
}

/// A pending payment at the initial version, created at `at(0)`, expiring at `expires_at`.
fn pending(payment_id: &PaymentId, order_id: &OrderId, expires_at: Timestamp) -> Payment {
    Payment {
        payment_id: payment_id.clone(),
        order_id: order_id.clone(),
        amount_minor: AmountMinor::new(AMOUNT).unwrap(),
        currency: Currency::Cny,
        provider: ProviderName::Sandbox,
        subject: "transition test".into(),
        attempt: 1,
        status: Pending,
        version: INITIAL_VERSION,
        expires_at,
        created_at: at(0),
        updated_at: at(0),
        pay_url: Some("http://127.0.0.1:9/pay".into()),
        provider_trade_no: None,
        // Set, so the tests see a transition out of pending clear it.
        next_check_at: Some(at(60)),
        checks_done: 0,
        unknown_checks: 0,
        recent_checks: Vec::new(),
        create_unknown: false,
        refund_reserved_minor: 0,
        refunded_minor: 0,
        status_reason: None,
        effects_check_at: None,
        effects_republished: 0,
    }
}

fn first_history() -> HistoryEntry {
    HistoryEntry {
        version: INITIAL_VERSION,
        from: None,
        to: Pending,
        at: at(0),
        source: "create".into(),
        reason: None,
    }
}

/// Everything the first write of a create puts down, with a claim live for 30 s.
fn new_payment(payment: Payment, key: &str) -> NewPayment {
    let claim = IdempotencyRecord::claim(
        key.into(),
        "hash".into(),
        at(30),
        at(3600),
        payment.payment_id.to_string(),
    );
    NewPayment {
        payment,
        history: first_history(),
        claim,
        replaces: None,
    }
}

/// A transition at `at(10)` of the payment under test.
fn transition(
    from: PaymentStatus,
    to: PaymentStatus,
    expected_version: u32,
    amount_guard: Option<i64>,
) -> Transition {
    // The payment id is replaced by the runner.
    let t = Transition::new(
        new_payment_id(),
        (from, to),
        expected_version,
        at(10),
        "callback",
    )
    .with_trade_no((to == Paid).then(|| "SBX42".to_owned()));
    let t = match amount_guard {
        Some(amount) => t.with_amount(amount, Currency::Cny),
        None => t,
    };
    if to == Exception {
        t.because("amount differs")
    } else {
        t
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Applied,
    GuardFailed,
    /// Not in the transition table: the store refuses to write it at all.
    Illegal,
}

/// The store under test and an order id prefix for this test.
async fn store() -> (DynamoStore, aws_sdk_dynamodb::Client, String) {
    let client = dynamo(None).await;
    let (payments, idempotency) = fresh_tables(&client).await;
    (
        DynamoStore::new(client.clone(), payments.clone(), idempotency),
        client,
        payments,
    )
}

/// How many items the payments table holds under `PAY#<payment_id>`, history included.
async fn items_under(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    payment_id: &PaymentId,
) -> usize {
    let out = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("PAY#{payment_id}")))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    out.items.unwrap_or_default().len()
}

/// Inserts a fresh pending payment expiring at `expires_at`, applies `steps` in order and checks each outcome; after each
/// step the stored payment and history are exactly what the applied steps made of them (a failed
/// guard changes nothing, and returns the payment as it is). Ends at `(status, version, history)`.
async fn check(
    store: &DynamoStore,
    name: &str,
    expires_at: Timestamp,
    steps: Vec<(Transition, Expect)>,
    end: (PaymentStatus, u32, usize),
) {
    let payment_id = new_payment_id();
    let order_id = OrderId::parse(&unique("tr")).unwrap();
    let inserted = pending(&payment_id, &order_id, expires_at);
    let outcome = store
        .insert_payment(
            &new_payment(inserted.clone(), &format!("create-payment#{order_id}")),
            at(0),
        )
        .await;
    assert_eq!(outcome.unwrap(), InsertOutcome::Inserted, "{name}: insert");
    let mut model = PaymentRecord {
        payment: inserted,
        history: vec![first_history()],
    };
    assert_eq!(
        store.payment(&payment_id).await.unwrap().as_ref(),
        Some(&model),
        "{name}: as inserted"
    );

    for (i, (step, expect)) in steps.into_iter().enumerate() {
        let step = Transition {
            payment_id: payment_id.clone(),
            ..step
        };
        let case = format!(
            "{name}, step {i} ({} -> {} at v{})",
            step.from, step.to, step.expected_version
        );
        let outcome = match (expect, store.apply_transition(&step).await) {
            (Expect::Illegal, Err(err)) => {
                assert!(
                    format!("{err:#}").contains("illegal transition"),
                    "{case}: {err:#}"
                );
                None
            }
            (_, result) => Some(result.unwrap_or_else(|e| panic!("{case}: {e:#}"))),
        };
        match (expect, outcome) {
            (Expect::Illegal, None) => {}
            (Expect::Applied, Some(TransitionOutcome::Applied)) => {
                step.apply_to(&mut model.payment);
                // A move to paid also schedules the check-back's look at its effects.
                if let Some(at) = step.effects_check_at(DEFAULT_CHECK_BACK_AFTER_S) {
                    model.payment.effects_check_at = Some(at);
                }
                model.history.push(step.history_entry());
            }
            (Expect::GuardFailed, Some(TransitionOutcome::GuardFailed(current))) => {
                assert_eq!(
                    *current, model.payment,
                    "{case}: the payment returned with the failed guard"
                );
                assert!(
                    !step.guard_holds(&current),
                    "{case}: the domain guard holds on what the store refused"
                );
            }
            (expect, outcome) => panic!("{case}: expected {expect:?}, got {outcome:?}"),
        }
        let stored = store
            .payment(&payment_id)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:#}"));
        assert_eq!(
            stored.as_ref(),
            Some(&model),
            "{case}: stored payment and history"
        );
    }
    let (status, version, history) = end;
    assert_eq!(
        (
            model.payment.status,
            model.payment.version,
            model.history.len()
        ),
        (status, version, history),
        "{name}: end"
    );
}

/// Transitions tried in order, with what each must do.
type Steps = Vec<(Transition, Expect)>;
/// The payment afterwards: status, version, history entries.
type Outcome = (PaymentStatus, u32, usize);

#[tokio::test]
async fn guarded_transitions() {
    use Expect::{Applied, GuardFailed, Illegal};
    let (store, _, _) = store().await;
    let paid = || transition(Pending, Paid, 1, Some(AMOUNT));
    let cases: Vec<(&str, Steps, Outcome)> = vec![
        ("pending -> paid", vec![(paid(), Applied)], (Paid, 2, 2)),
        (
            "pending -> paid without an amount guard",
            vec![(transition(Pending, Paid, 1, None), Applied)],
            (Paid, 2, 2),
        ),
        (
            "pending -> closed",
            vec![(transition(Pending, Closed, 1, None), Applied)],
            (Closed, 2, 2),
        ),
        (
            "pending -> exception sets the reason",
            vec![(transition(Pending, Exception, 1, None), Applied)],
            (Exception, 2, 2),
        ),
        (
            "the same transition again",
            vec![(paid(), Applied), (paid(), GuardFailed)],
            (Paid, 2, 2),
        ),
        (
            "another transition out of pending after paid",
            vec![
                (paid(), Applied),
                (transition(Pending, Closed, 1, None), GuardFailed),
            ],
            (Paid, 2, 2),
        ),
        // `from` does not match (the version does): pending claimed of a paid payment, and vice versa.
        (
            "from pending, but paid",
            vec![
                (paid(), Applied),
                (transition(Pending, Closed, 2, None), GuardFailed),
            ],
            (Paid, 2, 2),
        ),
        (
            "from paid, which no transition leaves",
            vec![(transition(Paid, Closed, 1, None), Illegal)],
            (Pending, 1, 1),
        ),
        // The version does not match (the status does).
        (
            "stale version",
            vec![
                (paid(), Applied),
                (transition(Pending, Closed, 1, None), GuardFailed),
            ],
            (Paid, 2, 2),
        ),
        (
            "version ahead",
            vec![(transition(Pending, Paid, 2, Some(AMOUNT)), GuardFailed)],
            (Pending, 1, 1),
        ),
        // The amount does not match; with the right amount the same transition applies.
        (
            "amount guard mismatch",
            vec![
                (transition(Pending, Paid, 1, Some(AMOUNT + 1)), GuardFailed),
                (transition(Pending, Paid, 1, Some(AMOUNT - 1)), GuardFailed),
                (paid(), Applied),
            ],
            (Paid, 2, 2),
        ),
    ];
    for (name, steps, end) in cases {
        check(&store, name, at(900), steps, end).await;
    }
}

/// `paid -> pending` is illegal in the domain table, and the store's guard refuses it when `from`
/// is not the payment's status. (The store does not consult the table itself: a transition whose
/// `from` matches is written whatever its `to`, so legality rests on how callers build transitions.)
#[tokio::test]
async fn illegal_transitions() {
    use Expect::{Applied, Illegal};
    let illegal = [
        (Paid, Pending),
        (Paid, Closed),
        (Closed, Paid),
        (Exception, Paid),
        (Pending, Pending),
    ];
    for (from, to) in illegal {
        assert_eq!(
            check_transition(from, to),
            Err(TransitionError::Illegal { from, to }),
            "{from} -> {to}"
        );
    }
    for to in [Paid, Closed, Failed, Exception] {
        assert_eq!(check_transition(Pending, to), Ok(()), "pending -> {to}");
    }
    let (store, _, _) = store().await;
    // Back to pending from a paid payment, by callers whose `from` is not what the payment is.
    let steps = vec![
        (transition(Pending, Paid, 1, Some(AMOUNT)), Applied),
        (transition(Pending, Pending, 2, None), Illegal),
        (transition(Closed, Pending, 2, None), Illegal),
        (transition(Exception, Pending, 2, None), Illegal),
        (transition(Paid, Pending, 2, None), Illegal),
    ];
    check(&store, "paid -> pending", at(900), steps, (Paid, 2, 2)).await;
}

#[tokio::test]
async fn unknown_payment_is_not_found_and_writes_nothing() {
    let (store, client, table) = store().await;
    let cases = [
        transition(Pending, Paid, 1, Some(AMOUNT)),
        transition(Pending, Closed, 1, None),
        transition(Pending, Failed, 2, None),
    ];
    for step in cases {
        let payment_id = new_payment_id();
        let step = Transition {
            payment_id: payment_id.clone(),
            ..step
        };
        let outcome = store.apply_transition(&step).await.unwrap();
        assert_eq!(
            outcome,
            TransitionOutcome::NotFound,
            "{} -> {}",
            step.from,
            step.to
        );
        // Not even the history entry of the cancelled transaction.
        assert_eq!(
            items_under(&client, &table, &payment_id).await,
            0,
            "{} -> {}",
            step.from,
            step.to
        );
        assert_eq!(store.payment(&payment_id).await.unwrap(), None);
    }
}

/// Expiry is part of the write condition only when the transition carries an `ExpiryGuard`
/// (transitions are at `at(10)`). Without one, as the callback sends `pending -> paid` on purpose,
/// a payment past its `expires_at` is paid like any other.
#[tokio::test]
async fn expiry_guard() {
    use Expect::{Applied, GuardFailed};
    let (store, _, _) = store().await;
    let with_expiry = |t: Transition, guard| t.with_expiry(guard);
    let paid_while_open = || {
        with_expiry(
            transition(Pending, Paid, 1, Some(AMOUNT)),
            ExpiryGuard::OpenAt(at(10)),
        )
    };
    let close_expired = || {
        with_expiry(
            transition(Pending, Closed, 1, None),
            ExpiryGuard::ExpiredBy(at(10)),
        )
    };
    let cases: Vec<(&str, Timestamp, Steps, Outcome)> = vec![
        (
            "expired, no expiry guard: paid applies",
            at(5),
            vec![(transition(Pending, Paid, 1, Some(AMOUNT)), Applied)],
            (Paid, 2, 2),
        ),
        (
            "open: paid while open applies",
            at(900),
            vec![(paid_while_open(), Applied)],
            (Paid, 2, 2),
        ),
        (
            "expired: paid while open is refused",
            at(5),
            vec![(paid_while_open(), GuardFailed)],
            (Pending, 1, 1),
        ),
        (
            "open: closing as expired is refused",
            at(11),
            vec![(close_expired(), GuardFailed)],
            (Pending, 1, 1),
        ),
        (
            "expired: closed, then a late paid is refused",
            at(5),
            vec![
                (close_expired(), Applied),
                (transition(Pending, Paid, 1, Some(AMOUNT)), GuardFailed),
            ],
            (Closed, 2, 2),
        ),
        // Expiring exactly at the transition's instant counts as expired, not open.
        (
            "expiring now: not open",
            at(10),
            vec![(paid_while_open(), GuardFailed), (close_expired(), Applied)],
            (Closed, 2, 2),
        ),
    ];
    for (name, expires_at, steps, end) in cases {
        check(&store, name, expires_at, steps, end).await;
    }
}

#[tokio::test]
async fn insert_claims_key_and_order_all_or_nothing() {
    let (store, client, table) = store().await;
    let order_id = OrderId::parse(&unique("ins")).unwrap();
    let other_order = OrderId::parse(&unique("ins-other")).unwrap();
    let key = format!("create-payment#{order_id}");
    let first = new_payment_id();
    let first_insert = new_payment(pending(&first, &order_id, at(900)), &key);

    struct Case {
        name: &'static str,
        payment_id: PaymentId,
        order_id: OrderId,
        key: String,
        now: Timestamp,
        expect: Result<InsertOutcome, &'static str>,
    }
    let case = |name, order_id: &OrderId, key: &str, now, expect| Case {
        name,
        payment_id: new_payment_id(),
        order_id: order_id.clone(),
        key: key.to_owned(),
        now,
        expect,
    };
    let cases = vec![
        case(
            "same order, same live key",
            &order_id,
            &key,
            at(1),
            Ok(InsertOutcome::KeyTaken(first_insert.claim.clone())),
        ),
        case(
            "same order, another key",
            &order_id,
            "create-payment#other-key",
            at(1),
            Ok(InsertOutcome::OrderTaken {
                payment_id: first.clone(),
            }),
        ),
        // The claim itself would succeed (its in-progress deadline passed) but the order is taken:
        // the whole transaction is cancelled and the old record stays.
        case(
            "same order, same dead key",
            &order_id,
            &key,
            at(31),
            Ok(InsertOutcome::OrderTaken {
                payment_id: first.clone(),
            }),
        ),
        Case {
            payment_id: first.clone(),
            ..case(
                "same payment id, other order and key",
                &other_order,
                "create-payment#third-key",
                at(1),
                Err("payment id taken"),
            )
        },
    ];

    assert_eq!(
        store.insert_payment(&first_insert, at(0)).await.unwrap(),
        InsertOutcome::Inserted
    );
    let as_inserted = store.payment(&first).await.unwrap();
    for c in cases {
        let new = new_payment(pending(&c.payment_id, &c.order_id, at(900)), &c.key);
        let outcome = store.insert_payment(&new, c.now).await;
        match (&c.expect, outcome) {
            (Ok(expected), Ok(got)) => assert_eq!(&got, expected, "{}", c.name),
            (Err(_), Err(StoreError::Unexpected(_))) => {}
            (expected, got) => panic!("{}: expected {expected:?}, got {got:?}", c.name),
        }
        // Nothing of the refused insert was written.
        if c.payment_id != first {
            assert_eq!(
                items_under(&client, &table, &c.payment_id).await,
                0,
                "{}",
                c.name
            );
        }
        assert_eq!(
            store.payment(&first).await.unwrap(),
            as_inserted,
            "{}: the first payment",
            c.name
        );
        assert_eq!(
            store.record(&key).await.unwrap().as_ref(),
            Some(&first_insert.claim),
            "{}: the first claim",
            c.name
        );
        if c.key != key {
            assert_eq!(
                store.record(&c.key).await.unwrap(),
                None,
                "{}: its own key",
                c.name
            );
        }
    }
    let order_item = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("ORDER#{other_order}")))
        .key("sk", AttributeValue::S("ORDER".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(
        order_item.item.is_none(),
        "the refused insert left its order item"
    );
}

/// The poller checks a payment as it claimed it; the create may record its unknown outcome in
/// between. The check's write must leave that alone (it once wrote back the stale flag, and the
/// lost code was then never asked for again).
#[tokio::test]
async fn a_check_never_undoes_what_the_create_recorded_meanwhile() {
    let client = dynamo(None).await;
    let (payments, idempotency) = fresh_tables(&client).await;
    let dynamo_store = DynamoStore::new(client, payments, idempotency);
    let memory_store = shared::store::MemoryStore::new();
    for (name, store) in [
        ("dynamodb", &dynamo_store as &dyn PaymentStore),
        ("memory", &memory_store),
    ] {
        let payment_id = new_payment_id();
        let order_id = OrderId::parse(&unique("race")).unwrap();
        let mut payment = pending(&payment_id, &order_id, at(900));
        payment.pay_url = None;
        let key = format!("create-payment#{order_id}");
        store
            .insert_payment(&new_payment(payment, &key), at(0))
            .await
            .unwrap();
        // The poller claims it while the create still waits for the provider ...
        let lease = at(180);
        let claimed = store.claim_check(&payment_id, at(60), lease).await.unwrap();
        assert!(!claimed.unwrap().create_unknown, "{name}");
        // ... whose answer never comes: the create records its outcome as unknown ...
        store
            .complete_create(
                &payment_id,
                &CreateCompletion::Unknown,
                &key,
                &StoredResponse {
                    status: 202,
                    body: "{}".into(),
                },
            )
            .await
            .unwrap();
        // ... and the check ends having learned nothing about the create.
        let check = CheckRecord {
            checks_done: 1,
            unknown_checks: 0,
            next_check_at: at(360),
            recent_checks: vec!["waiting for the payer".into()],
            created: None,
            create_unknown: None,
        };
        assert!(
            store
                .record_check(&payment_id, lease, &check)
                .await
                .unwrap(),
            "{name}"
        );
        let stored = store.payment(&payment_id).await.unwrap().unwrap().payment;
        assert!(
            stored.create_unknown,
            "{name}: the create's unknown outcome was lost"
        );
        assert_eq!(stored.checks_done, 1, "{name}");
        assert_eq!(stored.next_check_at, Some(at(360)), "{name}");
    }
}
