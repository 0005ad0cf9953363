//! The Lambda emulator (xtask's own Invoke and Runtime APIs, [`emulator`]) with the real function
//! binaries attached, each with the environment the template gives it.

pub mod emulator;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

pub use emulator::{Emulator, FunctionConfig, Instance, Launcher, Stats};

use crate::procs::spawn_logged;

/// One function as the emulator runs it.
pub struct FunctionSpec {
    pub binary: String,
    pub memory_mb: u64,
    /// The template's timeout.
    pub timeout_s: u64,
    /// The template's reserved concurrency, if any: a cap on the instances.
    pub reserved_concurrency: Option<u64>,
    pub env: BTreeMap<String, String>,
}

/// Where cargo puts binaries for this workspace.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Builds the function binaries up front: a lazy first compile would outlast any request timeout.
pub fn build(root: &Path, binaries: &[String], release: bool) -> anyhow::Result<()> {
    let mut command = StdCommand::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root).arg("build").arg("--quiet");
    if release {
        command.arg("--release");
    }
    for binary in binaries {
        command.args(["--bin", binary]);
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the functions failed");
    }
    Ok(())
}

pub fn binary_path(root: &Path, binary: &str, release: bool) -> PathBuf {
    target_dir(root)
        .join(if release { "release" } else { "debug" })
        .join(binary)
}

/// Starts the emulator with `concurrency` instances of every function binary, or fewer where
/// the template reserves fewer (at least one).
pub async fn start(
    root: &Path,
    log_dir: &Path,
    functions: Vec<FunctionSpec>,
    concurrency: usize,
    aws_env: BTreeMap<String, String>,
) -> anyhow::Result<Emulator> {
    let configs = functions
        .iter()
        .map(|f| FunctionConfig {
            name: f.binary.clone(),
            timeout: Duration::from_secs(f.timeout_s),
            instances: f.reserved_concurrency.map_or(concurrency, |reserved| {
                usize::try_from(reserved).map_or(concurrency, |r| r.clamp(1, concurrency.max(1)))
            }),
        })
        .collect();
    let launcher = Binaries {
        root: root.to_owned(),
        log_dir: log_dir.to_owned(),
        functions: functions
            .into_iter()
            .map(|f| (f.binary.clone(), f))
            .collect(),
        aws_env,
        started: AtomicUsize::new(0),
    };
    emulator::start(configs, Arc::new(launcher)).await
}

/// Starts the function binaries (debug builds), each with its environment and its own log.
struct Binaries {
    root: PathBuf,
    log_dir: PathBuf,
    functions: BTreeMap<String, FunctionSpec>,
    aws_env: BTreeMap<String, String>,
    /// Instances started so far: each its own log stream.
    started: AtomicUsize,
}

impl Launcher for Binaries {
    fn launch(&self, function: &str, runtime_api: &str) -> anyhow::Result<Instance> {
        let spec = self
            .functions
            .get(function)
            .with_context(|| format!("no function {function}"))?;
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let command = function_command(
            binary_path(&self.root, &spec.binary, false),
            &spec.binary,
            spec.memory_mb,
            spec.env.iter().chain(&self.aws_env),
            runtime_api,
            &format!("local/{n}"),
        );
        let log = self.log_dir.join(format!("{}.log", spec.binary));
        // The child is killed when the future is dropped (`kill_on_drop`).
        let mut child = spawn_logged(command, &log)?;
        Ok(Box::pin(async move {
            let _ = child.wait().await;
        }))
    }
}

/// The command that runs the function binary at `program` with what Lambda would give it and
/// nothing of this shell but PATH, HOME and TMPDIR: `env`, then the `AWS_LAMBDA_*` variables of
/// function `name` polling `runtime_api` and logging to stream `log_stream`.
pub fn function_command<'a>(
    program: PathBuf,
    name: &str,
    memory_mb: u64,
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
    runtime_api: &str,
    log_stream: &str,
) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    for key in ["PATH", "HOME", "TMPDIR"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command
        .envs(env)
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream);
    command
}
