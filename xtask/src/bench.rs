//! `cargo xtask bench`: cold start, stripped size and peak RSS of every function of the template
//! (release builds against a Runtime API stand-in), then in-process callback and RSA throughput
//! from `cargo bench -p shared --bench callback`, printed as one table. Not part of CI.

mod events;
mod runtime;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tokio::process::{Child, Command};
use xtask::template::{Function, Physical, Resolver, Template};
use xtask::{REGION, SANDBOX_MERCHANT_ID, lambda, venv};

use events::{BenchRequest, Signing};
use runtime::{Answer, StandIn};

/// Nothing listens here: no network is touched at cold start, and a stray call fails fast.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";
/// A cold start slower than this is a failure, not a measurement.
const POLL_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on serving all the invocations of the RSS run.
const INVOCATIONS_TIMEOUT: Duration = Duration::from_secs(120);
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const REFERENCE: &str = "reference on this machine: Python + Powertools callback handler cold start ~300 ms; bare Rust skeleton ~6 ms; bare aws-lc-rs verify ~56k/s/core";

/// Everything the measurements share.
struct Bench {
    root: PathBuf,
    template: Template,
    resolver: Resolver,
    /// Queue URLs nothing serves: no function sends at cold start.
    queues: Physical,
    work_dir: PathBuf,
    provider_private_pem: String,
    runs: usize,
    invocations: usize,
}

/// One row of the table.
struct Row {
    function: String,
    cold_starts: Vec<Duration>,
    binary_bytes: u64,
    rss: Option<Rss>,
    request: String,
}

struct Rss {
    vm_hwm_kb: u64,
    /// `"404"` or `"error"` -> how many answers.
    statuses: BTreeMap<String, usize>,
    expected_status: u64,
    /// Requests that reached the stand-in's DynamoDB endpoint.
    dynamodb_calls: usize,
}

/// Ops per second from the shared crate's bench.
struct InProcess {
    callback_per_s: u64,
    verify_per_s: u64,
}

pub async fn run(runs: usize, invocations: usize) -> anyhow::Result<()> {
    ensure!(
        runs > 0 && invocations > 0,
        "runs and invocations must be positive"
    );
    let root = venv::workspace_root();
    let template = Template::load_default()?;
    let functions = template.functions()?;
    let binaries: Vec<String> = functions.iter().map(|f| f.binary.clone()).collect();
    eprintln!("xtask bench: building {} (release)", binaries.join(", "));
    let build_root = root.clone();
    tokio::task::spawn_blocking(move || lambda::build(&build_root, &binaries, true))
        .await
        .context("build task")??;
    let work_dir = std::env::temp_dir().join(format!("paycore-bench-{}", std::process::id()));
    let bench = Bench::prepare(root, template, work_dir, runs, invocations)?;
    let mut rows = Vec::new();
    for function in &functions {
        eprintln!("xtask bench: measuring {}", function.binary);
        rows.push(bench.measure(function).await?);
    }
    eprintln!("xtask bench: in-process throughput (cargo bench -p shared --bench callback)");
    let bench_root = bench.root.clone();
    let in_process = tokio::task::spawn_blocking(move || in_process(&bench_root))
        .await
        .context("bench task")??;
    print_table(&rows, &in_process, runs, invocations);
    if let Err(e) = std::fs::remove_dir_all(&bench.work_dir) {
        eprintln!(
            "xtask bench: could not remove {}: {e}",
            bench.work_dir.display()
        );
    }
    Ok(())
}

impl Bench {
    /// Generates the keys into `work_dir` and resolves the template with local values.
    fn prepare(
        root: PathBuf,
        template: Template,
        work_dir: PathBuf,
        runs: usize,
        invocations: usize,
    ) -> anyhow::Result<Self> {
        let keys_dir = work_dir.join("keys");
        std::fs::create_dir_all(&keys_dir)
            .with_context(|| format!("creating {}", keys_dir.display()))?;
        std::fs::create_dir_all(work_dir.join("logs")).context("creating the log dir")?;
        let merchant = xtask::sandbox::generate_rsa_2048()?;
        let provider = xtask::sandbox::generate_rsa_2048()?;
        let write = |name: &str, pem: &str| -> anyhow::Result<String> {
            let path = keys_dir.join(name);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            Ok(format!("file:{}", path.display()))
        };
        let mut parameters = template.parameter_defaults().clone();
        parameters.extend([
            ("SandboxBaseUrl".to_owned(), DEAD_ENDPOINT.to_owned()),
            (
                "SandboxMerchantId".to_owned(),
                SANDBOX_MERCHANT_ID.to_owned(),
            ),
            (
                "SandboxMerchantKey".to_owned(),
                write("merchant_private.pem", &merchant.private_pkcs8_pem)?,
            ),
            (
                "SandboxProviderPublicKey".to_owned(),
                write("sandbox_public.pem", &provider.public_spki_pem)?,
            ),
            ("CallbackBaseUrl".to_owned(), DEAD_ENDPOINT.to_owned()),
        ]);
        let resolver = Resolver {
            stack_name: "paybench".into(),
            region: REGION.into(),
            parameters,
        };
        let queues = template.offline_queues(&resolver, DEAD_ENDPOINT)?;
        Ok(Self {
            root,
            template,
            resolver,
            queues,
            work_dir,
            provider_private_pem: provider.private_pkcs8_pem,
            runs,
            invocations,
        })
    }

    async fn measure(&self, function: &Function) -> anyhow::Result<Row> {
        let env = self
            .template
            .environment(function, &self.resolver, &self.queues)?;
        let binary = lambda::binary_path(&self.root, &function.binary, true);
        let binary_bytes = std::fs::metadata(&binary)
            .with_context(|| format!("reading {}", binary.display()))?
            .len();
        let mut cold_starts = Vec::with_capacity(self.runs);
        for n in 0..self.runs {
            cold_starts.push(self.cold_start(function, &env, n).await?);
        }
        let signing = Signing {
            provider_private_pem: &self.provider_private_pem,
            merchant_id: SANDBOX_MERCHANT_ID,
        };
        let request = match function.routes.first() {
            Some(route) => events::for_route(route, &signing)?,
            None => None,
        };
        let (rss, label) = match request {
            Some(request) => (
                Some(self.peak_rss(function, &env, &request).await?),
                request.label,
            ),
            None => (None, "none: the bench has no request for this route".into()),
        };
        Ok(Row {
            function: function.binary.clone(),
            cold_starts,
            binary_bytes,
            rss,
            request: label,
        })
    }

    /// Exec to the first `GET /runtime/invocation/next`.
    async fn cold_start(
        &self,
        function: &Function,
        env: &BTreeMap<String, String>,
        n: usize,
    ) -> anyhow::Result<Duration> {
        let stand_in = StandIn::start(&function.binary, VecDeque::new()).await?;
        let command = self.command(function, env, &stand_in.url, DEAD_ENDPOINT, n);
        let (mut child, started) = self.spawn(command, &function.binary)?;
        let polled = tokio::select! {
            polled = stand_in.wait_for(POLL_TIMEOUT, "first poll", |p| p.first_poll.is_some()) => polled,
            status = child.wait() => Err(self.exited(&function.binary, status)),
        };
        stop(&mut child).await;
        stand_in.shutdown().await;
        let first_poll = polled?.first_poll.context("first poll not recorded")?;
        Ok(first_poll.saturating_duration_since(started))
    }

    /// Serves `invocations` events to one process, then reads its peak RSS.
    async fn peak_rss(
        &self,
        function: &Function,
        env: &BTreeMap<String, String>,
        request: &BenchRequest,
    ) -> anyhow::Result<Rss> {
        let events = (0..self.invocations)
            .map(|n| (format!("bench-{n}"), request.event(n)))
            .collect();
        let stand_in = StandIn::start(&function.binary, events).await?;
        // The function's AWS calls (get-payment's Query) go to the stand-in too.
        let command = self.command(function, env, &stand_in.url, &stand_in.url, self.runs);
        let (mut child, _) = self.spawn(command, &function.binary)?;
        let target = self.invocations;
        // Every answer is in, and the process is back polling for more.
        let served = tokio::select! {
            done = stand_in.wait_for(INVOCATIONS_TIMEOUT, "answers", |p| p.answers >= target && p.polls > target) => done,
            status = child.wait() => Err(self.exited(&function.binary, status)),
        };
        let hwm = match served {
            Ok(_) => vm_hwm_kb(&child),
            Err(e) => Err(e),
        };
        stop(&mut child).await;
        let answers = stand_in.answers();
        let progress = stand_in.progress();
        stand_in.shutdown().await;
        Ok(Rss {
            vm_hwm_kb: hwm?,
            dynamodb_calls: progress.dynamodb_calls,
            statuses: tally(&answers, &function.binary, request.expected_status),
            expected_status: request.expected_status,
        })
    }

    /// The function's command line and environment: what Lambda would give it, nothing of this
    /// shell but PATH, HOME and TMPDIR ([`lambda::function_command`]), plus the region, test
    /// credentials and `aws_endpoint` for its AWS calls.
    fn command(
        &self,
        function: &Function,
        env: &BTreeMap<String, String>,
        runtime_api: &str,
        aws_endpoint: &str,
        n: usize,
    ) -> Command {
        let mut command = lambda::function_command(
            lambda::binary_path(&self.root, &function.binary, true),
            &function.binary,
            function.memory_mb,
            env,
            runtime_api,
            &format!("bench/{n}"),
        );
        command
            .env("AWS_REGION", REGION)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_ENDPOINT_URL", aws_endpoint);
        command
    }

    fn log_path(&self, binary: &str) -> PathBuf {
        self.work_dir.join("logs").join(format!("{binary}.log"))
    }

    /// Spawns with output appended to the function's log; returns the instant just before exec.
    fn spawn(&self, mut command: Command, binary: &str) -> anyhow::Result<(Child, Instant)> {
        let log = self.log_path(binary);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = file.try_clone().context("duplicating the log handle")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("spawning {binary}"))?;
        Ok((child, started))
    }

    fn exited(
        &self,
        binary: &str,
        status: std::io::Result<std::process::ExitStatus>,
    ) -> anyhow::Error {
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        anyhow::anyhow!(
            "{binary} exited ({status}); see {}",
            self.log_path(binary).display()
        )
    }
}

async fn stop(child: &mut Child) {
    let _ = child.start_kill();
    if tokio::time::timeout(KILL_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        eprintln!("xtask bench: a function process did not die within {KILL_TIMEOUT:?}");
    }
}

/// `VmHWM` (peak resident set) of a live child, in kB.
fn vm_hwm_kb(child: &Child) -> anyhow::Result<u64> {
    let pid = child.id().context("the process is already gone")?;
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM in {path}"))
}

/// Counts the answers by HTTP status (`error` for invocation errors); warns on the unexpected.
fn tally(answers: &[Answer], binary: &str, expected: u64) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        let key = match (&answer.error, answer.body.get("statusCode")) {
            (None, Some(status)) => status.to_string(),
            _ => "error".to_owned(),
        };
        if key != expected.to_string() && !counts.contains_key(&key) {
            eprintln!(
                "xtask bench: {binary} answered unexpectedly: {}",
                answer.body
            );
        }
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Runs the shared crate's bench and parses its `callback-bench k=v ...` line.
fn in_process(root: &Path) -> anyhow::Result<InProcess> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["bench", "--quiet", "-p", "shared", "--bench", "callback"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo bench -p shared --bench callback")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("cargo bench failed ({}): {stdout}", output.status);
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("callback-bench "))
        .with_context(|| format!("no callback-bench line in: {stdout}"))?;
    let values: BTreeMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let number = |key: &str| -> anyhow::Result<u64> {
        values
            .get(key)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {key} in: {line}"))
    };
    Ok(InProcess {
        callback_per_s: number("callback_per_s")?,
        verify_per_s: number("verify_per_s")?,
    })
}

fn ms(d: Duration) -> String {
    let micros = d.as_micros();
    format!("{}.{}", micros / 1000, micros % 1000 / 100)
}

fn cold_start_cell(runs: &[Duration]) -> String {
    let mut sorted = runs.to_vec();
    sorted.sort_unstable();
    let (Some(min), Some(max)) = (sorted.first(), sorted.last()) else {
        return "-".into();
    };
    let mid = sorted.len() / 2;
    let median = match sorted.len() % 2 {
        0 => (sorted[mid - 1] + sorted[mid]) / 2,
        _ => sorted[mid],
    };
    format!("{} ms ({}..{})", ms(median), ms(*min), ms(*max))
}

/// `n` tenths of a unit: `12.3`.
fn tenths(value: u64, unit: u64) -> String {
    let tenths = value * 10 / unit;
    format!("{}.{}", tenths / 10, tenths % 10)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rss_cell(rss: Option<&Rss>) -> (String, String) {
    let Some(rss) = rss else {
        return ("-".into(), String::new());
    };
    let answers = rss
        .statuses
        .iter()
        .map(|(status, count)| format!("{status} x{count}"))
        .collect::<Vec<_>>()
        .join(", ");
    let unexpected = rss
        .statuses
        .keys()
        .any(|s| *s != rss.expected_status.to_string());
    let flag = if unexpected {
        format!(" UNEXPECTED, wanted {}", rss.expected_status)
    } else {
        String::new()
    };
    (
        format!("{} MiB", tenths(rss.vm_hwm_kb, 1024)),
        format!(" -> {answers}{flag}; {} DynamoDB calls", rss.dynamodb_calls),
    )
}

#[allow(clippy::print_stdout, reason = "the table is the output")]
fn print_table(rows: &[Row], in_process: &InProcess, runs: usize, invocations: usize) {
    println!(
        "{:<20}{:<28}{:<20}{:<29}request served",
        "function",
        format!("cold start (median of {runs})"),
        "binary (stripped)",
        format!("peak RSS ({invocations} invocations)"),
    );
    for row in rows {
        let (rss, answers) = rss_cell(row.rss.as_ref());
        println!(
            "{:<20}{:<28}{:<20}{:<29}{}{answers}",
            row.function,
            cold_start_cell(&row.cold_starts),
            format!("{} MiB", tenths(row.binary_bytes, 1024 * 1024)),
            rss,
            row.request,
        );
    }
    println!(
        "in-process, one core: callback verify+apply  {}/s   bare RSA-2048 verify  {}/s",
        thousands(in_process.callback_per_s),
        thousands(in_process.verify_per_s),
    );
    println!("{REFERENCE}");
}
