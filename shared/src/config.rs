//! Configuration from the environment, read once per cold start.
//!
//! Secrets (private keys) are named by a source: `file:/path` (or a bare path) locally. Secrets
//! Manager and SSM sources arrive with the real provider adapters; until then a deployment that
//! names one fails at cold start with a clear message rather than at the first request.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::app::Deps;
use crate::clock::{RandomIds, SystemClock};
use crate::crypto::{RsaSigner, RsaVerifier};
use crate::ports::{Clock, Providers};
use crate::provider::{SandboxConfig, SandboxProvider};
use crate::store::DynamoStore;

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("environment variable {name} is not set"))
}

/// Reads a secret from its source. Never logs the value.
pub fn read_secret(source: &str) -> anyhow::Result<String> {
    if let Some(path) = source
        .strip_prefix("file:")
        .or_else(|| source.starts_with('/').then_some(source))
    {
        return std::fs::read_to_string(path)
            .with_context(|| format!("reading secret file {path}"));
    }
    bail!(
        "unsupported secret source {source:?}: use file:/path (Secrets Manager and SSM are not wired yet)"
    )
}

/// The sandbox provider, when `SANDBOX_BASE_URL` is set and not empty.
fn sandbox(clock: Arc<dyn Clock>) -> anyhow::Result<Option<SandboxProvider>> {
    let Some(base_url) = std::env::var("SANDBOX_BASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        return Ok(None);
    };
    let timeout_ms: u64 = std::env::var("PROVIDER_TIMEOUT_MS")
        .ok()
        .map(|v| v.parse().context("PROVIDER_TIMEOUT_MS"))
        .transpose()?
        .unwrap_or(5000);
    let config = SandboxConfig {
        base_url: base_url.trim_end_matches('/').to_owned(),
        merchant_id: var("SANDBOX_MERCHANT_ID")?,
        merchant_key: RsaSigner::from_pem(&read_secret(&var("SANDBOX_MERCHANT_KEY")?)?)
            .context("SANDBOX_MERCHANT_KEY")?,
        provider_key: RsaVerifier::from_pem(&read_secret(&var("SANDBOX_PROVIDER_PUBLIC_KEY")?)?)
            .context("SANDBOX_PROVIDER_PUBLIC_KEY")?,
        notify_url: format!(
            "{}/callbacks/sandbox",
            var("CALLBACK_BASE_URL")?.trim_end_matches('/')
        ),
        timeout: Duration::from_millis(timeout_ms),
    };
    Ok(Some(SandboxProvider::new(config, clock)?))
}

/// Builds the dependencies of every function: AWS clients (the SDK honours `AWS_ENDPOINT_URL`),
/// the configured providers, the system clock.
pub async fn deps_from_env() -> anyhow::Result<Deps> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    let store = DynamoStore::new(client, var("PAYMENTS_TABLE")?, var("IDEMPOTENCY_TABLE")?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut providers = Providers::default();
    if let Some(sandbox) = sandbox(clock.clone())? {
        providers = providers.with(Arc::new(sandbox));
    }
    Ok(Deps {
        store: Arc::new(store),
        providers,
        clock,
        ids: Arc::new(RandomIds),
    })
}
