//! Provider sandbox: an HTTP server that plays the payment provider for local runs and tests,
//! with fault knobs. The protocol is in `PROTOCOL.md`; this side is written independently of the
//! adapter in `shared`.

mod admin;
mod alipay;
mod faults;
mod keys;
mod notify;
mod server;
mod state;
mod trades;
mod unionpay;
mod wechatpay;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use alipay::AlipayOptions;
pub use keys::{KeyPairPem, generate_rsa_2048, sign_provider_message};
pub use unionpay::UnionPayOptions;
pub use wechatpay::WechatPayOptions;

/// Timeout of every notification delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `shutdown` waits for in-flight requests before aborting the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to run the sandbox.
pub struct SandboxOptions {
    /// `127.0.0.1:0` for a random port.
    pub bind: SocketAddr,
    /// The one merchant it accepts.
    pub merchant_id: String,
    /// Verifies merchant requests (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY` PEM).
    pub merchant_public_key_pem: String,
    /// Signs responses and notifications (PKCS#8 PEM).
    pub provider_private_key_pem: String,
    /// The resend schedule is divided by this (1 = real time); >= 1.
    pub time_scale: u32,
}

/// A running sandbox. Dropping it stops the server and the pending deliveries too.
pub struct SandboxHandle {
    /// `http://host:port`, no trailing slash.
    pub base_url: String,
    /// The address actually bound.
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl SandboxHandle {
    /// Stops accepting, cancels pending deliveries and hangs, and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        let Some(server) = self.server.take() else {
            return;
        };
        let abort = server.abort_handle();
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(Ok(Ok(()))) => info!(base_url = %self.base_url, "sandbox: stopped"),
            Ok(Ok(Err(e))) => warn!(error = %e, "sandbox: server failed"),
            Ok(Err(e)) => warn!(error = %e, "sandbox: server task failed"),
            Err(_) => {
                warn!("sandbox: graceful shutdown timed out; aborting");
                abort.abort();
            }
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// The real providers the sandbox also plays, each when its section is set.
#[derive(Clone, Debug, Default)]
pub struct ProviderSandboxes {
    /// Alipay's gateway (`POST /gateway.do`).
    pub alipay: Option<AlipayOptions>,
    /// WeChat Pay API v3 (`/v3/pay/transactions/*`).
    pub wechatpay: Option<WechatPayOptions>,
    /// UnionPay's gateway (`/gateway/api/backTransReq.do`, `/gateway/api/queryTrans.do`).
    pub unionpay: Option<UnionPayOptions>,
}

/// Binds, spawns the server task, and returns once listening (`/gateway.do`, `/v3/*` and
/// `/gateway/api/*` answer 404).
pub async fn start(opts: SandboxOptions) -> anyhow::Result<SandboxHandle> {
    start_with(opts, ProviderSandboxes::default()).await
}

/// [`start`], also playing Alipay's gateway (`POST /gateway.do`) when `alipay` is set.
pub async fn start_with_alipay(
    opts: SandboxOptions,
    alipay: Option<AlipayOptions>,
) -> anyhow::Result<SandboxHandle> {
    let providers = ProviderSandboxes {
        alipay,
        wechatpay: None,
        unionpay: None,
    };
    start_with(opts, providers).await
}

/// [`start`], also playing every provider whose section is set in `providers`.
pub async fn start_with(
    opts: SandboxOptions,
    providers: ProviderSandboxes,
) -> anyhow::Result<SandboxHandle> {
    let ProviderSandboxes {
        alipay,
        wechatpay,
        unionpay,
    } = providers;
    ensure!(opts.time_scale >= 1, "time_scale must be >= 1");
    let provider_key = keys::parse_private_key(&opts.provider_private_key_pem)
        .context("provider_private_key_pem")?;
    let merchant_public_der =
        keys::parse_public_key(&opts.merchant_public_key_pem).context("merchant_public_key_pem")?;
    let alipay = alipay.map(alipay::AlipayConfig::parse).transpose()?;
    let wechatpay = wechatpay
        .map(wechatpay::WechatPayConfig::parse)
        .transpose()?;
    let unionpay = unionpay.map(unionpay::UnionPayConfig::parse).transpose()?;
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .with_context(|| format!("binding the sandbox to {}", opts.bind))?;
    let local_addr = listener.local_addr()?;
    let base_url = format!("http://{local_addr}");
    let http = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .build()
        .context("building the delivery client")?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let config = state::Config {
        merchant_id: opts.merchant_id,
        merchant_public_der,
        provider_key,
        base_url: base_url.clone(),
        time_scale: opts.time_scale,
        alipay,
        wechatpay,
        unionpay,
    };
    let shared = Arc::new(state::Shared {
        config,
        http,
        inner: Mutex::default(),
        shutdown: shutdown_rx.clone(),
    });
    let app = server::router(shared);
    let server = tokio::spawn(async move {
        let mut stop = shutdown_rx;
        let signal = async move {
            let _ = stop.wait_for(|down| *down).await;
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
    });
    info!(%base_url, "sandbox: listening");
    Ok(SandboxHandle {
        base_url,
        local_addr,
        shutdown,
        server: Some(server),
    })
}
