//! The check-back (the "compensation queue" of RocketMQ's transactional messages): a paid
//! payment whose effects are not all recorded some time after payment gets its paid event
//! published again, to the consumers that miss it. It catches what the stream cannot: a record
//! past its 24 h retention, a relay that gave up. Consumers dedupe, so a republish is harmless.

use std::sync::Arc;

use futures::{StreamExt, stream};

use crate::domain::event::{Consumer, PaymentEvent};
use crate::domain::{Payment, PaymentId, PaymentStatus, Timestamp};
use crate::ports::{Clock, Effects, EventBus, PaymentStore};
use crate::telemetry;

/// After this many republishes without effects, every further one also raises an alarm.
pub const ALARM_AFTER_REPUBLISHES: u32 = 3;

pub struct CheckBackDeps<'a> {
    pub store: &'a dyn PaymentStore,
    /// Every consumer's effects (read only here).
    pub effects: &'a [Arc<dyn Effects>],
    pub bus: &'a dyn EventBus,
    /// Wait between republishes.
    pub after_s: i64,
    /// Payments per shard per run.
    pub page: usize,
    /// Payments checked at once.
    pub concurrency: usize,
    /// The run's now, read as it starts, and again before each check against `stop_at`.
    pub clock: &'a dyn Clock,
    /// No check starts at or after this instant (the invocation's deadline less a margin);
    /// what is left stays due for the next run.
    pub stop_at: Option<Timestamp>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckBackSummary {
    pub checked: usize,
    /// Every effect recorded: out of the index.
    pub complete: usize,
    pub republished: usize,
    pub failed: usize,
    /// Due, but not started before `stop_at`.
    pub left: usize,
}

/// One run over every shard: each shard's due page at the clock's now, checked with bounded
/// concurrency until `stop_at`.
pub async fn run_check_back(deps: &CheckBackDeps<'_>) -> CheckBackSummary {
    let now = deps.clock.now();
    let (due, unread) = super::due_in_every_shard("check-back", |shard| {
        deps.store.effect_checks_due(shard, now, deps.page)
    })
    .await;
    let mut summary = CheckBackSummary {
        failed: unread,
        ..CheckBackSummary::default()
    };
    let mut outcomes = stream::iter(due)
        .map(|payment_id| async move {
            if deps.stop_at.is_some_and(|stop| deps.clock.now() >= stop) {
                return None;
            }
            let checked = check(deps, &payment_id, now).await;
            if let Err(e) = &checked {
                tracing::warn!(%payment_id, error = format!("{e:#}"), "check-back: payment not checked");
            }
            Some(checked)
        })
        .buffer_unordered(deps.concurrency.max(1));
    while let Some(outcome) = outcomes.next().await {
        match outcome {
            None => summary.left += 1,
            Some(checked) => {
                summary.checked += 1;
                match checked {
                    Ok(Checked::Complete) => summary.complete += 1,
                    Ok(Checked::Republished) => summary.republished += 1,
                    Ok(Checked::Skipped) => {}
                    Err(_) => summary.failed += 1,
                }
            }
        }
    }
    summary
}

enum Checked {
    Complete,
    Republished,
    /// Moved on meanwhile (another run, or nothing to check).
    Skipped,
}

async fn check(
    deps: &CheckBackDeps<'_>,
    payment_id: &PaymentId,
    now: Timestamp,
) -> Result<Checked, anyhow::Error> {
    let Some(record) = deps.store.payment(payment_id).await? else {
        return Ok(Checked::Skipped);
    };
    let payment = &record.payment;
    // The index is eventually consistent; the item is not. Another run may have moved it on.
    let Some(at) = payment.effects_check_at.filter(|at| *at <= now) else {
        return Ok(Checked::Skipped);
    };
    // The paid transition: its entry rebuilds the very event the relay published.
    let Some(entry) = record
        .history
        .iter()
        .rev()
        .find(|h| h.to == PaymentStatus::Paid)
    else {
        deps.store
            .move_effect_check(payment_id, at, None, payment.effects_republished)
            .await?;
        return Ok(Checked::Skipped);
    };
    let event = PaymentEvent::of_history(payment, entry);
    let mut missing: Vec<Consumer> = Vec::new();
    for effects in deps.effects {
        if !effects.recorded(&event.event_id).await? {
            missing.push(effects.consumer());
        }
    }
    if missing.is_empty() {
        let moved = deps
            .store
            .move_effect_check(payment_id, at, None, payment.effects_republished)
            .await?;
        return Ok(if moved {
            Checked::Complete
        } else {
            Checked::Skipped
        });
    }
    republish(deps, payment, &event, &missing, (at, now)).await
}

/// Publishes the paid event again to the consumers that lack it, claiming the check first.
async fn republish(
    deps: &CheckBackDeps<'_>,
    payment: &Payment,
    event: &PaymentEvent,
    missing: &[Consumer],
    (at, now): (Timestamp, Timestamp),
) -> Result<Checked, anyhow::Error> {
    let payment_id = &payment.payment_id;
    let republished = payment.effects_republished + 1;
    let next = now.plus_s(deps.after_s);
    // Claim first, so an overlapping run does not publish it too.
    if !deps
        .store
        .move_effect_check(payment_id, at, Some(next), republished)
        .await?
    {
        return Ok(Checked::Skipped);
    }
    if let Err(e) = deps.bus.publish(std::slice::from_ref(event), missing).await {
        // Nothing went out: give the claim back, so the next run tries again and the count
        // stays true. (If this fails too, the check waits one period: still checked.)
        deps.store
            .move_effect_check(payment_id, next, Some(at), payment.effects_republished)
            .await?;
        return Err(e.error);
    }
    let missing_names: Vec<&str> = missing.iter().map(|c| c.as_str()).collect();
    if republished >= ALARM_AFTER_REPUBLISHES {
        telemetry::alarm(
            "effects_missing",
            &format!(
                "payment {payment_id} (order {}) paid, effects of {} still missing after {republished} republishes",
                payment.order_id,
                missing_names.join(", ")
            ),
        );
    } else {
        tracing::warn!(%payment_id, event_id = %event.event_id, missing = ?missing_names, republished, "check-back: effects missing; event published again");
    }
    Ok(Checked::Republished)
}
