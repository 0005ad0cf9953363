//! Secret sources in AWS (SSM parameters, Secrets Manager secrets), fetched once at cold start,
//! against moto.

use std::collections::HashMap;

use serde_json::{Value, json};
use shared::config::{Env, fetch_secrets};
use tests::unique;

/// One JSON 1.1 call to moto, which serves every service on `AWS_ENDPOINT_URL` and routes by the
/// credential scope of the (unverified) signature.
async fn moto(service: &str, target: &str, body: Value) -> Value {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL: use cargo xtask test");
    let region = std::env::var("AWS_REGION").expect("AWS_REGION");
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    );
    let response = reqwest::Client::new()
        .post(endpoint)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", target)
        .header("authorization", auth)
        .json(&body)
        .send()
        .await
        .expect("moto");
    let status = response.status();
    let reply: Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{target}: {status} {reply}");
    reply
}

async fn put_parameter(name: &str, value: &str) {
    let body = json!({"Name": name, "Value": value, "Type": "SecureString"});
    moto("ssm", "AmazonSSM.PutParameter", body).await;
}

async fn create_secret(name: &str, value: Value) {
    let mut body = json!({"Name": name});
    body.as_object_mut()
        .unwrap()
        .extend(value.as_object().unwrap().clone());
    moto("secretsmanager", "secretsmanager.CreateSecret", body).await;
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

#[tokio::test]
async fn ssm_and_secrets_manager_sources_are_fetched_and_cached() {
    let parameter = format!("/payments/{}", unique("alipay-public-key"));
    put_parameter(&parameter, "-----BEGIN PUBLIC KEY-----\nabc\n").await;
    let text = format!("payments/{}", unique("apiv3"));
    create_secret(
        &text,
        json!({"SecretString": "0123456789abcdef0123456789abcdef"}),
    )
    .await;
    let binary = format!("payments/{}", unique("root-cert"));
    // Base64 of the bytes 00 01 02 ff.
    create_secret(&binary, json!({"SecretBinary": "AAEC/w=="})).await;

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
