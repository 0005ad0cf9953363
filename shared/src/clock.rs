//! Clock and id adapters: the system ones for functions, controllable ones for tests.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::{PaymentId, Timestamp};
use crate::ports::{Clock, IdSource};

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp::from_unix_ms(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        Self(AtomicI64::new(t.unix_ms()))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.unix_ms(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_ms(self.0.load(Ordering::SeqCst))
    }
}

/// ULIDs from the clock's time and the OS random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn payment_id(&self, now: Timestamp) -> PaymentId {
        let mut bytes = [0_u8; 16];
        // A failing OS RNG is not recoverable; an all-zero suffix still yields a valid id and the
        // order-uniqueness write catches any collision.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        PaymentId::from_parts(
            u64::try_from(now.unix_ms()).unwrap_or(0),
            u128::from_be_bytes(bytes),
        )
    }
}

/// Deterministic ids for tests: the clock's time plus a counter.
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdSource for SequentialIds {
    fn payment_id(&self, now: Timestamp) -> PaymentId {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        PaymentId::from_parts(u64::try_from(now.unix_ms()).unwrap_or(0), u128::from(n))
    }
}
