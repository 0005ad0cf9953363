//! The Lambda emulator: the Invoke API callers use and the Runtime API function instances poll,
//! served by xtask itself on 127.0.0.1, with Lambda's guarantees that cargo-lambda's runtime API
//! lacks (docs/local-stack-load.md has the evidence):
//! - an invocation whose caller gave up while it waited is never handed to an instance, and an
//!   instance answering one whose caller left gets 202 like any other, so its loop goes on;
//! - an invocation still running at the function's timeout is answered `Sandbox.Timedout`, and
//!   its instance is ended and replaced, as Lambda does;
//! - an instance that exits fails what it was running and is started again;
//! - each function's queue is bounded: past it the Invoke API throttles (429), and one busy
//!   function never holds up another;
//! - a function scales out as Lambda does: one instance starts with the emulator, and another
//!   whenever an invocation waits with no instance free, up to the function's concurrency.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Invocations of one function waiting for an instance; past this the Invoke API throttles.
pub const QUEUE_LIMIT: usize = 1000;
/// The pause before an instance that exited by itself is started again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// A waiting poll looks at its queue at least this often (besides being woken).
const RECHECK: Duration = Duration::from_secs(1);
/// Bound on the rechecks of one poll: a day of an idle function.
const RECHECKS_MAX: u32 = 86_400;

/// A running instance: it runs until this future resolves (it exited by itself) and is ended by
/// dropping it.
pub type Instance = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts instances: the stack starts the function binaries, tests start stand-ins.
pub trait Launcher: Send + Sync + 'static {
    /// Starts an instance of `function` polling the Runtime API at `runtime_api` (the value of
    /// `AWS_LAMBDA_RUNTIME_API`).
    fn launch(&self, function: &str, runtime_api: &str) -> anyhow::Result<Instance>;
}

/// One function as the emulator runs it.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub name: String,
    /// The template's timeout: an invocation still running then is ended.
    pub timeout: Duration,
    /// Instances at most (the function's concurrency): one runs from the start, more start
    /// while invocations wait with none free, and they stay.
    pub instances: usize,
}

/// What the emulator did, summed over every function since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub invoked: u64,
    /// Invocations answered with the function's response or error.
    pub answered: u64,
    /// Callers that left while their invocation waited: it never ran.
    pub abandoned_waiting: u64,
    /// Answers that came after the caller left or the invocation was ended.
    pub late_answers: u64,
    pub timed_out: u64,
    /// Invocations failed because their instance exited.
    pub lost_with_instance: u64,
    pub throttled: u64,
    pub instances_replaced: u64,
    pub instances_exited: u64,
    /// Instances of every function now (scaled out, never in).
    pub instances: usize,
}

#[derive(Default)]
struct Counters {
    invoked: AtomicU64,
    answered: AtomicU64,
    abandoned_waiting: AtomicU64,
    late_answers: AtomicU64,
    timed_out: AtomicU64,
    lost_with_instance: AtomicU64,
    throttled: AtomicU64,
    instances_replaced: AtomicU64,
    instances_exited: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How an invocation ended.
enum Outcome {
    Response(Bytes),
    Error(Bytes),
    /// Ended by the emulator, with Lambda's error type.
    Ended {
        error_type: &'static str,
        message: String,
    },
}

struct Waiting {
    request_id: String,
    event: Bytes,
    answer: oneshot::Sender<Outcome>,
}

struct Running {
    instance: u64,
    answer: oneshot::Sender<Outcome>,
}

struct Function {
    config: FunctionConfig,
    queue: Mutex<VecDeque<Waiting>>,
    queued: Notify,
    /// Instances started (each one's supervisor keeps it running).
    started: AtomicUsize,
    /// Instances waiting in `next` for an invocation.
    free: AtomicUsize,
}

struct InstanceEntry {
    function: Arc<Function>,
    /// Tells the instance's supervisor to end it and start another.
    end: Arc<Notify>,
}

struct Shared {
    functions: BTreeMap<String, Arc<Function>>,
    instances: Mutex<HashMap<u64, InstanceEntry>>,
    running: Mutex<HashMap<String, Running>>,
    next_instance: AtomicU64,
    counters: Counters,
    launcher: Arc<dyn Launcher>,
    /// Every instance's supervisor, ended with the emulator.
    supervisors: Mutex<Vec<JoinHandle<()>>>,
    base_url: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running emulator; dropping it ends every instance.
pub struct Emulator {
    /// Base of the Invoke API: `{invoke_url}/2015-03-31/functions/{name}/invocations`.
    pub invoke_url: String,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for task in self
            .tasks
            .iter()
            .chain(lock(&self.shared.supervisors).iter())
        {
            task.abort();
        }
    }
}

impl Emulator {
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            invoked: read(&c.invoked),
            answered: read(&c.answered),
            abandoned_waiting: read(&c.abandoned_waiting),
            late_answers: read(&c.late_answers),
            timed_out: read(&c.timed_out),
            lost_with_instance: read(&c.lost_with_instance),
            throttled: read(&c.throttled),
            instances_replaced: read(&c.instances_replaced),
            instances_exited: read(&c.instances_exited),
            instances: (self.shared.functions.values())
                .map(|f| f.started.load(Ordering::Relaxed))
                .sum(),
        }
    }
}

/// Serves the APIs on a free port of 127.0.0.1 and runs up to `instances` instances of each
/// function, started by `launcher`.
pub async fn start(
    functions: Vec<FunctionConfig>,
    launcher: Arc<dyn Launcher>,
) -> anyhow::Result<Emulator> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding the emulator's port")?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let functions: BTreeMap<String, Arc<Function>> = functions
        .into_iter()
        .map(|config| {
            let function = Function {
                config,
                queue: Mutex::new(VecDeque::new()),
                queued: Notify::new(),
                started: AtomicUsize::new(0),
                free: AtomicUsize::new(0),
            };
            (function.config.name.clone(), Arc::new(function))
        })
        .collect();
    let shared = Arc::new(Shared {
        functions,
        instances: Mutex::new(HashMap::new()),
        running: Mutex::new(HashMap::new()),
        next_instance: AtomicU64::new(1),
        counters: Counters::default(),
        base_url: base_url.clone(),
        launcher,
        supervisors: Mutex::new(Vec::new()),
    });
    let tasks = vec![tokio::spawn(serve(listener, shared.clone()))];
    for function in shared.functions.values() {
        shared.start_instance(function);
    }
    Ok(Emulator {
        invoke_url: base_url,
        shared,
        tasks,
    })
}

async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let runtime = "/.rt/{function}/{instance}/2018-06-01/runtime";
    let app = Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .route(&format!("{runtime}/invocation/next"), get(next))
        .route(
            &format!("{runtime}/invocation/{{id}}/response"),
            post(respond),
        )
        .route(&format!("{runtime}/invocation/{{id}}/error"), post(fail))
        .route(&format!("{runtime}/init/error"), post(init_error))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "the Lambda emulator stopped");
    }
}

/// Keeps one instance of `function` running: starts it, and starts another when it exits or
/// is ended. Runs as long as the emulator.
async fn supervise(shared: Arc<Shared>, function: Arc<Function>) {
    loop {
        let id = shared.next_instance.fetch_add(1, Ordering::Relaxed);
        let end = Arc::new(Notify::new());
        let entry = InstanceEntry {
            function: function.clone(),
            end: end.clone(),
        };
        lock(&shared.instances).insert(id, entry);
        let name = &function.config.name;
        let runtime_api = format!("{}/.rt/{name}/{id}", shared.base_url);
        let exited = match shared.launcher.launch(name, &runtime_api) {
            // Dropping the instance ends it.
            Ok(instance) => tokio::select! {
                () = instance => true,
                () = end.notified() => false,
            },
            Err(e) => {
                warn!(function = %name, error = %e, "emulator: starting an instance failed");
                true
            }
        };
        lock(&shared.instances).remove(&id);
        shared.fail_running_on(id);
        if exited {
            warn!(function = %name, instance = id, "emulator: an instance exited; starting another");
            bump(&shared.counters.instances_exited);
            tokio::time::sleep(RESTART_PAUSE).await;
        } else {
            bump(&shared.counters.instances_replaced);
        }
    }
}

impl Shared {
    /// Starts one more instance of `function`, if it runs fewer than its concurrency.
    fn start_instance(self: &Arc<Self>, function: &Arc<Function>) {
        let max = function.config.instances.max(1);
        let claimed = function
            .started
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if claimed.is_ok() {
            let supervisor = tokio::spawn(supervise(self.clone(), function.clone()));
            lock(&self.supervisors).push(supervisor);
        }
    }

    /// Fails what instance `id` was running: it exited or was ended.
    fn fail_running_on(&self, id: u64) {
        let mut running = lock(&self.running);
        let ids: Vec<String> = running
            .iter()
            .filter(|(_, r)| r.instance == id)
            .map(|(request_id, _)| request_id.clone())
            .collect();
        for request_id in ids {
            if let Some(lost) = running.remove(&request_id) {
                bump(&self.counters.lost_with_instance);
                let _ = lost.answer.send(Outcome::Ended {
                    error_type: "Runtime.ExitError",
                    message: format!("RequestId: {request_id} Error: the instance exited"),
                });
            }
        }
    }

    fn function_of(&self, instance: u64) -> Option<Arc<Function>> {
        lock(&self.instances)
            .get(&instance)
            .map(|entry| entry.function.clone())
    }

    /// The next invocation of `function` whose caller still waits, now running on `instance`.
    fn take(self: &Arc<Self>, function: &Function, instance: u64) -> Option<(String, Bytes)> {
        let waiting = {
            let mut queue = lock(&function.queue);
            loop {
                let waiting = queue.pop_front()?;
                if !waiting.answer.is_closed() {
                    break waiting;
                }
                bump(&self.counters.abandoned_waiting);
                debug!(function = %function.config.name, request_id = %waiting.request_id, "emulator: the caller left before it ran");
            }
        };
        let running = Running {
            instance,
            answer: waiting.answer,
        };
        lock(&self.running).insert(waiting.request_id.clone(), running);
        tokio::spawn(end_at_deadline(
            self.clone(),
            waiting.request_id.clone(),
            instance,
            function.config.timeout,
        ));
        Some((waiting.request_id, waiting.event))
    }

    /// Hands the answer of invocation `request_id` to its caller, if it is still running.
    fn settle(&self, request_id: &str, outcome: Outcome) {
        let running = lock(&self.running).remove(request_id);
        let delivered = running.is_some_and(|r| r.answer.send(outcome).is_ok());
        if delivered {
            bump(&self.counters.answered);
        } else {
            bump(&self.counters.late_answers);
            debug!(%request_id, "emulator: an answer nobody waits for any more");
        }
    }
}

/// Ends invocation `request_id` if it still runs after `timeout`, and its instance with it.
async fn end_at_deadline(
    shared: Arc<Shared>,
    request_id: String,
    instance: u64,
    timeout: Duration,
) {
    tokio::time::sleep(timeout).await;
    let Some(running) = lock(&shared.running).remove(&request_id) else {
        return;
    };
    bump(&shared.counters.timed_out);
    let _ = running.answer.send(Outcome::Ended {
        error_type: "Sandbox.Timedout",
        message: format!(
            "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
            timeout.as_secs_f64()
        ),
    });
    if let Some(entry) = lock(&shared.instances).get(&instance) {
        warn!(function = %entry.function.config.name, %request_id, "emulator: timed out; replacing the instance");
        entry.end.notify_one();
    }
}

fn unix_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// A request id in the UUID form Lambda's are in.
pub(crate) fn request_id() -> String {
    let hex = format!("{:032x}", ulid::Ulid::new().0);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn lambda_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = json!({ "Type": "User", "message": message }).to_string();
    (status, [("x-amzn-errortype", error_type)], body).into_response()
}

async fn invoke(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    event: Bytes,
) -> Response {
    let Some(function) = shared.functions.get(&name) else {
        let message = format!("Function not found: {name}");
        return lambda_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &message);
    };
    let (answer, answered) = oneshot::channel();
    {
        let mut queue = lock(&function.queue);
        if queue.len() >= QUEUE_LIMIT {
            bump(&shared.counters.throttled);
            let status = StatusCode::TOO_MANY_REQUESTS;
            return lambda_error(status, "TooManyRequestsException", "Rate Exceeded.");
        }
        queue.push_back(Waiting {
            request_id: request_id(),
            event,
            answer,
        });
    }
    bump(&shared.counters.invoked);
    function.queued.notify_one();
    // Lambda starts an execution environment for a request none is free to take.
    if lock(&function.queue).len() > function.free.load(Ordering::Acquire) {
        shared.start_instance(function);
    }
    let function_error = [("x-amz-function-error", "Unhandled")];
    match answered.await {
        Ok(Outcome::Response(body)) => (StatusCode::OK, body).into_response(),
        Ok(Outcome::Error(body)) => (StatusCode::OK, function_error, body).into_response(),
        Ok(Outcome::Ended {
            error_type,
            message,
        }) => {
            let body = json!({ "errorType": error_type, "errorMessage": message }).to_string();
            (StatusCode::OK, function_error, body).into_response()
        }
        Err(_) => {
            let message = "the emulator dropped the invocation";
            lambda_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                message,
            )
        }
    }
}

/// `GET .../invocation/next`: waits for an invocation whose caller still waits.
async fn next(
    State(shared): State<Arc<Shared>>,
    Path((name, instance)): Path<(String, u64)>,
) -> Response {
    let Some(function) = shared.function_of(instance) else {
        return lambda_error(StatusCode::GONE, "InstanceEnded", "this instance was ended");
    };
    for _ in 0..RECHECKS_MAX {
        if let Some((request_id, event)) = shared.take(&function, instance) {
            let deadline = SystemTime::now() + function.config.timeout;
            let arn = format!(
                "arn:aws:lambda:{}:000000000000:function:{name}",
                crate::REGION
            );
            let headers = [
                ("lambda-runtime-aws-request-id", request_id),
                ("lambda-runtime-deadline-ms", unix_ms(deadline).to_string()),
                ("lambda-runtime-invoked-function-arn", arn),
            ];
            return (StatusCode::OK, headers, event).into_response();
        }
        function.free.fetch_add(1, Ordering::AcqRel);
        let _ = tokio::time::timeout(RECHECK, function.queued.notified()).await;
        function.free.fetch_sub(1, Ordering::AcqRel);
        if shared.function_of(instance).is_none() {
            break;
        }
    }
    lambda_error(StatusCode::GONE, "InstanceEnded", "this instance was ended")
}

async fn respond(
    State(shared): State<Arc<Shared>>,
    Path((_, _, request_id)): Path<(String, u64, String)>,
    body: Bytes,
) -> StatusCode {
    shared.settle(&request_id, Outcome::Response(body));
    StatusCode::ACCEPTED
}

async fn fail(
    State(shared): State<Arc<Shared>>,
    Path((_, _, request_id)): Path<(String, u64, String)>,
    body: Bytes,
) -> StatusCode {
    shared.settle(&request_id, Outcome::Error(body));
    StatusCode::ACCEPTED
}

/// The instance could not start; it exits and its supervisor starts another.
async fn init_error(
    Path((name, instance)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = String::from_utf8_lossy(&body);
    warn!(function = %name, instance, %error_type, error = %body, "emulator: init error");
    StatusCode::ACCEPTED
}
