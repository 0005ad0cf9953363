//! The payment core shared by every function.
//!
//! Layers, each importing only those above it in this list:
//! - [`domain`]: money, identifiers, the payment and its transition table, idempotency decisions.
//!   No AWS, no I/O, no async.
//! - [`ports`]: the traits the use cases need (store, provider, clock, ids).
//! - adapters: [`store`] (DynamoDB and in-memory), [`provider`] (over [`crypto`]), [`queue`]
//!   (SQS, and Lambda's queue and stream events), [`clock`].
//! - [`api`]: the JSON error and response shapes the HTTP edge speaks (no Lambda types).
//! - [`app`]: one module per use case, each a function over ports, returning domain outcomes
//!   and [`app::refusal::Refusal`]s.
//! - [`edge`]: the merchant API's edge: parses requests and ids, renders views, maps refusals
//!   to HTTP statuses.

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod edge;
pub mod ports;
pub mod provider;
pub mod queue;
pub mod store;
pub mod telemetry;
