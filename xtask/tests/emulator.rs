//! The Lambda emulator under the load that wedged the local stack (issue #12): callers that give
//! up, more waiting invocations than cargo-lambda's runtime API could queue for one function
//! (100), invocations that outlive their timeout, instances that exit. Stand-in runtimes play the
//! function instances: each echoes `echo`, waits for the test's go first on `hold`, hangs on
//! `hang`, exits on `exit`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use xtask::lambda::{Emulator, FunctionConfig, Instance, Launcher, emulator};

/// Bound on how long a test waits for anything: a wedged emulator fails, it does not hang.
const PATIENCE: Duration = Duration::from_secs(30);
/// A caller that gives up early.
const IMPATIENT: Duration = Duration::from_millis(200);

struct Seen {
    launches: AtomicUsize,
    /// Events handed to stand-ins.
    started: AtomicUsize,
    /// The status of every answer a stand-in posted.
    answer_statuses: Mutex<Vec<u16>>,
    /// One permit per held invocation let go.
    go: tokio::sync::Semaphore,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            launches: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            answer_statuses: Mutex::new(Vec::new()),
            go: tokio::sync::Semaphore::new(0),
        }
    }
}

struct StandIns {
    http: reqwest::Client,
    seen: Arc<Seen>,
}

impl Launcher for StandIns {
    fn launch(&self, _function: &str, runtime_api: &str) -> anyhow::Result<Instance> {
        self.seen.launches.fetch_add(1, Ordering::SeqCst);
        let instance = stand_in(self.http.clone(), runtime_api.to_owned(), self.seen.clone());
        Ok(Box::pin(instance))
    }
}

/// A runtime loop as lambda_runtime runs it: next, handle, post the answer.
async fn stand_in(http: reqwest::Client, api: String, seen: Arc<Seen>) {
    for _ in 0..10_000 {
        let url = format!("{api}/2018-06-01/runtime/invocation/next");
        let Ok(next) = http.get(url).send().await else {
            return;
        };
        if !next.status().is_success() {
            return;
        }
        let id = next.headers()["lambda-runtime-aws-request-id"]
            .to_str()
            .expect("request id")
            .to_owned();
        let event: Value = next.json().await.expect("event");
        seen.started.fetch_add(1, Ordering::SeqCst);
        if event["exit"] == true {
            return;
        }
        if event["hang"] == true {
            std::future::pending::<()>().await;
        }
        if event["hold"] == true {
            seen.go.acquire().await.expect("go").forget();
        }
        let url = format!("{api}/2018-06-01/runtime/invocation/{id}/response");
        let answer = json!({ "echo": event["echo"] });
        let status = http
            .post(url)
            .json(&answer)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        seen.answer_statuses.lock().expect("statuses").push(status);
    }
}

async fn start(functions: &[(&str, u64, usize)]) -> (Emulator, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let configs = functions
        .iter()
        .map(|(name, timeout_s, instances)| FunctionConfig {
            name: (*name).to_owned(),
            timeout: Duration::from_secs(*timeout_s),
            instances: *instances,
        })
        .collect();
    let launcher = StandIns {
        http: reqwest::Client::new(),
        seen: seen.clone(),
    };
    let emulator = emulator::start(configs, Arc::new(launcher))
        .await
        .expect("emulator");
    (emulator, seen)
}

/// Invokes `function` with `event`, giving up after `timeout`: (function error, answer).
async fn invoke(
    emulator: &Emulator,
    function: &str,
    event: Value,
    timeout: Duration,
) -> reqwest::Result<(Option<String>, Value)> {
    invoke_at(&emulator.invoke_url, function, event, timeout).await
}

async fn invoke_at(
    invoke_url: &str,
    function: &str,
    event: Value,
    timeout: Duration,
) -> reqwest::Result<(Option<String>, Value)> {
    let url = format!("{invoke_url}/2015-03-31/functions/{function}/invocations");
    let response = reqwest::Client::new()
        .post(url)
        .json(&event)
        .timeout(timeout)
        .send()
        .await?;
    assert_eq!(response.status(), 200, "{function}: {event}");
    let error = response
        .headers()
        .get("x-amz-function-error")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    Ok((error, response.json().await?))
}

/// Waits until `done` holds, for at most [`PATIENCE`].
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_neither_poison_the_runtime_nor_wedge_other_functions() {
    let (emulator, seen) = start(&[("busy", 10, 2), ("other", 10, 1)]).await;
    // Both instances of `busy` take a held invocation whose caller leaves while it runs.
    let slow = json!({ "hold": true, "echo": "slow" });
    let (a, b) = tokio::join!(
        invoke(&emulator, "busy", slow.clone(), IMPATIENT),
        invoke(&emulator, "busy", slow, IMPATIENT),
    );
    assert!(a.is_err() && b.is_err(), "the slow callers gave up");
    until("both held invocations run", || {
        seen.started.load(Ordering::SeqCst) == 2
    })
    .await;
    // More callers than cargo-lambda's queue of 100 wait for `busy`, and give up.
    let mut waiting = tokio::task::JoinSet::new();
    for n in 0..150 {
        let url = emulator.invoke_url.clone();
        waiting.spawn(async move { invoke_at(&url, "busy", json!({ "echo": n }), PATIENCE).await });
    }
    until("150 more wait", || emulator.stats().invoked == 152).await;
    waiting.abort_all();
    while waiting.join_next().await.is_some() {}
    seen.go.add_permits(2);

    let busy = invoke(&emulator, "busy", json!({ "echo": "b" }), PATIENCE);
    let other = invoke(&emulator, "other", json!({ "echo": "o" }), PATIENCE);
    let (busy, other) = tokio::join!(busy, other);
    assert_eq!(busy.expect("busy answers"), (None, json!({ "echo": "b" })));
    assert_eq!(
        other.expect("other answers"),
        (None, json!({ "echo": "o" }))
    );

    until("the held answers are posted", || {
        seen.answer_statuses.lock().expect("statuses").len() >= 4
    })
    .await;
    let statuses = seen.answer_statuses.lock().expect("statuses").clone();
    assert!(
        statuses.iter().all(|s| (200..300).contains(s)),
        "every answer is accepted, the late ones too: {statuses:?}"
    );
    // Every invocation is accounted for: answered, never run (its caller left first), or
    // answered after its caller left (the held two at least).
    let stats = emulator.stats();
    assert_eq!(stats.invoked, 154, "{stats:?}");
    let settled = stats.answered + stats.abandoned_waiting + stats.late_answers;
    assert_eq!(settled, stats.invoked, "{stats:?}");
    assert!(stats.late_answers >= 2, "{stats:?}");
    assert_eq!(
        seen.launches.load(Ordering::SeqCst),
        3,
        "no instance was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_past_its_timeout_is_ended_and_its_instance_replaced() {
    let (emulator, seen) = start(&[("stuck", 1, 1)]).await;
    let (error, answer) = invoke(&emulator, "stuck", json!({ "hang": true }), PATIENCE)
        .await
        .expect("the emulator answers at the timeout");
    assert_eq!(error.as_deref(), Some("Unhandled"));
    assert_eq!(answer["errorType"], "Sandbox.Timedout", "{answer}");

    let next = invoke(&emulator, "stuck", json!({ "echo": 3 }), PATIENCE).await;
    assert_eq!(next.expect("answered"), (None, json!({ "echo": 3 })));
    assert_eq!(
        seen.launches.load(Ordering::SeqCst),
        2,
        "a new instance ran it"
    );
    let stats = emulator.stats();
    assert_eq!(
        (stats.timed_out, stats.instances_replaced),
        (1, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_exits_fails_its_invocation_and_is_started_again() {
    let (emulator, seen) = start(&[("crashy", 10, 1)]).await;
    let (error, answer) = invoke(&emulator, "crashy", json!({ "exit": true }), PATIENCE)
        .await
        .expect("answered");
    assert_eq!(error.as_deref(), Some("Unhandled"));
    assert_eq!(answer["errorType"], "Runtime.ExitError", "{answer}");

    let next = invoke(&emulator, "crashy", json!({ "echo": 4 }), PATIENCE).await;
    assert_eq!(next.expect("answered"), (None, json!({ "echo": 4 })));
    assert_eq!(seen.launches.load(Ordering::SeqCst), 2);
    assert_eq!(emulator.stats().lost_with_instance, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_scales_out_while_invocations_wait_and_no_further_than_its_concurrency() {
    let (emulator, seen) = start(&[("wide", 10, 3)]).await;
    until("one instance at the start", || {
        seen.launches.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        seen.launches.load(Ordering::SeqCst),
        1,
        "only one, while idle"
    );

    let mut held = tokio::task::JoinSet::new();
    for n in 0..5 {
        let url = emulator.invoke_url.clone();
        let event = json!({ "hold": true, "echo": n });
        held.spawn(async move { (n, invoke_at(&url, "wide", event, PATIENCE).await) });
    }
    until("three run at once", || {
        seen.started.load(Ordering::SeqCst) == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.started.load(Ordering::SeqCst), 3, "no fourth runs");
    assert_eq!(seen.launches.load(Ordering::SeqCst), 3);
    seen.go.add_permits(5);
    while let Some(joined) = held.join_next().await {
        let (n, answer) = joined.expect("joined");
        assert_eq!(answer.expect("answered"), (None, json!({ "echo": n })));
    }
    assert_eq!(emulator.stats().instances, 3);
}
