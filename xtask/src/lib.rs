//! Dev tasks for the payment platform: the local stack (moto, cargo-lambda, an API Gateway front,
//! the provider sandbox), the demo, the test runner. Imports nothing from `shared`: the sandbox
//! plays the provider from its own code.

pub mod front;
pub mod lambda;
pub mod moto;
pub mod procs;
pub mod sandbox;
pub mod stack;
pub mod template;
pub mod venv;

/// The region the local stack pretends to be in.
pub const REGION: &str = "us-east-1";
/// The merchant id the local sandbox knows us by.
pub const SANDBOX_MERCHANT_ID: &str = "M100000001";
/// The Alipay app id the sandbox's Alipay gateway knows us by.
pub const ALIPAY_APP_ID: &str = "2021000000000001";
