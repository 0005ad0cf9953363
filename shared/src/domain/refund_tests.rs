//! The refund's own table: status x report -> decision.

use super::*;
use crate::domain::PaymentStatus::*;

const NOW_S: i64 = 1_800_000_000;

fn refund(status: RefundStatus, kind: RefundKind) -> Refund {
    let at = Timestamp::from_unix_s(NOW_S - 60);
    Refund {
        refund_id: RefundId::parse("r-1").expect("refund id"),
        payment_id: PaymentId::parse("P1").expect("payment id"),
        amount_minor: AmountMinor::new(400).expect("amount"),
        currency: Currency::Cny,
        reason: "test".into(),
        kind,
        status,
        refund_no: "R1".into(),
        provider_trade_no: None,
        created_at: at,
        updated_at: at,
        next_check_at: None,
        checks_done: 0,
        unknown_checks: 0,
        recent_checks: Vec::new(),
        status_reason: None,
    }
}

fn summary(decision: &RefundDecision) -> String {
    match decision {
        RefundDecision::Settle { to, .. } => format!("settle {to}"),
        RefundDecision::AskAgain => "ask again".into(),
        RefundDecision::Wait { unknown: true, .. } => "wait unknown".into(),
        RefundDecision::Wait { .. } => "wait".into(),
        RefundDecision::Nothing(Nothing::Duplicate) => "duplicate".into(),
        RefundDecision::Nothing(Nothing::Ignored) => "ignored".into(),
        RefundDecision::Contradicted(c) => format!("compensate {}", c.kind),
        RefundDecision::AmountMismatch(a) => format!("!{}", a.name),
    }
}

#[test]
fn refund_table() {
    use RefundStatus::{Failed, Pending, Succeeded};
    let state = RefundReport::State;
    let notified = |state, amount_minor| RefundReport::Notified {
        state,
        amount_minor,
    };
    let failed = || RefundState::Failed("balance too low".into());
    let rows = [
        (Pending, state(RefundState::Succeeded), "settle succeeded"),
        (Pending, state(failed()), "settle failed"),
        (Pending, state(RefundState::Processing), "wait"),
        (
            Pending,
            RefundReport::RequestRefused("E: no".into()),
            "settle failed",
        ),
        (Pending, RefundReport::NoSuchRefund, "ask again"),
        (
            Pending,
            RefundReport::NoAnswer("timeout".into()),
            "wait unknown",
        ),
        (
            Pending,
            notified(RefundState::Succeeded, 400),
            "settle succeeded",
        ),
        (Pending, notified(RefundState::Processing, 400), "ignored"),
        (
            Pending,
            notified(RefundState::Succeeded, 399),
            "!refund_amount_mismatch",
        ),
        (
            Succeeded,
            notified(RefundState::Succeeded, 400),
            "duplicate",
        ),
        (Succeeded, state(failed()), "compensate refund_contradicted"),
        (
            Failed,
            notified(RefundState::Succeeded, 400),
            "compensate refund_contradicted",
        ),
        (Failed, state(failed()), "duplicate"),
        (
            Succeeded,
            RefundReport::NoAnswer("timeout".into()),
            "duplicate",
        ),
        (Failed, RefundReport::NoSuchRefund, "duplicate"),
    ];
    for (status, report, expected) in rows {
        let decision = decide_refund(
            &refund(status, RefundKind::Merchant),
            &report,
            Timestamp::from_unix_s(NOW_S),
        );
        assert_eq!(summary(&decision), expected, "{status} x {report:?}");
        if let RefundDecision::Settle { to, .. } = decision {
            assert!(refund_transition_is_legal(status, to), "{status} -> {to}");
        }
    }
    assert!(!refund_transition_is_legal(Succeeded, Failed));
    assert!(!refund_transition_is_legal(Failed, Pending));
}

#[test]
fn a_human_is_told_when_a_refund_runs_long_or_a_late_payment_stays_unrefunded() {
    let pending = refund(RefundStatus::Pending, RefundKind::Merchant);
    let now = Timestamp::from_unix_s(NOW_S);
    assert_eq!(refund_unresolved(&pending, (2, 2, 3), &[], now), None);
    let silent = refund_unresolved(&pending, (3, 3, 3), &[], now).expect("told");
    assert!(
        silent.reason.contains("stayed unknown through 3 checks"),
        "{}",
        silent.reason
    );
    let stuck = refund_unresolved(&pending, (3, 0, 3), &[], now).expect("told");
    assert!(
        stuck.reason.contains("still not settled after 3 checks"),
        "{}",
        stuck.reason
    );
    assert_eq!(stuck.id, "refund-unresolved#P1#r-1");

    let late = refund(RefundStatus::Pending, RefundKind::LatePayment);
    assert_eq!(
        after_settled(&late, RefundStatus::Succeeded, None, now),
        None
    );
    assert_eq!(
        after_settled(&pending, RefundStatus::Failed, None, now),
        None
    );
    let unrefunded = after_settled(&late, RefundStatus::Failed, Some("no"), now).expect("told");
    assert_eq!(unrefunded.kind, "late_payment_unrefunded");
}

#[test]
fn status_follows_the_refunded_sum() {
    assert_eq!(status_after_refunds(100, 1), PartiallyRefunded);
    assert_eq!(status_after_refunds(100, 99), PartiallyRefunded);
    assert_eq!(status_after_refunds(100, 100), Refunded);
}
