//! The Lambda emulator: cargo-lambda's runtime API (`cargo lambda watch --only-lambda-apis`) with
//! the real function binaries attached, each with the environment the template gives it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::procs::{free_port, spawn_logged, wait_tcp};
use crate::venv::Venv;

/// One function as the emulator runs it.
pub struct FunctionSpec {
    pub binary: String,
    pub memory_mb: u64,
    pub env: BTreeMap<String, String>,
}

pub struct Emulator {
    /// Base of the Lambda Invoke API: `{invoke_url}/2015-03-31/functions/{name}/invocations`.
    pub invoke_url: String,
    _watch: Child,
    _instances: Vec<Child>,
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

/// Starts the runtime API and `concurrency` instances of every function.
pub async fn start(
    venv: &Venv,
    root: &Path,
    log_dir: &Path,
    functions: &[FunctionSpec],
    concurrency: usize,
    aws_env: &BTreeMap<String, String>,
) -> anyhow::Result<Emulator> {
    let port = free_port()?;
    let mut watch = Command::new(venv.bin("cargo-lambda"));
    watch.current_dir(root).args([
        "lambda",
        "watch",
        "--only-lambda-apis",
        "-A",
        "127.0.0.1",
        "-P",
        &port.to_string(),
    ]);
    let mut watch = spawn_logged(watch, &log_dir.join("cargo-lambda.log"))?;
    let invoke_url = format!("http://127.0.0.1:{port}");
    wait_tcp(port, Duration::from_secs(60), &mut watch).await?;
    let mut instances = Vec::new();
    for function in functions {
        for n in 0..concurrency {
            instances.push(start_instance(root, log_dir, function, port, n, aws_env)?);
        }
    }
    Ok(Emulator {
        invoke_url,
        _watch: watch,
        _instances: instances,
    })
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

fn start_instance(
    root: &Path,
    log_dir: &Path,
    function: &FunctionSpec,
    port: u16,
    n: usize,
    aws_env: &BTreeMap<String, String>,
) -> anyhow::Result<Child> {
    let command = function_command(
        binary_path(root, &function.binary, false),
        &function.binary,
        function.memory_mb,
        function.env.iter().chain(aws_env),
        &format!("http://127.0.0.1:{port}/.rt/{}", function.binary),
        &format!("local/{n}"),
    );
    spawn_logged(command, &log_dir.join(format!("{}.log", function.binary)))
}
