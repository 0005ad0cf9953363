//! A minimal stand-in for the Lambda Runtime API on 127.0.0.1: hands out queued events on
//! `GET /2018-06-01/runtime/invocation/next`, records the instant of the first poll and every
//! answer posted back. It also answers DynamoDB `Query` with an empty result, for a function asked
//! about a payment that does not exist.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A poll with nothing to hand out is held at most this long (the process is killed long before).
const HOLD_LIMIT: Duration = Duration::from_secs(120);
/// Invocation deadline given to the function.
const DEADLINE: Duration = Duration::from_secs(15);

/// What the function posted back for one invocation.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `None` for `/response`; the error path otherwise (`/error`, `init/error`).
    pub error: Option<String>,
    pub body: Value,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub first_poll: Option<Instant>,
    pub polls: usize,
    pub answers: usize,
    pub dynamodb_calls: usize,
}

struct Shared {
    function: String,
    events: Mutex<VecDeque<(String, Value)>>,
    answers: Mutex<Vec<Answer>>,
    progress: watch::Sender<Progress>,
    stop: watch::Receiver<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct StandIn {
    /// `http://127.0.0.1:PORT`: the value of `AWS_LAMBDA_RUNTIME_API`.
    pub url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl StandIn {
    /// Starts serving `events` (request id, event) to whichever process polls first.
    pub async fn start(function: &str, events: VecDeque<(String, Value)>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the runtime API stand-in")?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            function: function.to_owned(),
            events: Mutex::new(events),
            answers: Mutex::new(Vec::new()),
            progress: watch::Sender::new(Progress::default()),
            stop: stop_rx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .route("/", post(dynamodb))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "runtime API stand-in stopped");
            }
        });
        Ok(Self {
            url,
            shared,
            stop,
            server,
        })
    }

    /// Waits until `done` holds for the progress, or fails after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl FnMut(&Progress) -> bool,
    ) -> anyhow::Result<Progress> {
        let mut rx = self.shared.progress.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(done)).await {
            Ok(Ok(progress)) => Ok(*progress),
            Ok(Err(_)) => bail!("runtime API stand-in went away while waiting for {what}"),
            Err(_) => bail!(
                "no {what} within {timeout:?} (progress: {:?})",
                *self.shared.progress.borrow()
            ),
        }
    }

    pub fn progress(&self) -> Progress {
        *self.shared.progress.borrow()
    }

    pub fn answers(&self) -> Vec<Answer> {
        lock(&self.shared.answers).clone()
    }

    /// Releases held polls and stops the server.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        // Held polls return at once on `stop`; give their connections a moment, then go.
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.server.abort();
    }
}

fn unix_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let now = Instant::now();
    shared.progress.send_modify(|p| {
        p.first_poll.get_or_insert(now);
        p.polls += 1;
    });
    let event = lock(&shared.events).pop_front();
    let Some((request_id, event)) = event else {
        let mut stop = shared.stop.clone();
        let _ = tokio::time::timeout(HOLD_LIMIT, stop.wait_for(|s| *s)).await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let deadline = unix_ms(SystemTime::now() + DEADLINE).to_string();
    let arn = format!(
        "arn:aws:lambda:us-east-1:000000000000:function:{}",
        shared.function
    );
    (
        [
            (header::CONTENT_TYPE.as_str(), "application/json".to_owned()),
            ("lambda-runtime-aws-request-id", request_id),
            ("lambda-runtime-deadline-ms", deadline),
            ("lambda-runtime-invoked-function-arn", arn),
        ],
        event.to_string(),
    )
        .into_response()
}

fn record(shared: &Shared, error: Option<String>, body: &Bytes) -> StatusCode {
    let body = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    lock(&shared.answers).push(Answer { error, body });
    shared.progress.send_modify(|p| p.answers += 1);
    StatusCode::ACCEPTED
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    record(&shared, None, &body)
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    record(&shared, Some(format!("invocation {id} error")), &body)
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    record(&shared, Some("init error".into()), &body)
}

/// DynamoDB's JSON protocol: `Query` finds nothing; anything else is refused.
async fn dynamodb(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.progress.send_modify(|p| p.dynamodb_calls += 1);
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (status, body) = if target.ends_with(".Query") {
        (
            StatusCode::OK,
            json!({ "Count": 0, "Items": [], "ScannedCount": 0 }),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            json!({
                "__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
                "message": format!("the bench stand-in answers Query only, not {target:?}"),
            }),
        )
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response()
}
