//! moto server: DynamoDB (and later SQS, EventBridge, KMS) on 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::procs::{free_port, spawn_logged, wait_http};
use crate::venv::Venv;

pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

pub async fn start(venv: &Venv, log_dir: &Path) -> anyhow::Result<Moto> {
    let port = free_port()?;
    // moto's own server, with requests serialized (see the launcher for why).
    let launcher = crate::venv::workspace_root().join("xtask/moto_serial.py");
    let mut command = Command::new(venv.bin("python"));
    command.arg(launcher).args(["127.0.0.1", &port.to_string()]);
    let mut child = spawn_logged(command, &log_dir.join("moto.log"))?;
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_http(
        &format!("{endpoint}/moto-api/"),
        Duration::from_secs(60),
        &mut child,
    )
    .await?;
    Ok(Moto {
        endpoint,
        _child: child,
    })
}

/// An SDK config for moto: fixed test credentials, a region, the endpoint.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(crate::REGION))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}
