//! Integration tests against the real local stack (moto, cargo-lambda running the function
//! binaries, the provider sandbox). Run them with `cargo xtask test`.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod budget;
mod callbacks;
mod concurrency;
mod e2e;
mod faults;
mod idempotency;
mod local_moto;
mod outbox;
mod polling;
mod provider_refunds;
mod providers;
mod refund_notifications;
mod refunds;
mod secrets;
mod statements;
mod statements_unionpay;
mod transitions;
