//! Secret sources in AWS (SSM parameters, Secrets Manager secrets), fetched once at cold start,
//! against moto.

use std::collections::HashMap;

use shared::config::{Env, fetch_secrets};
use tests::unique;

async fn put_parameter(name: &str, value: &str) {
    let ssm = aws_sdk_ssm::Client::new(&sdk().await);
    let put = ssm
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString);
    put.send().await.expect("put parameter");
}

async fn create_secret(name: &str, secret: Secret) {
    let client = aws_sdk_secretsmanager::Client::new(&sdk().await);
    let create = client.create_secret().name(name);
    let create = match secret {
        Secret::Text(text) => create.secret_string(text),
        Secret::Bytes(bytes) => {
            create.secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(bytes))
        }
    };
    create.send().await.expect("create secret");
}

enum Secret {
    Text(&'static str),
    Bytes(Vec<u8>),
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

#[tokio::test]
async fn ssm_and_secrets_manager_sources_are_fetched_and_cached() {
    let parameter = format!("/payments/{}", unique("alipay-public-key"));
    put_parameter(&parameter, "-----BEGIN PUBLIC KEY-----\nabc\n").await;
    let text = format!("payments/{}", unique("apiv3"));
    create_secret(&text, Secret::Text("0123456789abcdef0123456789abcdef")).await;
    let binary = format!("payments/{}", unique("root-cert"));
    create_secret(&binary, Secret::Bytes(vec![0, 1, 2, 0xff])).await;

    let vars = HashMap::from([
        ("ALIPAY_PUBLIC_KEY", format!("ssm:{parameter}")),
        ("SANDBOX_PROVIDER_PUBLIC_KEY", format!("ssm:{parameter}")),
        ("WECHATPAY_API_V3_KEY", format!("secretsmanager:{text}")),
        ("UNIONPAY_ROOT_CERT", format!("secretsmanager:{binary}")),
        (
            "UNIONPAY_SIGN_KEY",
            "file:/not/read/at/fetch.pem".to_owned(),
        ),
        ("WECHATPAY_MCHID", "ssm:/not/a/secret/variable".to_owned()),
    ]);
    let lookup = |name: &str| vars.get(name).cloned();
    let cache = fetch_secrets(&lookup, &sdk().await).await.expect("fetch");
    // One entry per distinct AWS source: files and non-secret variables are not fetched.
    assert_eq!(cache.len(), 3, "{:?}", cache.keys());

    let env = Env::new(&lookup, &cache);
    let pem = "-----BEGIN PUBLIC KEY-----\nabc\n";
    assert_eq!(env.secret("ALIPAY_PUBLIC_KEY").unwrap(), pem);
    assert_eq!(env.secret("SANDBOX_PROVIDER_PUBLIC_KEY").unwrap(), pem);
    assert_eq!(
        env.secret("WECHATPAY_API_V3_KEY").unwrap(),
        "0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        env.secret_bytes("UNIONPAY_ROOT_CERT").unwrap(),
        vec![0, 1, 2, 0xff]
    );
}

#[tokio::test]
async fn a_missing_source_fails_naming_its_variable() {
    let aws = sdk().await;
    let missing = format!("ssm:/payments/{}", unique("missing"));
    let vars = HashMap::from([("UNIONPAY_SIGN_CERT", missing)]);
    let lookup = |name: &str| vars.get(name).cloned();
    let err = fetch_secrets(&lookup, &aws)
        .await
        .expect_err("missing parameter");
    assert!(format!("{err:#}").contains("UNIONPAY_SIGN_CERT"), "{err:#}");

    let missing = format!("secretsmanager:payments/{}", unique("missing"));
    let vars = HashMap::from([("WECHATPAY_API_V3_KEY", missing)]);
    let lookup = |name: &str| vars.get(name).cloned();
    let err = fetch_secrets(&lookup, &aws)
        .await
        .expect_err("missing secret");
    assert!(
        format!("{err:#}").contains("WECHATPAY_API_V3_KEY"),
        "{err:#}"
    );
}
