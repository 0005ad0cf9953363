//! The decision table: what a provider's report means for a payment.
//!
//! [`super::payment::TRANSITIONS`] says which moves are legal; [`decide`] says which one a
//! report causes, and what else follows (an alarm, a record for a human, the next question to
//! ask the provider, the refund of money no order wants). Every use case asks it; none decides
//! a move on its own. It is pure: the caller reads the payment, asks, and writes.
//!
//! | payment   | report                                  | decision                            |
//! |-----------|-----------------------------------------|-------------------------------------|
//! | pending   | trade paid, same amount                 | move to paid                        |
//! | pending   | trade paid, other amount or currency    | move to exception, alarm            |
//! | pending   | trade closed                            | move to closed                      |
//! | pending   | trade pending / no trade (poller)       | expired: ask close; code lost: create again; else wait |
//! | pending   | trade pending / no trade (merchant)     | ask close                           |
//! | pending   | close: closed                           | move to closed                      |
//! | pending   | close: no trade / lapses, expiry + grace passed | move to closed              |
//! | pending   | close: already paid                     | query again                         |
//! | pending   | create again refused (no trade)         | move to failed                      |
//! | pending   | no answer (poller)                      | wait; escalate to exception once the unknown checks run out |
//! | closed, failed | trade paid, same amount            | refund the late payment             |
//! | closed, failed | trade paid, other amount           | record for a human                  |
//! | paid, partially refunded, closed, failed | refund succeeded | move by the refunded sum   |
//! | exception | trade paid                              | nothing, alarm                      |
//! | any other final status | a different final report   | nothing, alarm                      |
//! | any       | a report of another provider            | refuse, alarm                       |

use super::payment::{ExpiryGuard, INITIAL_VERSION, Transition};
use super::polling::{CLOSE_GRACE_S, remember};
use super::refund::status_after_refunds;
use super::report::{Alarm, CloseOutcome, Compensation, NotifiedStatus, ProviderTrade};
use super::{Payment, PaymentId, PaymentStatus, ProviderName, RefundId, Timestamp};

/// Who asks, and so which rows of the table apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// A verified provider notification.
    Callback,
    /// The status poller's check of a due payment.
    Poller,
    /// The merchant's close.
    Merchant,
    /// Our own create, answered.
    Create,
    /// A refund of the payment, settled.
    Refund,
}

impl Asker {
    /// The `source` the history entry of the move records.
    pub fn source(self) -> &'static str {
        match self {
            Self::Callback => "callback",
            Self::Poller => "poll",
            Self::Merchant => "close",
            Self::Create => "provider_create",
            Self::Refund => "refund",
        }
    }
}

/// What the decision may depend on besides the payment and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub asker: Asker,
    /// The provider whose verified word this is: never moves another provider's payment.
    pub provider: ProviderName,
    pub now: Timestamp,
    /// Unknown answers in a row after which the poller hands the payment to a human.
    pub max_unknown_checks: u32,
}

/// How our create (or its repeat with the same id) was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateAnswer {
    Accepted,
    /// Definitely refused: `code: message`.
    Refused(String),
    NoAnswer(String),
}

/// Everything a provider can tell us about a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The trade as the provider reports it: a verified notification, or a query's answer.
    Trade(ProviderTrade),
    /// A query found no such trade.
    NoTrade,
    /// The answer to our close.
    Close(CloseOutcome),
    /// The query asked because the close answered "already paid".
    TradeAfterClose(Option<ProviderTrade>),
    /// The answer to our create.
    Created(CreateAnswer),
    /// The answer to the create asked again with the same id; `trade_exists` when the query
    /// before it showed the trade.
    Recreated {
        trade_exists: bool,
        answer: CreateAnswer,
    },
    /// No usable answer: a timeout, a 5xx, an answer that did not verify.
    NoAnswer(String),
    /// A refund of the payment succeeded at the provider.
    RefundSucceeded {
        refund_id: RefundId,
        amount_minor: i64,
    },
}

/// What to ask the provider next, before anything is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Close,
    /// Query again: the close answered "already paid".
    QueryAfterClose,
    /// Create again with the same id (the provider's order number: the same trade there).
    CreateAgain {
        trade_exists: bool,
    },
}

/// The payment stays pending: what the check records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub note: String,
    /// No usable answer: counts towards the unknown-checks limit.
    pub unknown: bool,
    /// What the check learned of our create's outcome (`None`: nothing).
    pub create_unknown: Option<bool>,
    /// The create asked again was answered: keep its pay code.
    pub created: bool,
}

impl Wait {
    fn answered(note: impl Into<String>) -> Self {
        Self {
            note: note.into(),
            unknown: false,
            create_unknown: None,
            created: false,
        }
    }

    fn unknown(note: impl Into<String>) -> Self {
        Self {
            unknown: true,
            ..Self::answered(note)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nothing {
    /// The payment already says so.
    Duplicate,
    /// The report changes nothing ("waiting for the payer").
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this guarded transition.
    Move(Transition),
    /// Write this transition together with a record for a human, and raise the alarm once
    /// both are written.
    Escalate(Transition, Compensation, Alarm),
    Ask(Ask),
    Wait(Wait),
    /// Paid after it was over: give the money back with a refund derived from the payment
    /// (naming the provider's trade number, when the report gave it).
    RefundLatePayment(Option<String>),
    /// Record this for a human (once); nothing moves.
    Compensate(Compensation),
    Nothing(Nothing),
    /// A verified report about another provider's payment: not ours to apply.
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// Raised as the decision is acted on.
    pub alarm: Option<Alarm>,
}

impl Decision {
    fn quiet(action: Action) -> Self {
        Self {
            action,
            alarm: None,
        }
    }

    fn alarmed(action: Action, alarm: Alarm) -> Self {
        Self {
            action,
            alarm: Some(alarm),
        }
    }

    fn nothing(nothing: Nothing) -> Self {
        Self::quiet(Action::Nothing(nothing))
    }
}

/// The move a trade report asks of a payment as it was created (pending at
/// [`INITIAL_VERSION`]), for a caller that has not read it: the write's condition checks that
/// assumption, and a failed condition returns the payment to [`decide`] on. `None`: the report
/// changes nothing.
pub fn first_move(
    payment_id: &PaymentId,
    trade: &ProviderTrade,
    ctx: &Context,
) -> Option<Transition> {
    let to = match trade.status {
        NotifiedStatus::Paid => PaymentStatus::Paid,
        NotifiedStatus::Closed => PaymentStatus::Closed,
        NotifiedStatus::Pending => return None,
    };
    let at = (PaymentStatus::Pending, to);
    let transition = Transition::new(
        payment_id.clone(),
        at,
        INITIAL_VERSION,
        ctx.now,
        ctx.asker.source(),
    )
    .with_provider(ctx.provider)
    .with_trade_no(trade.provider_trade_no.clone());
    Some(match to {
        PaymentStatus::Paid => transition.with_amount(trade.amount_minor, trade.currency),
        _ => transition,
    })
}

/// What a merchant's close may do with the payment as it is, before the provider is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseRequest {
    /// Closed already: answer it again.
    AlreadyClosed,
    /// Pending: query first, then close at the provider.
    AskProvider,
    /// Paid: refund it instead.
    AlreadyPaid,
    NotClosable,
}

pub fn close_request(payment: &Payment) -> CloseRequest {
    match payment.status {
        PaymentStatus::Closed => CloseRequest::AlreadyClosed,
        PaymentStatus::Pending => CloseRequest::AskProvider,
        PaymentStatus::Paid => CloseRequest::AlreadyPaid,
        _ => CloseRequest::NotClosable,
    }
}

/// What `report` means for `payment` as it is now.
pub fn decide(payment: &Payment, report: &Report, ctx: &Context) -> Decision {
    if payment.provider != ctx.provider {
        return Decision::alarmed(
            Action::Refuse,
            Alarm::new(
                "callback_wrong_provider",
                format!(
                    "{} notified payment {} which belongs to {}",
                    ctx.provider, payment.payment_id, payment.provider
                ),
            ),
        );
    }
    match report {
        Report::Trade(trade) => on_trade(payment, trade, ctx),
        Report::RefundSucceeded {
            refund_id,
            amount_minor,
        } => on_refund(payment, refund_id, *amount_minor, ctx),
        _ if payment.status != PaymentStatus::Pending => Decision::nothing(Nothing::Ignored),
        Report::NoTrade => on_no_trade(payment, ctx),
        Report::Close(outcome) => on_close(payment, *outcome, ctx),
        Report::TradeAfterClose(Some(trade)) if trade.status == NotifiedStatus::Paid => {
            on_trade(payment, trade, ctx)
        }
        Report::TradeAfterClose(other) => wait(
            payment,
            ctx,
            Wait::unknown(format!(
                "close answered already paid, the query then answered {other:?}"
            )),
        ),
        Report::Created(answer) => on_created(payment, answer, ctx),
        Report::Recreated {
            trade_exists,
            answer,
        } => on_recreated(payment, *trade_exists, answer, ctx),
        Report::NoAnswer(note) => wait(payment, ctx, Wait::unknown(note.clone())),
    }
}

fn same_money(payment: &Payment, trade: &ProviderTrade) -> bool {
    payment.amount_minor.get() == trade.amount_minor && payment.currency == trade.currency
}

fn on_trade(payment: &Payment, trade: &ProviderTrade, ctx: &Context) -> Decision {
    use PaymentStatus::*;
    let same = same_money(payment, trade);
    let source = ctx.asker.source();
    let moved = |to| {
        Transition::of(payment, to, ctx.now, source).with_trade_no(trade.provider_trade_no.clone())
    };
    match (payment.status, trade.status) {
        (Pending, NotifiedStatus::Paid) if same => Decision::quiet(Action::Move(
            moved(Paid).with_amount(trade.amount_minor, trade.currency),
        )),
        (Pending, NotifiedStatus::Paid) => tampered(payment, trade, moved(Exception)),
        (Pending, NotifiedStatus::Closed) => Decision::quiet(Action::Move(moved(Closed))),
        (Pending, NotifiedStatus::Pending) => pending_at_provider(payment, ctx, true),
        // "Waiting for the payer" changes nothing, even when it arrives after "paid".
        (_, NotifiedStatus::Pending) => Decision::nothing(Nothing::Ignored),
        (Paid | PartiallyRefunded | Refunded, NotifiedStatus::Paid) if same => {
            Decision::nothing(Nothing::Duplicate)
        }
        (Closed, NotifiedStatus::Closed) => Decision::nothing(Nothing::Duplicate),
        // Money moved that no order wants any more: give it back.
        (Closed | Failed, NotifiedStatus::Paid) if same => {
            Decision::quiet(Action::RefundLatePayment(trade.provider_trade_no.clone()))
        }
        (Closed | Failed, NotifiedStatus::Paid) => late_payment_mismatch(payment, trade, ctx),
        // Alipay closes a trade once it is refunded in full.
        (Refunded, NotifiedStatus::Closed) => Decision::nothing(Nothing::Duplicate),
        (Exception, NotifiedStatus::Paid) => paid_while_exception(payment, trade),
        (Exception, _) => Decision::nothing(Nothing::Duplicate),
        (status, reported) => Decision::alarmed(
            Action::Nothing(Nothing::Duplicate),
            Alarm::new(
                "callback_conflicts_with_final_state",
                format!(
                    "payment {} is {status} but the provider reports {}",
                    payment.payment_id,
                    reported_status(reported)
                ),
            ),
        ),
    }
}

fn reported_status(status: NotifiedStatus) -> PaymentStatus {
    match status {
        NotifiedStatus::Paid => PaymentStatus::Paid,
        NotifiedStatus::Pending => PaymentStatus::Pending,
        NotifiedStatus::Closed => PaymentStatus::Closed,
    }
}

/// Reported paid with another amount or currency: never paid, a human looks.
fn tampered(payment: &Payment, trade: &ProviderTrade, to_exception: Transition) -> Decision {
    let reason = format!(
        "provider notified {} {} but the payment is {} {}",
        trade.amount_minor,
        trade.currency,
        payment.amount_minor.get(),
        payment.currency
    );
    let alarm = Alarm::new(
        "callback_amount_mismatch",
        format!("payment {}: {reason}", payment.payment_id),
    );
    Decision::alarmed(Action::Move(to_exception.because(reason)), alarm)
}

fn paid_while_exception(payment: &Payment, trade: &ProviderTrade) -> Decision {
    let alarm = Alarm::new(
        "paid_while_exception",
        format!(
            "payment {} is in exception ({}); the provider now reports it paid {} {}",
            payment.payment_id,
            payment
                .status_reason
                .as_deref()
                .unwrap_or("no reason recorded"),
            trade.amount_minor,
            trade.currency
        ),
    );
    Decision::alarmed(Action::Nothing(Nothing::Duplicate), alarm)
}

fn late_payment_mismatch(payment: &Payment, trade: &ProviderTrade, ctx: &Context) -> Decision {
    Decision::quiet(Action::Compensate(Compensation {
        id: format!("late-payment-unrefunded#{}", payment.payment_id),
        kind: "late_payment_amount_mismatch",
        payment_id: payment.payment_id.clone(),
        reason: format!(
            "payment {} was {}, then reported paid {} (it is {}): refund it by hand",
            payment.payment_id,
            payment.status,
            trade.amount_minor,
            payment.amount_minor.get()
        ),
        evidence: Vec::new(),
        created_at: ctx.now,
    }))
}

/// Pending here and there (or no trade there): a callback changes nothing; the poller closes
/// what expired and asks again for a create whose answer was lost; the merchant closes.
fn pending_at_provider(payment: &Payment, ctx: &Context, trade_exists: bool) -> Decision {
    let expired = payment.expires_at <= ctx.now;
    let code_lost = if trade_exists {
        payment.create_unknown && payment.pay_url.is_none()
    } else {
        payment.create_unknown || payment.pay_url.is_none()
    };
    let ask = |ask| Decision::quiet(Action::Ask(ask));
    match ctx.asker {
        Asker::Merchant => ask(Ask::Close),
        Asker::Poller if expired => ask(Ask::Close),
        Asker::Poller if code_lost => ask(Ask::CreateAgain { trade_exists }),
        // Alipay has no trade until the payer scans; that is not a failure.
        Asker::Poller if trade_exists => {
            wait(payment, ctx, Wait::answered("waiting for the payer"))
        }
        Asker::Poller => wait(payment, ctx, Wait::answered("no trade at the provider yet")),
        _ => Decision::nothing(Nothing::Ignored),
    }
}

fn on_no_trade(payment: &Payment, ctx: &Context) -> Decision {
    pending_at_provider(payment, ctx, false)
}

fn on_close(payment: &Payment, outcome: CloseOutcome, ctx: &Context) -> Decision {
    // Without a close the provider confirms, only the lapse of the expiry (plus a grace for
    // clocks and payments in flight) ends the payer's chance to pay.
    let lapsed = payment.expires_at.plus_s(CLOSE_GRACE_S) <= ctx.now;
    let reason = match outcome {
        CloseOutcome::Closed => "closed at the provider",
        CloseOutcome::NoTrade if lapsed => "the provider has no trade, and its expiry has passed",
        CloseOutcome::LapsesAtExpiry if lapsed => {
            "lapsed at its expiry (the provider closes unpaid orders itself)"
        }
        CloseOutcome::NoTrade | CloseOutcome::LapsesAtExpiry => {
            return wait(
                payment,
                ctx,
                Wait::answered("the provider cannot close it; it lapses at its expiry"),
            );
        }
        CloseOutcome::AlreadyPaid => return Decision::quiet(Action::Ask(Ask::QueryAfterClose)),
    };
    let close = Transition::of(payment, PaymentStatus::Closed, ctx.now, ctx.asker.source());
    Decision::quiet(Action::Move(match ctx.asker {
        Asker::Merchant => close.because(format!("closed by the merchant: {reason}")),
        // Only an expired payment is closed by the poller; the guard re-checks it.
        _ => close
            .with_expiry(ExpiryGuard::ExpiredBy(ctx.now))
            .because(reason),
    }))
}

fn on_created(payment: &Payment, answer: &CreateAnswer, ctx: &Context) -> Decision {
    match answer {
        CreateAnswer::Refused(reason) => Decision::quiet(Action::Move(
            Transition::new(
                payment.payment_id.clone(),
                (payment.status, PaymentStatus::Failed),
                payment.version,
                ctx.now,
                ctx.asker.source(),
            )
            .because(reason.clone()),
        )),
        // The create records the provider's answer (or its absence) itself; the poller
        // resolves an unknown outcome by querying first, never by creating blindly.
        CreateAnswer::Accepted | CreateAnswer::NoAnswer(_) => Decision::nothing(Nothing::Ignored),
    }
}

fn on_recreated(
    payment: &Payment,
    trade_exists: bool,
    answer: &CreateAnswer,
    ctx: &Context,
) -> Decision {
    let known = |wait: Wait| Wait {
        create_unknown: Some(false),
        ..wait
    };
    let wait_for = match answer {
        CreateAnswer::Accepted if trade_exists => Wait {
            created: true,
            ..known(Wait::answered(
                "the trade exists; asked again with the same id for its code",
            ))
        },
        CreateAnswer::Accepted => Wait {
            created: true,
            ..known(Wait::answered(
                "no trade at the provider; created again with the same id",
            ))
        },
        // A provider that refuses to repeat a create it has (UnionPay's duplicate) has still
        // made the trade: never `failed`, and not asked again.
        CreateAnswer::Refused(why) if trade_exists => known(Wait::answered(format!(
            "the trade exists, but the provider would not repeat its create ({why})"
        ))),
        CreateAnswer::Refused(why) => {
            let fail = Transition::of(payment, PaymentStatus::Failed, ctx.now, ctx.asker.source());
            return Decision::quiet(Action::Move(fail.because(why.clone())));
        }
        CreateAnswer::NoAnswer(why) => Wait {
            create_unknown: Some(true),
            ..Wait::unknown(format!("create again: {why}"))
        },
    };
    wait(payment, ctx, wait_for)
}

/// Still pending; for the poller, `exception` with a record for a human once the unknown
/// checks run out. Never `closed`: only the provider can say that.
fn wait(payment: &Payment, ctx: &Context, wait: Wait) -> Decision {
    let unknown_checks = payment.unknown_checks.saturating_add(1);
    if ctx.asker != Asker::Poller || !wait.unknown || unknown_checks < ctx.max_unknown_checks {
        return Decision::quiet(Action::Wait(wait));
    }
    let reason = format!(
        "the provider's state stayed unknown through {unknown_checks} checks; query it and settle by hand"
    );
    let transition = Transition::of(
        payment,
        PaymentStatus::Exception,
        ctx.now,
        ctx.asker.source(),
    )
    .because(reason.clone());
    let compensation = Compensation {
        id: format!("poll-exhausted#{}", payment.payment_id),
        kind: "poll_exhausted",
        payment_id: payment.payment_id.clone(),
        reason,
        evidence: remember(&payment.recent_checks, ctx.now, &wait.note),
        created_at: ctx.now,
    };
    let alarm = Alarm::new(
        "poll_exhausted",
        format!(
            "payment {} ({}) went to exception: provider unreachable",
            payment.payment_id, payment.provider
        ),
    );
    Decision::quiet(Action::Escalate(transition, compensation, alarm))
}

/// A refund succeeded: the payment moves by its refunded sum (or, paid after it was over, to
/// `refunded` at once).
fn on_refund(
    payment: &Payment,
    refund_id: &RefundId,
    amount_minor: i64,
    ctx: &Context,
) -> Decision {
    use PaymentStatus::*;
    let (to, reason) = match payment.status {
        Paid | PartiallyRefunded => (
            status_after_refunds(
                payment.amount_minor.get(),
                payment.refunded_minor + amount_minor,
            ),
            format!("refund {refund_id} of {amount_minor}"),
        ),
        Closed | Failed => (
            Refunded,
            format!(
                "paid after it was {}; the payment was given back",
                payment.status
            ),
        ),
        _ => return Decision::nothing(Nothing::Ignored),
    };
    if to == payment.status {
        return Decision::nothing(Nothing::Ignored);
    }
    let transition = Transition::new(
        payment.payment_id.clone(),
        (payment.status, to),
        payment.version,
        ctx.now,
        ctx.asker.source(),
    );
    Decision::quiet(Action::Move(transition.because(reason)))
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
