//! Dev tasks for the payment platform: the local stack (moto, cargo-lambda, an API Gateway front,
//! the provider sandbox), the demo, the test runner. Imports nothing from `shared`: the sandbox
//! plays the provider from its own code.

pub mod event_sources;
pub mod front;
pub mod lambda;
pub mod moto;
pub mod procs;
pub mod sandbox;
pub mod schedules;
pub mod stack;
pub mod template;
pub mod ttl;
pub mod venv;

/// The region the local stack pretends to be in.
pub const REGION: &str = "us-east-1";
/// The merchant id the local sandbox knows us by.
pub const SANDBOX_MERCHANT_ID: &str = "M100000001";
/// The Alipay app id the sandbox's Alipay gateway knows us by.
pub const ALIPAY_APP_ID: &str = "2021000000000001";
/// The WeChat Pay merchant id the sandbox's WeChat Pay API knows us by.
pub const WECHATPAY_MCHID: &str = "1900000001";
/// The WeChat Pay app id bound to that merchant.
pub const WECHATPAY_APPID: &str = "wx0000000000000001";
/// Serial of our (pretend) merchant API certificate.
pub const WECHATPAY_MERCHANT_SERIAL_NO: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
/// The id of the sandbox platform's public key (public-key mode).
pub const WECHATPAY_PLATFORM_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0100000000000000000000000000";
/// The UnionPay merchant id (`merId`, 15 digits) the sandbox's UnionPay gateway knows us by.
pub const UNIONPAY_MER_ID: &str = "777290058110048";
/// The serial (decimal) of our merchant signing certificate: the `certId` of our requests.
pub const UNIONPAY_MERCHANT_CERT_ID: &str = "69903319369";
/// The CN of the sandbox's UnionPay signer certificate; the third `@`-field is the company our
/// adapter expects by default.
pub const UNIONPAY_SIGNER_CN: &str = "041@Z12345678@中国银联股份有限公司@00000001";
