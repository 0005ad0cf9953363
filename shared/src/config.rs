//! Configuration from the environment, read once per cold start.
//!
//! A provider is configured when its base URL variable is set and not empty; then every one of its
//! required variables must be present, or the cold start fails naming the missing one. Secrets
//! (private keys, the WeChat Pay APIv3 key) are named by a source: `file:/path` (or a bare absolute
//! path), `ssm:<parameter name>` (a parameter, decrypted) or `secretsmanager:<name or ARN>`. The
//! AWS sources are fetched once at cold start by [`fetch_secrets`] (one request per distinct
//! source) and cached in memory; an unknown source fails the cold start naming its variable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use crate::app::Deps;
use crate::app::consume::{ConsumerDeps, RetryDelays};
use crate::app::dead_letters::{DeadLetterSource, parse_sources};
use crate::app::poll::PollRun;
use crate::clock::{RandomIds, SystemClock};
use crate::crypto::{RsaSigner, RsaVerifier};
use crate::domain::ProviderName;
use crate::domain::event::Consumer;
use crate::domain::polling::PollSchedule;
use crate::ports::Effects;
use crate::ports::{Clock, Providers};
use crate::provider::alipay::{AlipayConfig, AlipayProvider};
use crate::provider::unionpay::{UnionPayConfig, UnionPayProvider, cert_serial_decimal};
use crate::provider::wechatpay::{
    WechatPayConfig, WechatPayProvider, platform_certificates, platform_public_key,
};
use crate::provider::{SandboxConfig, SandboxProvider};
use crate::queue::{SqsConsumerQueue, SqsEventBus, sdk_error};
use crate::store::{DynamoDeadLetters, DynamoEffects, DynamoStore};

/// The signer company UnionPay puts in its certificates' CN.
pub const UNIONPAY_SIGNER_CN: &str = "中国银联股份有限公司";

/// Every variable that names a secret source (keys, certificates, the WeChat Pay APIv3 key).
pub const SECRET_VARIABLES: &[&str] = &[
    "SANDBOX_MERCHANT_KEY",
    "SANDBOX_PROVIDER_PUBLIC_KEY",
    "ALIPAY_APP_PRIVATE_KEY",
    "ALIPAY_PUBLIC_KEY",
    "WECHATPAY_MERCHANT_KEY",
    "WECHATPAY_PLATFORM_CERTS",
    "WECHATPAY_PLATFORM_PUBLIC_KEY",
    "WECHATPAY_API_V3_KEY",
    "UNIONPAY_SIGN_KEY",
    "UNIONPAY_SIGN_CERT",
    "UNIONPAY_ROOT_CERT",
    "UNIONPAY_INTERMEDIATE_CERT",
];

/// Where a secret lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// `file:/path` or a bare absolute path.
    File(&'a str),
    /// `ssm:<parameter name>`, read with decryption.
    Ssm(&'a str),
    /// `secretsmanager:<name or ARN>`: its `SecretString`, or its `SecretBinary` bytes.
    SecretsManager(&'a str),
}

impl<'a> SecretSource<'a> {
    pub fn parse(source: &'a str) -> anyhow::Result<Self> {
        let nonempty = |rest: &'a str| {
            (!rest.is_empty())
                .then_some(rest)
                .ok_or_else(|| anyhow!("empty secret source {source:?}"))
        };
        if source.starts_with('/') {
            Ok(Self::File(source))
        } else if let Some(path) = source.strip_prefix("file:") {
            nonempty(path).map(Self::File)
        } else if let Some(name) = source.strip_prefix("ssm:") {
            nonempty(name).map(Self::Ssm)
        } else if let Some(id) = source.strip_prefix("secretsmanager:") {
            nonempty(id).map(Self::SecretsManager)
        } else {
            bail!(
                "unsupported secret source {source:?}: use file:/path, ssm:<parameter name> or \
                 secretsmanager:<name or ARN>"
            )
        }
    }
}

/// Secrets fetched from AWS at cold start, by their source string (`ssm:...`, `secretsmanager:...`).
pub type SecretCache = HashMap<String, Vec<u8>>;

/// Fetches every distinct AWS secret source named by a [`SECRET_VARIABLES`] variable, once.
///
/// Validates every source (an unknown one fails naming its variable). Builds an SSM or Secrets
/// Manager client from `aws` only when some source needs it. Never logs a value.
pub async fn fetch_secrets(
    lookup: &dyn Fn(&str) -> Option<String>,
    aws: &aws_config::SdkConfig,
) -> anyhow::Result<SecretCache> {
    let mut cache = SecretCache::new();
    let mut clients = SecretClients::default();
    for (name, source) in secret_sources(lookup)? {
        if cache.contains_key(&source) {
            continue;
        }
        let value = match SecretSource::parse(&source)? {
            SecretSource::File(_) => continue,
            SecretSource::Ssm(parameter) => clients.ssm_parameter(aws, parameter).await,
            SecretSource::SecretsManager(id) => clients.secrets_manager_value(aws, id).await,
        }
        .with_context(|| format!("{name}: fetching secret {source:?}"))?;
        cache.insert(source, value);
    }
    tracing::info!(count = cache.len(), "fetched secrets from AWS");
    Ok(cache)
}

/// The set secret variables with their sources, each source validated.
fn secret_sources(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let set = SECRET_VARIABLES
        .iter()
        .filter_map(|name| Some((*name, lookup(name).filter(|v| !v.is_empty())?)));
    set.map(|(name, source)| {
        SecretSource::parse(&source).with_context(|| name.to_owned())?;
        Ok((name, source))
    })
    .collect()
}

/// The AWS clients that secret sources need, built on first use.
#[derive(Default)]
struct SecretClients {
    ssm: Option<aws_sdk_ssm::Client>,
    secrets_manager: Option<aws_sdk_secretsmanager::Client>,
}

impl SecretClients {
    async fn ssm_parameter(
        &mut self,
        aws: &aws_config::SdkConfig,
        name: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let client = self
            .ssm
            .get_or_insert_with(|| aws_sdk_ssm::Client::new(aws));
        let output = client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let value = output.parameter.and_then(|p| p.value);
        Ok(value.context("the parameter has no value")?.into_bytes())
    }

    async fn secrets_manager_value(
        &mut self,
        aws: &aws_config::SdkConfig,
        id: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let client = self
            .secrets_manager
            .get_or_insert_with(|| aws_sdk_secretsmanager::Client::new(aws));
        let output = client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(sdk_error)?;
        match (output.secret_string, output.secret_binary) {
            (Some(text), _) => Ok(text.into_bytes()),
            (None, Some(blob)) => Ok(blob.into_inner()),
            (None, None) => bail!("the secret has no value"),
        }
    }
}

/// The environment, as a lookup (tests pass a map), with the secrets fetched at cold start. Empty
/// values count as unset.
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    secrets: &'a SecretCache,
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>, secrets: &'a SecretCache) -> Self {
        Self { lookup, secrets }
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> anyhow::Result<String> {
        self.get(name)
            .with_context(|| format!("environment variable {name} is not set"))
    }

    /// The secret that variable `name` names: read from its file, or taken from the cold-start
    /// cache. Never logs the value.
    pub fn secret_bytes(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let source = self.require(name)?;
        self.read_source(&source).with_context(|| name.to_owned())
    }

    fn read_source(&self, source: &str) -> anyhow::Result<Vec<u8>> {
        match SecretSource::parse(source)? {
            SecretSource::File(path) => {
                std::fs::read(path).with_context(|| format!("reading secret file {path}"))
            }
            SecretSource::Ssm(_) | SecretSource::SecretsManager(_) => self
                .secrets
                .get(source)
                .cloned()
                .with_context(|| format!("secret {source:?} was not fetched at cold start")),
        }
    }

    /// [`Env::secret_bytes`] as UTF-8 text.
    pub fn secret(&self, name: &str) -> anyhow::Result<String> {
        String::from_utf8(self.secret_bytes(name)?)
            .map_err(|_| anyhow!("{name}: secret is not UTF-8"))
    }

    fn signer(&self, name: &str) -> anyhow::Result<RsaSigner> {
        RsaSigner::from_pem(&self.secret(name)?).with_context(|| name.to_owned())
    }

    fn verifier(&self, name: &str) -> anyhow::Result<RsaVerifier> {
        RsaVerifier::from_pem(&self.secret(name)?).with_context(|| name.to_owned())
    }

    fn timeout(&self) -> anyhow::Result<Duration> {
        let ms = self
            .get("PROVIDER_TIMEOUT_MS")
            .map(|v| v.parse::<u64>())
            .transpose()
            .context("PROVIDER_TIMEOUT_MS")?;
        Ok(Duration::from_millis(ms.unwrap_or(5000)))
    }

    /// Our callback route for `provider`, from `CALLBACK_BASE_URL`.
    fn notify_url(&self, provider: ProviderName) -> anyhow::Result<String> {
        Ok(format!(
            "{}/callbacks/{provider}",
            self.require("CALLBACK_BASE_URL")?.trim_end_matches('/')
        ))
    }
}

fn sandbox(
    env: &Env<'_>,
    base_url: String,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<SandboxProvider> {
    let config = SandboxConfig {
        base_url: base_url.trim_end_matches('/').to_owned(),
        merchant_id: env.require("SANDBOX_MERCHANT_ID")?,
        merchant_key: env.signer("SANDBOX_MERCHANT_KEY")?,
        provider_key: env.verifier("SANDBOX_PROVIDER_PUBLIC_KEY")?,
        notify_url: env.notify_url(ProviderName::Sandbox)?,
        timeout: env.timeout()?,
    };
    SandboxProvider::new(config, clock)
}

fn alipay(
    env: &Env<'_>,
    gateway_url: String,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AlipayProvider> {
    let config = AlipayConfig {
        gateway_url,
        app_id: env.require("ALIPAY_APP_ID")?,
        seller_id: env.get("ALIPAY_SELLER_ID"),
        app_private_key: env.signer("ALIPAY_APP_PRIVATE_KEY")?,
        alipay_public_key: env.verifier("ALIPAY_PUBLIC_KEY")?,
        notify_url: env.notify_url(ProviderName::Alipay)?,
        timeout: env.timeout()?,
    };
    AlipayProvider::new(config, clock)
}

/// Platform keys: a certificate bundle, a `PUB_KEY_ID_...` public key, or both (during rotation).
fn wechatpay_platform_keys(env: &Env<'_>) -> anyhow::Result<Vec<(String, RsaVerifier)>> {
    let mut keys = Vec::new();
    if env.get("WECHATPAY_PLATFORM_CERTS").is_some() {
        keys.extend(
            platform_certificates(&env.secret("WECHATPAY_PLATFORM_CERTS")?)
                .context("WECHATPAY_PLATFORM_CERTS")?,
        );
    }
    if env.get("WECHATPAY_PLATFORM_PUBLIC_KEY").is_some() {
        let id = env.require("WECHATPAY_PLATFORM_PUBLIC_KEY_ID")?;
        let pem = env.secret("WECHATPAY_PLATFORM_PUBLIC_KEY")?;
        keys.push(platform_public_key(&id, &pem).context("WECHATPAY_PLATFORM_PUBLIC_KEY")?);
    }
    if keys.is_empty() {
        bail!("set WECHATPAY_PLATFORM_CERTS or WECHATPAY_PLATFORM_PUBLIC_KEY (with its _ID)");
    }
    Ok(keys)
}

fn wechatpay(
    env: &Env<'_>,
    base_url: String,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<WechatPayProvider> {
    let api_v3_key = env.secret_bytes("WECHATPAY_API_V3_KEY")?;
    let config = WechatPayConfig {
        base_url,
        mchid: env.require("WECHATPAY_MCHID")?,
        appid: env.require("WECHATPAY_APPID")?,
        merchant_serial_no: env.require("WECHATPAY_MERCHANT_SERIAL_NO")?,
        merchant_key: env.signer("WECHATPAY_MERCHANT_KEY")?,
        platform_keys: wechatpay_platform_keys(env)?,
        // A key file usually ends with a newline that is not part of the key.
        api_v3_key: api_v3_key.trim_ascii().to_vec(),
        notify_url: env.notify_url(ProviderName::WechatPay)?,
        timeout: env.timeout()?,
    };
    WechatPayProvider::new(config, clock)
}

fn unionpay(
    env: &Env<'_>,
    base_url: String,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<UnionPayProvider> {
    let sign_cert = env.secret("UNIONPAY_SIGN_CERT")?;
    let config = UnionPayConfig {
        base_url,
        mer_id: env.require("UNIONPAY_MER_ID")?,
        sign_key: env.signer("UNIONPAY_SIGN_KEY")?,
        sign_cert_serial_decimal: cert_serial_decimal(&sign_cert).context("UNIONPAY_SIGN_CERT")?,
        root_cert_pem: env.secret("UNIONPAY_ROOT_CERT")?,
        intermediate_cert_pem: env.secret("UNIONPAY_INTERMEDIATE_CERT")?,
        expected_signer_cn: env
            .get("UNIONPAY_SIGNER_CN")
            .unwrap_or_else(|| UNIONPAY_SIGNER_CN.to_owned()),
        back_url: env.notify_url(ProviderName::UnionPay)?,
        timeout: env.timeout()?,
    };
    UnionPayProvider::new(config, clock)
        .and_then(|provider| provider.with_file_url(env.get("UNIONPAY_FILE_URL")))
}

/// Every provider whose base URL is set.
pub fn providers(env: &Env<'_>, clock: &Arc<dyn Clock>) -> anyhow::Result<Providers> {
    let mut providers = Providers::default();
    if let Some(url) = env.get("SANDBOX_BASE_URL") {
        providers = providers.with(Arc::new(
            sandbox(env, url, clock.clone()).context("sandbox provider")?,
        ));
    }
    if let Some(url) = env.get("ALIPAY_GATEWAY_URL") {
        providers = providers.with(Arc::new(
            alipay(env, url, clock.clone()).context("alipay provider")?,
        ));
    }
    if let Some(url) = env.get("WECHATPAY_BASE_URL") {
        providers = providers.with(Arc::new(
            wechatpay(env, url, clock.clone()).context("wechatpay provider")?,
        ));
    }
    if let Some(url) = env.get("UNIONPAY_BASE_URL") {
        providers = providers.with(Arc::new(
            unionpay(env, url, clock.clone()).context("unionpay provider")?,
        ));
    }
    Ok(providers)
}

/// What a function needs wired at cold start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// Storage only: the function never talks to a provider (and never reads provider keys).
    StoreOnly,
    StoreAndProviders,
}

/// Builds the dependencies of a function: AWS clients (the SDK honours `AWS_ENDPOINT_URL`), the
/// configured providers when it needs them, the system clock.
pub async fn deps_from_env(wiring: Wiring) -> anyhow::Result<Deps> {
    let lookup = |name: &str| std::env::var(name).ok();
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = match wiring {
        Wiring::StoreOnly => SecretCache::new(),
        Wiring::StoreAndProviders => fetch_secrets(&lookup, &aws).await?,
    };
    let env = Env::new(&lookup, &secrets);
    let client = aws_sdk_dynamodb::Client::new(&aws);
    let mut store = DynamoStore::new(
        client,
        env.require("PAYMENTS_TABLE")?,
        env.require("IDEMPOTENCY_TABLE")?,
    );
    if let Some(table) = env.get("COMPENSATIONS_TABLE") {
        store = store.with_compensations(table);
    }
    store = store.with_check_back_after(check_back_after_s(&env)?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let providers = match wiring {
        Wiring::StoreOnly => Providers::default(),
        Wiring::StoreAndProviders => providers(&env, &clock)?,
    };
    Ok(Deps {
        store: Arc::new(store),
        providers,
        clock,
        ids: Arc::new(RandomIds),
        poll: poll_schedule(&env)?,
    })
}

/// `CHECK_BACK_AFTER_S`: how long after payment the check-back first looks for a payment's
/// effects, and waits between republishes (default 600).
pub fn check_back_after_s(env: &Env<'_>) -> anyhow::Result<i64> {
    match env.get("CHECK_BACK_AFTER_S") {
        None => Ok(crate::domain::event::DEFAULT_CHECK_BACK_AFTER_S),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|s| *s > 0)
            .with_context(|| format!("CHECK_BACK_AFTER_S={v:?} is not a positive integer")),
    }
}

/// [`check_back_after_s`] from the process environment.
pub fn check_back_after_s_from_env() -> anyhow::Result<i64> {
    let lookup = |name: &str| std::env::var(name).ok();
    let secrets = SecretCache::new();
    check_back_after_s(&Env::new(&lookup, &secrets))
}

/// `consumer=value` pairs, comma-separated (`EVENT_QUEUES`, `EFFECTS_TABLES`): every consumer
/// exactly once.
pub fn per_consumer(name: &str, text: &str) -> anyhow::Result<Vec<(Consumer, String)>> {
    let mut pairs = Vec::new();
    for entry in text.split(',').filter(|e| !e.trim().is_empty()) {
        let (consumer, value) = entry
            .trim()
            .split_once('=')
            .with_context(|| format!("{name}: {entry:?} is not consumer=value"))?;
        let consumer = Consumer::parse(consumer)
            .with_context(|| format!("{name}: unknown consumer {consumer:?}"))?;
        if value.is_empty() || pairs.iter().any(|(c, _)| *c == consumer) {
            bail!("{name}: {consumer} has no value or appears twice");
        }
        pairs.push((consumer, value.to_owned()));
    }
    for consumer in Consumer::ALL {
        if !pairs.iter().any(|(c, _)| *c == consumer) {
            bail!("{name}: no entry for {consumer}");
        }
    }
    Ok(pairs)
}

fn require_var(name: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .with_context(|| format!("environment variable {name} is not set"))
}

/// The event bus over the consumers' queues in `EVENT_QUEUES`.
pub fn event_bus(aws: &aws_config::SdkConfig) -> anyhow::Result<SqsEventBus> {
    let queues = per_consumer("EVENT_QUEUES", &require_var("EVENT_QUEUES")?)?;
    Ok(SqsEventBus::new(aws_sdk_sqs::Client::new(aws), queues))
}

/// What a queue consumer runs with.
pub struct ConsumerWiring {
    pub effects: DynamoEffects,
    pub queue: SqsConsumerQueue,
    pub retry: RetryDelays,
    pub clock: SystemClock,
}

impl ConsumerWiring {
    pub fn deps(&self) -> ConsumerDeps<'_> {
        ConsumerDeps {
            effects: &self.effects,
            queue: &self.queue,
            retry: self.retry,
        }
    }
}

/// A consumer's wiring: `EFFECTS_TABLE`, `QUEUE_URL`, `DEAD_LETTER_QUEUE_URL`, and
/// `CONSUMER_RETRY_S` (the first retry delay, default 10).
pub async fn consumer_from_env(consumer: Consumer) -> anyhow::Result<ConsumerWiring> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let base_s = match std::env::var("CONSUMER_RETRY_S")
        .ok()
        .filter(|v| !v.is_empty())
    {
        None => RetryDelays::default().base_s,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|s| *s > 0)
            .with_context(|| format!("CONSUMER_RETRY_S={v:?} is not a positive integer"))?,
    };
    Ok(ConsumerWiring {
        effects: DynamoEffects::new(
            aws_sdk_dynamodb::Client::new(&aws),
            require_var("EFFECTS_TABLE")?,
            consumer,
        ),
        queue: SqsConsumerQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            consumer,
            require_var("QUEUE_URL")?,
            require_var("DEAD_LETTER_QUEUE_URL")?,
        ),
        retry: RetryDelays {
            base_s,
            ..RetryDelays::default()
        },
        clock: SystemClock,
    })
}

/// Every consumer's effects, read by the check-back, from `EFFECTS_TABLES`.
pub fn effects_from_env(aws: &aws_config::SdkConfig) -> anyhow::Result<Vec<Arc<dyn Effects>>> {
    let client = aws_sdk_dynamodb::Client::new(aws);
    Ok(
        per_consumer("EFFECTS_TABLES", &require_var("EFFECTS_TABLES")?)?
            .into_iter()
            .map(|(consumer, table)| {
                Arc::new(DynamoEffects::new(client.clone(), table, consumer)) as Arc<dyn Effects>
            })
            .collect(),
    )
}

/// The dead-letter handler's store and sources: `COMPENSATIONS_TABLE`, `DEAD_LETTER_SOURCES`.
pub async fn dead_letters_from_env() -> anyhow::Result<(DynamoDeadLetters, Vec<DeadLetterSource>)> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = DynamoDeadLetters::new(
        aws_sdk_dynamodb::Client::new(&aws),
        require_var("COMPENSATIONS_TABLE")?,
    );
    let sources =
        parse_sources(&require_var("DEAD_LETTER_SOURCES")?).context("DEAD_LETTER_SOURCES")?;
    Ok((store, sources))
}

/// One poller run's bounds: `POLL_PAGE_PER_SHARD`, `POLL_LEASE_S`, `POLL_CONCURRENCY`; each
/// unset means its default.
pub fn poll_run_from_env() -> anyhow::Result<PollRun> {
    let default = PollRun::default();
    let number = |name: &str, default: usize| -> anyhow::Result<usize> {
        match std::env::var(name).ok().filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{name}={v:?} is not a positive integer")),
        }
    };
    Ok(PollRun {
        page_per_shard: number("POLL_PAGE_PER_SHARD", default.page_per_shard)?,
        lease_s: i64::try_from(number(
            "POLL_LEASE_S",
            usize::try_from(default.lease_s).unwrap_or(120),
        )?)
        .context("POLL_LEASE_S")?,
        concurrency: number("POLL_CONCURRENCY", default.concurrency)?,
    })
}

/// `POLL_SCHEDULE_S` (comma-separated seconds, the last repeats) and `POLL_MAX_UNKNOWN_CHECKS`;
/// either unset means the default.
pub fn poll_schedule(env: &Env<'_>) -> anyhow::Result<PollSchedule> {
    let default = PollSchedule::default();
    match (
        env.get("POLL_SCHEDULE_S"),
        env.get("POLL_MAX_UNKNOWN_CHECKS"),
    ) {
        (None, None) => Ok(default),
        (steps, max) => {
            let steps = steps.unwrap_or_else(|| {
                crate::domain::polling::DEFAULT_STEPS_S
                    .map(|s| s.to_string())
                    .join(",")
            });
            let max = max.unwrap_or_else(|| default.max_unknown_checks().to_string());
            Ok(PollSchedule::parse(&steps, &max)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;

    use super::*;

    /// A temp dir with an RSA key pair as `private.pem` / `public.pem`.
    fn key_files() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "config-test-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
        let private: Pkcs8V1Der<'_> = key.as_der().expect("pkcs8");
        let public: PublicKeyX509Der<'_> = key.public_key().as_der().expect("spki");
        let write = |name: &str, tag: &str, der: &[u8]| {
            std::fs::write(
                dir.join(name),
                pem::encode(&pem::Pem::new(tag, der.to_vec())),
            )
            .expect("write");
        };
        write("private.pem", "PRIVATE KEY", private.as_ref());
        write("public.pem", "PUBLIC KEY", public.as_ref());
        dir
    }

    fn configured(vars: &HashMap<&str, String>) -> anyhow::Result<Vec<ProviderName>> {
        configured_with(vars, &SecretCache::new())
    }

    fn configured_with(
        vars: &HashMap<&str, String>,
        secrets: &SecretCache,
    ) -> anyhow::Result<Vec<ProviderName>> {
        let lookup = |name: &str| vars.get(name).cloned();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let providers = providers(&Env::new(&lookup, secrets), &clock)?;
        Ok(ProviderName::ALL
            .into_iter()
            .filter(|p| providers.get(*p).is_some())
            .collect())
    }

    #[test]
    fn secret_sources_parse() {
        let parse = |s| SecretSource::parse(s).map_err(|e| e.to_string());
        assert_eq!(parse("file:/k.pem"), Ok(SecretSource::File("/k.pem")));
        assert_eq!(parse("/k.pem"), Ok(SecretSource::File("/k.pem")));
        assert_eq!(
            parse("ssm:/payments/k"),
            Ok(SecretSource::Ssm("/payments/k"))
        );
        assert_eq!(
            parse("secretsmanager:payments/k"),
            Ok(SecretSource::SecretsManager("payments/k"))
        );
        let arn = "arn:aws:secretsmanager:ap-east-1:123456789012:secret:payments/k-AbCdEf";
        let source = format!("secretsmanager:{arn}");
        assert_eq!(parse(&source), Ok(SecretSource::SecretsManager(arn)));
        for bad in ["vault:k", "k.pem", "ssm:", "file:", "SSM:/k", ""] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("secret source"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_sources_fail_naming_the_variable() {
        let lookup = |name: &str| (name == "UNIONPAY_ROOT_CERT").then(|| "vault:x".to_owned());
        let err = secret_sources(&lookup).expect_err("unknown source");
        assert!(format!("{err:#}").contains("UNIONPAY_ROOT_CERT"), "{err:#}");
        let lookup = |name: &str| (name == "ALIPAY_PUBLIC_KEY").then(|| "ssm:/p/k".to_owned());
        let sources = secret_sources(&lookup).expect("ssm source");
        assert_eq!(sources, vec![("ALIPAY_PUBLIC_KEY", "ssm:/p/k".to_owned())]);
    }

    #[test]
    fn providers_come_from_configuration_alone() {
        let dir = key_files();
        let file = |name: &str| format!("file:{}", dir.join(name).display());
        let mut vars: HashMap<&str, String> = HashMap::new();
        assert_eq!(configured(&vars).expect("nothing configured"), vec![]);

        vars.insert("CALLBACK_BASE_URL", "https://api.example".into());
        vars.insert("SANDBOX_BASE_URL", String::new());
        assert_eq!(configured(&vars).expect("empty url is unset"), vec![]);

        vars.insert(
            "ALIPAY_GATEWAY_URL",
            "https://openapi.alipay.com/gateway.do".into(),
        );
        let missing = configured(&vars).expect_err("alipay without its keys");
        assert!(
            format!("{missing:#}").contains("ALIPAY_APP_ID"),
            "{missing:#}"
        );
        vars.insert("ALIPAY_APP_ID", "2021000000000000".into());
        vars.insert("ALIPAY_APP_PRIVATE_KEY", file("private.pem"));
        vars.insert("ALIPAY_PUBLIC_KEY", "vault:/payments/alipay".into());
        let unsupported = configured(&vars).expect_err("unknown source");
        let message = format!("{unsupported:#}");
        assert!(message.contains("unsupported secret source"), "{message}");
        assert!(message.contains("ALIPAY_PUBLIC_KEY"), "{message}");

        let ssm = "ssm:/payments/alipay-public-key";
        vars.insert("ALIPAY_PUBLIC_KEY", ssm.into());
        let unfetched = configured(&vars).expect_err("ssm source not in the cache");
        assert!(
            format!("{unfetched:#}").contains("not fetched at cold start"),
            "{unfetched:#}"
        );
        let public = std::fs::read(dir.join("public.pem")).expect("public key");
        let cache = SecretCache::from([(ssm.to_owned(), public)]);
        assert_eq!(
            configured_with(&vars, &cache).expect("alipay from the cache"),
            vec![ProviderName::Alipay]
        );
        vars.insert("ALIPAY_PUBLIC_KEY", file("public.pem"));
        assert_eq!(
            configured(&vars).expect("alipay"),
            vec![ProviderName::Alipay]
        );

        vars.insert("WECHATPAY_BASE_URL", "https://api.mch.weixin.qq.com".into());
        for (k, v) in [
            ("WECHATPAY_MCHID", "1900000001".to_owned()),
            ("WECHATPAY_APPID", "wx0000000000000001".to_owned()),
            (
                "WECHATPAY_MERCHANT_SERIAL_NO",
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".to_owned(),
            ),
            ("WECHATPAY_MERCHANT_KEY", file("private.pem")),
            ("WECHATPAY_PLATFORM_PUBLIC_KEY", file("public.pem")),
            (
                "WECHATPAY_PLATFORM_PUBLIC_KEY_ID",
                "PUB_KEY_ID_0114232134912410000000000000".to_owned(),
            ),
        ] {
            vars.insert(k, v);
        }
        std::fs::write(dir.join("apiv3.key"), "0123456789abcdef0123456789abcdef\n").expect("write");
        vars.insert("WECHATPAY_API_V3_KEY", file("apiv3.key"));
        assert_eq!(
            configured(&vars).expect("wechatpay"),
            vec![ProviderName::Alipay, ProviderName::WechatPay]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
