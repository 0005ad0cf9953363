//! Child processes of the local stack: started with their output in log files, killed when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A free TCP port on 127.0.0.1 (bind to port 0, read it back, release it).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Spawns `command` with stdout and stderr appended to `log`; the child dies with its handle.
pub fn spawn_logged(mut command: Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = file.try_clone()?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("spawning {command:?}"))
}

/// Polls `url` until it answers at all (any HTTP status), or fails after `timeout`.
pub async fn wait_http(url: &str, timeout: Duration, child: &mut Child) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("process exited with {status} before {url} answered");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not answer within {timeout:?}")
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub async fn wait_tcp(port: u16, timeout: Duration, child: &mut Child) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("process exited with {status} before port {port} opened");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("port {port} did not open within {timeout:?}")
}
