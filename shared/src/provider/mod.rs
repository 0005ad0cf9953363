//! Provider adapters behind [`crate::ports::PaymentProvider`].

pub mod sandbox;

pub use sandbox::{SandboxConfig, SandboxProvider};
