//! When a pending payment is next checked with its provider.
//!
//! Every `pending` payment carries a next-check time. The first check is one step after the
//! create; each check that leaves the payment pending moves it one step further along the
//! schedule (default 1 min, 5 min, 15 min, 30 min, 1 h, then every 2 h). A check is never due
//! later than the payment's expiry, so the expiry is acted on when it comes.

use std::fmt;

use super::Timestamp;

/// The default steps, in seconds: 1 min, 5 min, 15 min, 30 min, 1 h, 2 h (the last repeats).
pub const DEFAULT_STEPS_S: [i64; 6] = [60, 300, 900, 1800, 3600, 7200];
/// Checks without a usable answer before a payment goes to `exception`: with the default steps
/// the provider has been unreachable for about 17 hours by then.
pub const DEFAULT_MAX_UNKNOWN_CHECKS: u32 = 12;

/// How long after its expiry a payment the provider has no trade for (or that lapses by
/// itself) is taken as closed: the provider's clock may run behind ours, and a payment may be
/// in flight at the deadline. A close the provider confirms needs no grace.
pub const CLOSE_GRACE_S: i64 = 120;

/// How many provider answers a payment or refund keeps for whoever investigates it.
pub const RECENT_CHECKS_KEPT: usize = 5;

/// The last answers with this one added (stamped with `at`), the oldest dropped past
/// [`RECENT_CHECKS_KEPT`].
pub fn remember(recent: &[String], at: Timestamp, answer: &str) -> Vec<String> {
    let mut kept: Vec<String> = recent.to_vec();
    kept.push(format!("{} {answer}", at.to_rfc3339()));
    let excess = kept.len().saturating_sub(RECENT_CHECKS_KEPT);
    kept.drain(..excess);
    kept
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("poll schedule {0}")]
pub struct ScheduleError(String);

/// The backoff schedule: a list of delays whose last one repeats, and how many checks in a row
/// may end without knowing the provider's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollSchedule {
    steps_s: Vec<i64>,
    max_unknown_checks: u32,
}

impl Default for PollSchedule {
    fn default() -> Self {
        Self {
            steps_s: DEFAULT_STEPS_S.to_vec(),
            max_unknown_checks: DEFAULT_MAX_UNKNOWN_CHECKS,
        }
    }
}

impl PollSchedule {
    pub fn new(steps_s: Vec<i64>, max_unknown_checks: u32) -> Result<Self, ScheduleError> {
        if steps_s.is_empty() {
            return Err(ScheduleError("needs at least one step".into()));
        }
        if let Some(bad) = steps_s.iter().find(|s| !(1..=86_400).contains(*s)) {
            return Err(ScheduleError(format!(
                "step {bad} s is not within 1..=86400"
            )));
        }
        if max_unknown_checks == 0 {
            return Err(ScheduleError(
                "max unknown checks must be at least 1".into(),
            ));
        }
        Ok(Self {
            steps_s,
            max_unknown_checks,
        })
    }

    /// Parses `60,300,900` (seconds, comma-separated).
    pub fn parse(steps: &str, max_unknown_checks: &str) -> Result<Self, ScheduleError> {
        let steps_s = steps
            .split(',')
            .map(|s| {
                let s = s.trim();
                s.parse::<i64>()
                    .ok()
                    .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| ScheduleError(format!("step {s:?} is not whole seconds")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max = max_unknown_checks
            .trim()
            .parse::<u32>()
            .map_err(|_| ScheduleError(format!("max checks {max_unknown_checks:?}")))?;
        Self::new(steps_s, max)
    }

    pub fn max_unknown_checks(&self) -> u32 {
        self.max_unknown_checks
    }

    /// The delay after `checks_done` checks (0 = the first check, after the create).
    pub fn delay_s(&self, checks_done: u32) -> i64 {
        let last = self.steps_s.len() - 1;
        let index = usize::try_from(checks_done).map_or(last, |i| i.min(last));
        self.steps_s[index]
    }

    /// When the next check is due: one step from `now`, but never after the expiry while the
    /// payment is still open.
    pub fn next_check_at(
        &self,
        checks_done: u32,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Timestamp {
        let by_schedule = now.plus_s(self.delay_s(checks_done));
        if now < expires_at {
            by_schedule.min(expires_at)
        } else {
            by_schedule
        }
    }
}

impl fmt::Display for PollSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self.steps_s.iter().map(i64::to_string).collect();
        write!(
            f,
            "{} s (last repeats), {} unknown checks max",
            steps.join(","),
            self.max_unknown_checks
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grows_then_repeats_every_two_hours() {
        let s = PollSchedule::default();
        let delays: Vec<i64> = (0..9).map(|n| s.delay_s(n)).collect();
        assert_eq!(delays, [60, 300, 900, 1800, 3600, 7200, 7200, 7200, 7200]);
        assert_eq!(s.delay_s(u32::MAX), 7200);
    }

    #[test]
    fn a_check_is_never_due_after_an_open_payment_expires() {
        let s = PollSchedule::default();
        let now = Timestamp::from_unix_s(1_000);
        assert_eq!(
            s.next_check_at(1, now, now.plus_s(120)),
            now.plus_s(120),
            "5 min step capped at the expiry"
        );
        assert_eq!(s.next_check_at(0, now, now.plus_s(900)), now.plus_s(60));
        // Already expired (the close was not possible yet): plain backoff.
        assert_eq!(s.next_check_at(1, now, now.plus_s(-5)), now.plus_s(300));
    }

    #[test]
    fn only_the_last_answers_are_kept() {
        let mut recent = Vec::new();
        for n in 0..7 {
            recent = remember(&recent, Timestamp::from_unix_s(n), &format!("answer {n}"));
        }
        assert_eq!(recent.len(), RECENT_CHECKS_KEPT);
        assert!(
            recent[0].ends_with("answer 2") && recent[4].ends_with("answer 6"),
            "{recent:?}"
        );
    }

    #[test]
    fn parses_and_refuses() {
        let s = PollSchedule::parse("1, 5,15", "3").expect("schedule");
        assert_eq!((s.delay_s(0), s.delay_s(2), s.delay_s(7)), (1, 15, 15));
        assert_eq!(s.max_unknown_checks(), 3);
        for (steps, max) in [
            ("", "3"),
            ("1,-5", "3"),
            ("1,x", "3"),
            ("0", "3"),
            ("1", "0"),
            ("1", "x"),
            ("1.5", "2"),
        ] {
            assert!(
                PollSchedule::parse(steps, max).is_err(),
                "{steps:?} {max:?}"
            );
        }
    }
}
