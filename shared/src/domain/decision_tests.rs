//! The decision table as a table: status x asker x report -> decision, plus a property that no
//! sequence of reports leaves the legal table or marks a tampered amount paid.

use proptest::prelude::*;

use super::*;
use crate::domain::payment::TRANSITIONS;
use crate::domain::{AmountMinor, Currency, OrderId};

const NOW_S: i64 = 1_800_000_000;
const AMOUNT: i64 = 1000;

fn payment(status: PaymentStatus) -> Payment {
    let at = Timestamp::from_unix_s(NOW_S - 600);
    Payment {
        payment_id: PaymentId::parse("01JTESTPAYMENT0000000000001").expect("id"),
        order_id: OrderId::parse("order-1").expect("order id"),
        amount_minor: AmountMinor::new(AMOUNT).expect("amount"),
        currency: Currency::Cny,
        provider: ProviderName::Sandbox,
        subject: "test".into(),
        attempt: 1,
        status,
        version: if status == PaymentStatus::Pending {
            INITIAL_VERSION
        } else {
            2
        },
        expires_at: Timestamp::from_unix_s(NOW_S + 300),
        created_at: at,
        updated_at: at,
        pay_url: Some("https://pay.example/1".into()),
        provider_trade_no: None,
        next_check_at: None,
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

fn ctx(asker: Asker) -> Context {
    Context {
        asker,
        provider: ProviderName::Sandbox,
        now: Timestamp::from_unix_s(NOW_S),
        max_unknown_checks: 3,
    }
}

fn trade(status: NotifiedStatus, amount_minor: i64) -> Report {
    Report::Trade(ProviderTrade {
        status,
        provider_trade_no: Some("T1".into()),
        amount_minor,
        currency: Currency::Cny,
    })
}

/// A decision in a few words: what it does, then `!alarm` when it raises one.
fn summary(decision: &Decision) -> String {
    let what = match &decision.action {
        Action::Move(t) => format!("move {}", t.to),
        Action::Escalate(t, c, a) => format!("escalate {} ({}) !{}", t.to, c.kind, a.name),
        Action::Ask(Ask::Close) => "ask close".into(),
        Action::Ask(Ask::QueryAfterClose) => "ask query".into(),
        Action::Ask(Ask::CreateAgain { trade_exists }) => {
            format!("ask create (exists: {trade_exists})")
        }
        Action::Wait(w) if w.unknown => "wait unknown".into(),
        Action::Wait(_) => "wait".into(),
        Action::RefundLatePayment(_) => "refund late payment".into(),
        Action::Compensate(c) => format!("compensate {}", c.kind),
        Action::Nothing(Nothing::Duplicate) => "duplicate".into(),
        Action::Nothing(Nothing::Ignored) => "ignored".into(),
        Action::Refuse => "refuse".into(),
    };
    match &decision.alarm {
        Some(alarm) => format!("{what} !{}", alarm.name),
        None => what,
    }
}

fn check(status: PaymentStatus, asker: Asker, report: Report, expected: &str) {
    let decision = decide(&payment(status), &report, &ctx(asker));
    assert_eq!(
        summary(&decision),
        expected,
        "{status} x {asker:?} x {report:?}"
    );
}

#[test]
fn table() {
    use Asker::*;
    use NotifiedStatus as T;
    use PaymentStatus::*;
    let refund = |amount_minor| Report::RefundSucceeded {
        refund_id: crate::domain::RefundId::parse("r-1").expect("refund id"),
        amount_minor,
    };
    let rows: Vec<(PaymentStatus, Asker, Report, &str)> = vec![
        // What the provider says of the trade, from a callback or a query.
        (Pending, Callback, trade(T::Paid, AMOUNT), "move paid"),
        (Pending, Poller, trade(T::Paid, AMOUNT), "move paid"),
        (
            Pending,
            Callback,
            trade(T::Paid, 1),
            "move exception !callback_amount_mismatch",
        ),
        (Pending, Callback, trade(T::Closed, AMOUNT), "move closed"),
        (Pending, Callback, trade(T::Pending, AMOUNT), "ignored"),
        (Pending, Poller, trade(T::Pending, AMOUNT), "wait"),
        (Pending, Merchant, trade(T::Pending, AMOUNT), "ask close"),
        (Pending, Merchant, trade(T::Closed, AMOUNT), "move closed"),
        (Paid, Callback, trade(T::Paid, AMOUNT), "duplicate"),
        (Paid, Callback, trade(T::Pending, AMOUNT), "ignored"),
        (
            Paid,
            Callback,
            trade(T::Paid, 1),
            "duplicate !callback_conflicts_with_final_state",
        ),
        (
            Paid,
            Callback,
            trade(T::Closed, AMOUNT),
            "duplicate !callback_conflicts_with_final_state",
        ),
        (
            PartiallyRefunded,
            Callback,
            trade(T::Paid, AMOUNT),
            "duplicate",
        ),
        (Refunded, Callback, trade(T::Paid, AMOUNT), "duplicate"),
        (Refunded, Callback, trade(T::Closed, AMOUNT), "duplicate"),
        (Closed, Callback, trade(T::Closed, AMOUNT), "duplicate"),
        (
            Closed,
            Callback,
            trade(T::Paid, AMOUNT),
            "refund late payment",
        ),
        (
            Failed,
            Poller,
            trade(T::Paid, AMOUNT),
            "refund late payment",
        ),
        (
            Closed,
            Callback,
            trade(T::Paid, 1),
            "compensate late_payment_amount_mismatch",
        ),
        (
            Failed,
            Callback,
            trade(T::Closed, AMOUNT),
            "duplicate !callback_conflicts_with_final_state",
        ),
        (
            Exception,
            Callback,
            trade(T::Paid, AMOUNT),
            "duplicate !paid_while_exception",
        ),
        (Exception, Callback, trade(T::Closed, AMOUNT), "duplicate"),
        // The poller's and the merchant's questions.
        (Pending, Poller, Report::NoTrade, "wait"),
        (Pending, Merchant, Report::NoTrade, "ask close"),
        (
            Pending,
            Poller,
            Report::NoAnswer("timeout".into()),
            "wait unknown",
        ),
        (
            Pending,
            Merchant,
            Report::NoAnswer("timeout".into()),
            "wait unknown",
        ),
        (
            Pending,
            Poller,
            Report::Close(CloseOutcome::Closed),
            "move closed",
        ),
        (
            Pending,
            Merchant,
            Report::Close(CloseOutcome::Closed),
            "move closed",
        ),
        (
            Pending,
            Poller,
            Report::Close(CloseOutcome::NoTrade),
            "wait",
        ),
        (
            Pending,
            Poller,
            Report::Close(CloseOutcome::LapsesAtExpiry),
            "wait",
        ),
        (
            Pending,
            Poller,
            Report::Close(CloseOutcome::AlreadyPaid),
            "ask query",
        ),
        (
            Pending,
            Poller,
            Report::TradeAfterClose(None),
            "wait unknown",
        ),
        (
            Pending,
            Poller,
            Report::TradeAfterClose(Some(paid_trade())),
            "move paid",
        ),
        (Paid, Poller, Report::NoTrade, "ignored"),
        (
            Closed,
            Poller,
            Report::Close(CloseOutcome::Closed),
            "ignored",
        ),
        // Our creates.
        (
            Pending,
            Create,
            Report::Created(CreateAnswer::Refused("E: no".into())),
            "move failed",
        ),
        (
            Pending,
            Create,
            Report::Created(CreateAnswer::Accepted),
            "ignored",
        ),
        (
            Pending,
            Poller,
            recreated(false, CreateAnswer::Refused("E: no".into())),
            "move failed",
        ),
        (
            Pending,
            Poller,
            recreated(true, CreateAnswer::Refused("E: dup".into())),
            "wait",
        ),
        (
            Pending,
            Poller,
            recreated(false, CreateAnswer::Accepted),
            "wait",
        ),
        (
            Pending,
            Poller,
            recreated(true, CreateAnswer::NoAnswer("5xx".into())),
            "wait unknown",
        ),
        // Refunds.
        (Paid, Refund, refund(400), "move partially_refunded"),
        (Paid, Refund, refund(AMOUNT), "move refunded"),
        (PartiallyRefunded, Refund, refund(400), "ignored"),
        (Closed, Refund, refund(AMOUNT), "move refunded"),
        (Failed, Refund, refund(AMOUNT), "move refunded"),
        (Pending, Refund, refund(AMOUNT), "ignored"),
        (Exception, Refund, refund(AMOUNT), "ignored"),
    ];
    for (status, asker, report, expected) in rows {
        check(status, asker, report, expected);
    }
}

fn paid_trade() -> ProviderTrade {
    ProviderTrade {
        status: NotifiedStatus::Paid,
        provider_trade_no: None,
        amount_minor: AMOUNT,
        currency: Currency::Cny,
    }
}

fn recreated(trade_exists: bool, answer: CreateAnswer) -> Report {
    Report::Recreated {
        trade_exists,
        answer,
    }
}

/// Rows that depend on more than the status: expiry, a lost create, the unknown-check limit,
/// another provider's word, a payment refunded in part.
#[test]
fn table_beyond_status() {
    let decided = |p: &Payment, asker, report: Report| summary(&decide(p, &report, &ctx(asker)));
    let mut expired = payment(PaymentStatus::Pending);
    expired.expires_at = Timestamp::from_unix_s(NOW_S - 1);
    assert_eq!(
        decided(&expired, Asker::Poller, Report::NoTrade),
        "ask close"
    );
    assert_eq!(
        decided(
            &expired,
            Asker::Poller,
            trade(NotifiedStatus::Pending, AMOUNT)
        ),
        "ask close"
    );
    // Within the grace after expiry, only the provider's own close ends it.
    assert_eq!(
        decided(
            &expired,
            Asker::Poller,
            Report::Close(CloseOutcome::NoTrade)
        ),
        "wait"
    );
    let mut lapsed = expired.clone();
    lapsed.expires_at = Timestamp::from_unix_s(NOW_S - CLOSE_GRACE_S);
    assert_eq!(
        decided(&lapsed, Asker::Poller, Report::Close(CloseOutcome::NoTrade)),
        "move closed"
    );
    assert_eq!(
        decided(
            &lapsed,
            Asker::Poller,
            Report::Close(CloseOutcome::LapsesAtExpiry)
        ),
        "move closed"
    );

    let mut code_lost = payment(PaymentStatus::Pending);
    code_lost.pay_url = None;
    assert_eq!(
        decided(&code_lost, Asker::Poller, Report::NoTrade),
        "ask create (exists: false)"
    );
    code_lost.create_unknown = true;
    assert_eq!(
        decided(
            &code_lost,
            Asker::Poller,
            trade(NotifiedStatus::Pending, AMOUNT)
        ),
        "ask create (exists: true)"
    );

    let mut silent = payment(PaymentStatus::Pending);
    silent.unknown_checks = 2;
    assert_eq!(
        decided(&silent, Asker::Poller, Report::NoAnswer("timeout".into())),
        "escalate exception (poll_exhausted) !poll_exhausted"
    );
    // Only the poller gives up; an answer, even "waiting", starts the count again.
    assert_eq!(
        decided(&silent, Asker::Merchant, Report::NoAnswer("t".into())),
        "wait unknown"
    );
    assert_eq!(decided(&silent, Asker::Poller, Report::NoTrade), "wait");

    let mut other = payment(PaymentStatus::Pending);
    other.provider = ProviderName::Alipay;
    assert_eq!(
        decided(&other, Asker::Callback, trade(NotifiedStatus::Paid, AMOUNT)),
        "refuse !callback_wrong_provider"
    );

    let mut partly = payment(PaymentStatus::PartiallyRefunded);
    partly.refunded_minor = 600;
    let rest = Report::RefundSucceeded {
        refund_id: crate::domain::RefundId::parse("r-2").expect("refund id"),
        amount_minor: 400,
    };
    assert_eq!(decided(&partly, Asker::Refund, rest), "move refunded");
}

/// The moves the table decides carry the guards their writes need.
#[test]
fn moves_carry_their_guards() {
    let pending = payment(PaymentStatus::Pending);
    let Action::Move(paid) = decide(
        &pending,
        &trade(NotifiedStatus::Paid, AMOUNT),
        &ctx(Asker::Callback),
    )
    .action
    else {
        panic!("paid is a move");
    };
    assert_eq!(paid.amount_guard, Some((AMOUNT, Currency::Cny)));
    assert_eq!(paid.provider_guard, Some(ProviderName::Sandbox));
    assert_eq!(paid.provider_trade_no.as_deref(), Some("T1"));
    assert_eq!(
        (paid.source, paid.expected_version),
        ("callback", INITIAL_VERSION)
    );

    let Action::Move(closed) = decide(
        &pending,
        &Report::Close(CloseOutcome::Closed),
        &ctx(Asker::Poller),
    )
    .action
    else {
        panic!("closed is a move");
    };
    assert_eq!(
        closed.expiry_guard,
        Some(ExpiryGuard::ExpiredBy(Timestamp::from_unix_s(NOW_S)))
    );
    let Action::Move(by_merchant) = decide(
        &pending,
        &Report::Close(CloseOutcome::Closed),
        &ctx(Asker::Merchant),
    )
    .action
    else {
        panic!("closed is a move");
    };
    assert_eq!(by_merchant.expiry_guard, None);
    assert_eq!(
        by_merchant.reason.as_deref(),
        Some("closed by the merchant: closed at the provider")
    );

    let first =
        first_move(&pending.payment_id, &paid_trade(), &ctx(Asker::Callback)).expect("a move");
    assert_eq!(
        (first.from, first.to, first.expected_version),
        (PaymentStatus::Pending, PaymentStatus::Paid, 1)
    );
    assert_eq!(first.amount_guard, Some((AMOUNT, Currency::Cny)));
    let waiting = ProviderTrade {
        status: NotifiedStatus::Pending,
        ..paid_trade()
    };
    assert_eq!(
        first_move(&pending.payment_id, &waiting, &ctx(Asker::Callback)),
        None
    );
}

fn any_report() -> impl Strategy<Value = Report> {
    let amount = prop_oneof![Just(AMOUNT), Just(1_i64), Just(AMOUNT + 1)];
    let status = prop_oneof![
        Just(NotifiedStatus::Paid),
        Just(NotifiedStatus::Pending),
        Just(NotifiedStatus::Closed)
    ];
    let close = prop_oneof![
        Just(CloseOutcome::Closed),
        Just(CloseOutcome::NoTrade),
        Just(CloseOutcome::LapsesAtExpiry),
        Just(CloseOutcome::AlreadyPaid)
    ];
    let create = prop_oneof![
        Just(CreateAnswer::Accepted),
        Just(CreateAnswer::Refused("E: no".into())),
        Just(CreateAnswer::NoAnswer("5xx".into()))
    ];
    prop_oneof![
        (status, amount.clone()).prop_map(|(s, a)| trade(s, a)),
        Just(Report::NoTrade),
        close.prop_map(Report::Close),
        Just(Report::TradeAfterClose(Some(paid_trade()))),
        Just(Report::NoAnswer("timeout".into())),
        create.clone().prop_map(Report::Created),
        (any::<bool>(), create).prop_map(|(trade_exists, answer)| recreated(trade_exists, answer)),
        (1..=AMOUNT).prop_map(|amount_minor| Report::RefundSucceeded {
            refund_id: crate::domain::RefundId::parse("r-p").expect("refund id"),
            amount_minor,
        }),
    ]
}

fn any_asker() -> impl Strategy<Value = Asker> {
    prop_oneof![
        Just(Asker::Callback),
        Just(Asker::Poller),
        Just(Asker::Merchant),
        Just(Asker::Create),
        Just(Asker::Refund)
    ]
}

fn tampered(report: &Report) -> bool {
    matches!(report, Report::Trade(t) if t.amount_minor != AMOUNT)
}

/// Plays a sequence of reports on one payment as the stores would (a move is written only
/// when its guard holds), with the clock moving on.
fn play(steps: &[(Asker, Report, i64)]) -> Result<(), TestCaseError> {
    let mut p = payment(PaymentStatus::Pending);
    let mut now_s = NOW_S;
    for (asker, report, advance_s) in steps {
        now_s += advance_s;
        let ctx = Context {
            now: Timestamp::from_unix_s(now_s),
            ..ctx(*asker)
        };
        let refunded = match report {
            Report::RefundSucceeded { amount_minor, .. } => *amount_minor,
            _ => 0,
        };
        // The store reserves before a refund can succeed: never above what is left.
        let refundable = matches!(
            p.status,
            PaymentStatus::Paid | PaymentStatus::PartiallyRefunded
        );
        if refunded > 0 && (!refundable || p.refunded_minor + refunded > AMOUNT) {
            continue;
        }
        let transition = match decide(&p, report, &ctx).action {
            Action::Move(t) | Action::Escalate(t, _, _) => t,
            _ => {
                p.refunded_minor += refunded;
                continue;
            }
        };
        prop_assert!(
            TRANSITIONS.contains(&(transition.from, transition.to)),
            "{transition:?}"
        );
        prop_assert_eq!(transition.from, p.status);
        if transition.to == PaymentStatus::Paid {
            prop_assert!(
                !tampered(report),
                "a tampered amount marked paid: {report:?}"
            );
        }
        if transition.guard_holds(&p) {
            p.refunded_minor += refunded;
            transition.apply_to(&mut p);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn no_sequence_of_reports_leaves_the_legal_table(
        steps in proptest::collection::vec((any_asker(), any_report(), 0_i64..400), 1..40)
    ) {
        play(&steps)?;
    }
}
