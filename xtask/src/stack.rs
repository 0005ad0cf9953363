//! The whole local stack in one call: moto, the template's tables and queues, the provider
//! sandbox, the Lambda emulator with every function attached, its schedules and event sources,
//! and the API front.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::event_sources::EventSources;
use crate::front::FrontRoute;
use crate::lambda::{Emulator, FunctionSpec};
use crate::moto::Moto;
use crate::sandbox::{
    AlipayOptions, KeyPairPem, ProviderSandboxes, SandboxHandle, SandboxOptions, UnionPayOptions,
    WechatPayOptions, generate_rsa_2048,
};
use crate::schedules::Schedules;
use crate::template::{Function, Physical, Resolver, Template};
use crate::{
    ALIPAY_APP_ID, REGION, SANDBOX_MERCHANT_ID, UNIONPAY_MER_ID, UNIONPAY_MERCHANT_CERT_ID,
    UNIONPAY_SIGNER_CN, WECHATPAY_APPID, WECHATPAY_MCHID, WECHATPAY_MERCHANT_SERIAL_NO,
    WECHATPAY_PLATFORM_PUBLIC_KEY_ID, venv,
};

pub struct StackOptions {
    /// API port; 0 picks a free one.
    pub api_port: u16,
    /// Instances per function at most (Lambda's concurrency; the template's reserved
    /// concurrency caps it further): one starts with the stack, more as invocations wait.
    pub concurrency: usize,
    /// The sandbox's resend schedule is divided by this.
    pub time_scale: u32,
    pub stack_name: String,
    /// Keys, logs and the stack description go here.
    pub work_dir: PathBuf,
    /// Provider call timeout the functions use.
    pub provider_timeout_ms: u64,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            api_port: 3000,
            concurrency: 8,
            time_scale: 60,
            stack_name: "paylocal".into(),
            work_dir: venv::workspace_root().join(".local"),
            provider_timeout_ms: 1500,
        }
    }
}

pub struct Stack {
    pub api_url: String,
    pub moto_endpoint: String,
    pub sandbox_url: String,
    pub stack_name: String,
    pub keys_dir: PathBuf,
    pub log_dir: PathBuf,
    pub tables: BTreeMap<String, String>,
    /// Queue URLs by logical id.
    pub queues: BTreeMap<String, String>,
    _moto: Moto,
    sandbox: Option<SandboxHandle>,
    emulator: Emulator,
    _schedules: Schedules,
    _ttl: crate::ttl::Sweeper,
    _event_sources: EventSources,
    front: tokio::task::JoinHandle<()>,
}

impl Stack {
    /// The variables tests and tools need to reach this stack.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("PAYCORE_API_URL".into(), self.api_url.clone());
        env.insert("PAYCORE_SANDBOX_URL".into(), self.sandbox_url.clone());
        env.insert("PAYCORE_STACK_NAME".into(), self.stack_name.clone());
        env.insert(
            "PAYCORE_KEYS_DIR".into(),
            self.keys_dir.display().to_string(),
        );
        env.insert("PAYCORE_LOG_DIR".into(), self.log_dir.display().to_string());
        env.insert("PAYCORE_MERCHANT_ID".into(), SANDBOX_MERCHANT_ID.into());
        env.insert("PAYCORE_ALIPAY_APP_ID".into(), ALIPAY_APP_ID.into());
        for (id, name) in &self.tables {
            env.insert(format!("PAYCORE_TABLE_{}", id.to_uppercase()), name.clone());
        }
        for (id, url) in &self.queues {
            env.insert(format!("PAYCORE_QUEUE_{}", id.to_uppercase()), url.clone());
        }
        env.extend(aws_env(&self.moto_endpoint));
        env
    }

    /// What the Lambda emulator did so far.
    pub fn emulator_stats(&self) -> crate::lambda::Stats {
        self.emulator.stats()
    }

    pub async fn shutdown(mut self) {
        self.front.abort();
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.shutdown().await;
        }
    }
}

/// What every AWS client of the local stack gets: moto's endpoint and throwaway credentials.
pub fn aws_env(endpoint: &str) -> BTreeMap<String, String> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A fresh key pair written as `<name>_private.pem` and `<name>_public.pem`.
fn write_key_pair(dir: &std::path::Path, name: &str) -> anyhow::Result<KeyPairPem> {
    let pair = generate_rsa_2048()?;
    std::fs::write(
        dir.join(format!("{name}_private.pem")),
        &pair.private_pkcs8_pem,
    )?;
    std::fs::write(
        dir.join(format!("{name}_public.pem")),
        &pair.public_spki_pem,
    )?;
    Ok(pair)
}

/// The provider keys of the sandbox's protocols: ours (merchant/app) and the provider's.
struct Keys {
    merchant: KeyPairPem,
    sandbox: KeyPairPem,
    alipay_app: KeyPairPem,
    alipay: KeyPairPem,
    wechatpay_merchant: KeyPairPem,
    wechatpay_platform: KeyPairPem,
    /// 32 random ASCII alphanumerics, also written to `wechatpay_apiv3.key`.
    wechatpay_api_v3_key: Vec<u8>,
    unionpay: UnionPayPki,
}

/// UnionPay's side of the keys: a root CA, an intermediate it signs, UnionPay's signer and our
/// merchant signing certificate (both issued by the intermediate), made by the `openssl` CLI.
struct UnionPayPki {
    merchant: KeyPairPem,
    signer: KeyPairPem,
    signer_cert_pem: String,
}

const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
const LEAF_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n";

/// Runs `openssl args..` in `dir`; fails with its stderr.
fn openssl(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (is it installed?)")?;
    anyhow::ensure!(
        output.status.success(),
        "openssl {}: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Issues `unionpay_{name}.pem` for the key `key_file` and `subject`, signed by the CA
/// `unionpay_{issuer}` (self-signed when `None`).
fn issue(
    dir: &std::path::Path,
    name: &str,
    key_file: &str,
    subject: &str,
    issuer: Option<&str>,
    serial: &str,
) -> anyhow::Result<()> {
    let (csr, pem, ext) = (
        format!("unionpay_{name}.csr"),
        format!("unionpay_{name}.pem"),
        format!("unionpay_{name}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        if name.starts_with("ca_") {
            CA_EXT
        } else {
            LEAF_EXT
        },
    )?;
    openssl(
        dir,
        &[
            "req", "-new", "-utf8", "-key", key_file, "-subj", subject, "-out", &csr,
        ],
    )?;
    let (ca_pem, ca_key) = match issuer {
        Some(issuer) => (
            format!("unionpay_{issuer}.pem"),
            format!("unionpay_{issuer}_private.pem"),
        ),
        None => (String::new(), String::new()),
    };
    let mut args = vec![
        "x509",
        "-req",
        "-sha256",
        "-days",
        "3650",
        "-in",
        &csr,
        "-extfile",
        &ext,
        "-set_serial",
        serial,
        "-out",
        &pem,
    ];
    match issuer {
        Some(_) => args.extend(["-CA", ca_pem.as_str(), "-CAkey", ca_key.as_str()]),
        None => args.extend(["-signkey", key_file]),
    }
    openssl(dir, &args)?;
    let _ = std::fs::remove_file(dir.join(csr));
    Ok(())
}

fn write_unionpay_pki(dir: &std::path::Path) -> anyhow::Result<UnionPayPki> {
    let merchant = write_key_pair(dir, "unionpay_merchant")?;
    let signer = write_key_pair(dir, "unionpay_signer")?;
    for (name, subject, issuer, serial) in [
        (
            "ca_root",
            "/C=CN/O=Sandbox UnionPay Root CA/CN=Sandbox Root",
            None,
            "1",
        ),
        (
            "ca_intermediate",
            "/C=CN/O=Sandbox UnionPay CA/CN=Sandbox OCA1",
            Some("ca_root"),
            "2",
        ),
    ] {
        write_key_pair(dir, &format!("unionpay_{name}"))?;
        let key = format!("unionpay_{name}_private.pem");
        issue(dir, name, &key, subject, issuer, serial)?;
    }
    issue(
        dir,
        "signer",
        "unionpay_signer_private.pem",
        &format!("/C=CN/O=China UnionPay/CN={UNIONPAY_SIGNER_CN}"),
        Some("ca_intermediate"),
        "3",
    )?;
    issue(
        dir,
        "merchant",
        "unionpay_merchant_private.pem",
        &format!("/C=CN/O=Sandbox Merchant/CN=041@Z00000000@{UNIONPAY_MER_ID}:SIGN@00000001"),
        Some("ca_intermediate"),
        UNIONPAY_MERCHANT_CERT_ID,
    )?;
    Ok(UnionPayPki {
        merchant,
        signer,
        signer_cert_pem: std::fs::read_to_string(dir.join("unionpay_signer.pem"))?,
    })
}

/// A fresh APIv3 key (32 ASCII alphanumerics, as the merchant platform issues them).
fn api_v3_key() -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()])
        .collect())
}

fn write_keys(dir: &std::path::Path) -> anyhow::Result<Keys> {
    std::fs::create_dir_all(dir)?;
    Ok(Keys {
        merchant: write_key_pair(dir, "merchant")?,
        sandbox: write_key_pair(dir, "sandbox")?,
        alipay_app: write_key_pair(dir, "alipay_app")?,
        alipay: write_key_pair(dir, "alipay")?,
        wechatpay_merchant: write_key_pair(dir, "wechatpay_merchant")?,
        wechatpay_platform: write_key_pair(dir, "wechatpay_platform")?,
        wechatpay_api_v3_key: {
            let key = api_v3_key()?;
            std::fs::write(dir.join("wechatpay_apiv3.key"), &key)?;
            key
        },
        unionpay: write_unionpay_pki(dir).context("making the UnionPay certificates")?,
    })
}

/// Boots everything and returns when the API takes traffic.
pub async fn spawn(options: StackOptions) -> anyhow::Result<Stack> {
    let root = venv::workspace_root();
    let venv = tokio::task::spawn_blocking(venv::ensure).await??;
    let template = Template::load_default()?;
    let functions = template.functions()?;
    build_functions(&root, &functions).await?;

    let log_dir = options.work_dir.join("logs");
    let keys_dir = options.work_dir.join("keys");
    std::fs::create_dir_all(&log_dir).context("creating log dir")?;
    let moto = crate::moto::start(&venv, &log_dir).await?;
    let sdk = crate::moto::sdk_config(&moto.endpoint).await;
    let sandbox = start_sandbox(&keys_dir, options.time_scale).await?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.api_port))
        .await
        .context("binding the API port")?;
    let api_url = format!("http://{}", listener.local_addr()?);
    let resolver = Resolver {
        stack_name: options.stack_name.clone(),
        region: REGION.into(),
        parameters: parameters(&template, &options, &sandbox.base_url, &api_url, &keys_dir)?,
    };
    let resources = create_resources(&template, &sdk, &resolver).await?;
    let mappings = crate::event_sources::mappings(&functions, &resources.physical)?;
    let (specs, routes) = function_specs(&template, &functions, &resolver, &resources.physical)?;
    let emulator = crate::lambda::start(
        &root,
        &log_dir,
        specs,
        options.concurrency,
        aws_env(&moto.endpoint),
    )
    .await?;
    let schedules =
        crate::schedules::start(&emulator.invoke_url, &functions, options.time_scale, REGION);
    let event_sources = crate::event_sources::start(
        &sdk,
        &emulator.invoke_url,
        REGION,
        mappings,
        options.concurrency,
    );
    let front = crate::front::serve(listener, routes, emulator.invoke_url.clone())?;
    Ok(Stack {
        api_url,
        moto_endpoint: moto.endpoint.clone(),
        sandbox_url: sandbox.base_url.clone(),
        stack_name: options.stack_name,
        keys_dir,
        log_dir,
        tables: resources.tables,
        queues: resources.queues,
        _moto: moto,
        sandbox: Some(sandbox),
        emulator,
        _schedules: schedules,
        _ttl: resources.ttl,
        _event_sources: event_sources,
        front,
    })
}

/// Builds every function binary of the template (debug).
async fn build_functions(root: &std::path::Path, functions: &[Function]) -> anyhow::Result<()> {
    let binaries: Vec<String> = functions.iter().map(|f| f.binary.clone()).collect();
    let build_root = root.to_owned();
    tokio::task::spawn_blocking(move || crate::lambda::build(&build_root, &binaries, false)).await?
}

/// Writes fresh keys to `keys_dir` and starts the sandbox with every provider protocol.
async fn start_sandbox(
    keys_dir: &std::path::Path,
    time_scale: u32,
) -> anyhow::Result<SandboxHandle> {
    let keys = write_keys(keys_dir)?;
    let sandbox_options = SandboxOptions {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        merchant_id: SANDBOX_MERCHANT_ID.into(),
        merchant_public_key_pem: keys.merchant.public_spki_pem,
        provider_private_key_pem: keys.sandbox.private_pkcs8_pem,
        time_scale,
    };
    let alipay = AlipayOptions {
        app_id: ALIPAY_APP_ID.into(),
        app_public_key_pem: keys.alipay_app.public_spki_pem,
        alipay_private_key_pem: keys.alipay.private_pkcs8_pem,
        seller_id: None,
    };
    let wechatpay = WechatPayOptions {
        mchid: WECHATPAY_MCHID.into(),
        appid: WECHATPAY_APPID.into(),
        merchant_serial_no: WECHATPAY_MERCHANT_SERIAL_NO.into(),
        merchant_public_key_pem: keys.wechatpay_merchant.public_spki_pem,
        platform_private_key_pem: keys.wechatpay_platform.private_pkcs8_pem,
        platform_public_key_id: WECHATPAY_PLATFORM_PUBLIC_KEY_ID.into(),
        api_v3_key: keys.wechatpay_api_v3_key,
    };
    let unionpay = UnionPayOptions {
        mer_id: UNIONPAY_MER_ID.into(),
        merchant_cert_id: UNIONPAY_MERCHANT_CERT_ID.into(),
        merchant_public_key_pem: keys.unionpay.merchant.public_spki_pem,
        signer_private_key_pem: keys.unionpay.signer.private_pkcs8_pem,
        signer_cert_pem: keys.unionpay.signer_cert_pem,
    };
    let providers = ProviderSandboxes {
        alipay: Some(alipay),
        wechatpay: Some(wechatpay),
        unionpay: Some(unionpay),
    };
    crate::sandbox::start_with(sandbox_options, providers).await
}

/// The template's parameters as the local stack sets them: the sandbox's addresses and keys,
/// our callback URL, the time-scaled schedules and the provider timeout.
fn parameters(
    template: &Template,
    options: &StackOptions,
    sandbox_url: &str,
    api_url: &str,
    keys_dir: &std::path::Path,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut parameters = template.parameter_defaults().clone();
    parameters.extend(provider_parameters(sandbox_url, keys_dir));
    parameters.insert("CallbackBaseUrl".into(), api_url.to_owned());
    // Time-scaled like the sandbox's resends and the schedules, each step at least `min_s`.
    // The check-back is for what the relay lost: locally too it must not race a relay that is
    // merely busy, or it would deliver effects the relay path is there to deliver.
    for (name, min_s) in [
        ("PollScheduleSeconds", 1),
        ("CheckBackAfterSeconds", 10),
        ("ConsumerRetrySeconds", 1),
    ] {
        if let Some(steps) = parameters.get(name) {
            let scaled = scale_seconds(steps, options.time_scale, min_s)
                .with_context(|| format!("template parameter {name}"))?;
            parameters.insert(name.into(), scaled);
        }
    }
    parameters.insert(
        "ProviderTimeoutMs".into(),
        options.provider_timeout_ms.to_string(),
    );
    Ok(parameters)
}

/// Where the sandbox plays each provider, and the key files of each protocol.
fn provider_parameters(sandbox_url: &str, keys_dir: &std::path::Path) -> BTreeMap<String, String> {
    let key = |name: &str| format!("file:{}", keys_dir.join(name).display());
    [
        ("SandboxBaseUrl", sandbox_url.to_owned()),
        ("SandboxMerchantId", SANDBOX_MERCHANT_ID.into()),
        ("SandboxMerchantKey", key("merchant_private.pem")),
        ("SandboxProviderPublicKey", key("sandbox_public.pem")),
        ("AlipayGatewayUrl", format!("{sandbox_url}/gateway.do")),
        ("AlipayAppId", ALIPAY_APP_ID.into()),
        ("AlipayAppPrivateKey", key("alipay_app_private.pem")),
        ("AlipayPublicKey", key("alipay_public.pem")),
        ("WechatPayBaseUrl", sandbox_url.to_owned()),
        ("WechatPayMchId", WECHATPAY_MCHID.into()),
        ("WechatPayAppId", WECHATPAY_APPID.into()),
        (
            "WechatPayMerchantSerialNo",
            WECHATPAY_MERCHANT_SERIAL_NO.into(),
        ),
        (
            "WechatPayMerchantKey",
            key("wechatpay_merchant_private.pem"),
        ),
        (
            "WechatPayPlatformPublicKey",
            key("wechatpay_platform_public.pem"),
        ),
        (
            "WechatPayPlatformPublicKeyId",
            WECHATPAY_PLATFORM_PUBLIC_KEY_ID.into(),
        ),
        ("WechatPayApiV3Key", key("wechatpay_apiv3.key")),
        ("UnionPayBaseUrl", sandbox_url.to_owned()),
        ("UnionPayFileUrl", format!("{sandbox_url}/unionpay/file/")),
        ("UnionPayMerId", UNIONPAY_MER_ID.into()),
        ("UnionPaySignKey", key("unionpay_merchant_private.pem")),
        ("UnionPaySignCert", key("unionpay_merchant.pem")),
        ("UnionPayRootCert", key("unionpay_ca_root.pem")),
        (
            "UnionPayIntermediateCert",
            key("unionpay_ca_intermediate.pem"),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// The template's tables (with their TTL sweeper) and queues, created in moto.
struct Resources {
    physical: Physical,
    tables: BTreeMap<String, String>,
    queues: BTreeMap<String, String>,
    ttl: crate::ttl::Sweeper,
}

async fn create_resources(
    template: &Template,
    sdk: &aws_config::SdkConfig,
    resolver: &Resolver,
) -> anyhow::Result<Resources> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let mut physical = template.create_tables(&client, resolver).await?;
    let ttl = crate::ttl::start(client.clone(), template.ttl_tables(resolver)?);
    let tables = template
        .table_ids()
        .into_iter()
        .map(|id| template.table_name(&id, resolver).map(|name| (id, name)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    template
        .create_queues(&sqs, resolver, &mut physical)
        .await?;
    let queues = template
        .queue_ids()
        .into_iter()
        .map(|id| {
            let url = physical
                .reference(&id)
                .with_context(|| format!("queue {id}"))?;
            Ok((id.clone(), url.to_owned()))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    Ok(Resources {
        physical,
        tables,
        queues,
        ttl,
    })
}

/// What the emulator runs of each function, and the API routes the front serves.
fn function_specs(
    template: &Template,
    functions: &[Function],
    resolver: &Resolver,
    physical: &Physical,
) -> anyhow::Result<(Vec<FunctionSpec>, Vec<FrontRoute>)> {
    let mut specs = Vec::new();
    let mut routes = Vec::new();
    for function in functions {
        specs.push(FunctionSpec {
            binary: function.binary.clone(),
            memory_mb: function.memory_mb,
            timeout_s: function.timeout_s,
            reserved_concurrency: function.reserved_concurrency,
            env: template.environment(function, resolver, physical)?,
        });
        routes.extend(function.routes.iter().map(|r| FrontRoute {
            method: r.method.clone(),
            path: r.path.clone(),
            route_key: r.route_key.clone(),
            binary: function.binary.clone(),
            timeout_s: function.timeout_s,
        }));
    }
    Ok((specs, routes))
}

/// `60,300` divided by `time_scale`, each at least `min_s`.
fn scale_seconds(steps: &str, time_scale: u32, min_s: u64) -> anyhow::Result<String> {
    steps
        .split(',')
        .map(|step| {
            let step: u64 = step.trim().parse().context("whole seconds")?;
            Ok((step / u64::from(time_scale.max(1))).max(min_s).to_string())
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(|steps| steps.join(","))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn steps_scale_down_to_their_minimum() {
        assert_eq!(scale_seconds("60,300,900", 60, 1).unwrap(), "1,5,15");
        assert_eq!(scale_seconds("60, 30", 60, 1).unwrap(), "1,1");
        assert_eq!(scale_seconds("600", 1000, 10).unwrap(), "10");
        assert_eq!(scale_seconds("600", 1, 10).unwrap(), "600");
        assert_eq!(scale_seconds("60", 0, 1).unwrap(), "60");
        assert!(scale_seconds("1.5", 60, 1).is_err());
    }
}
