//! Lambda's event source mappings, played by the local stack from the template's own `SQS` and
//! `DynamoDB` events (moto has none without Docker). Pollers read each queue or table stream,
//! invoke the function through the emulator with the event Lambda sends, and act on its answer as
//! Lambda does:
//! - SQS: success deletes the batch, less the messages `batchItemFailures` names (with
//!   `ReportBatchItemFailures`); an error deletes nothing. What is left comes back after its
//!   visibility timeout, and moto's own RedrivePolicy moves it to the dead-letter queue once it
//!   has been received `maxReceiveCount` times.
//! - DynamoDB streams: in order per shard, one batch in flight. `batchItemFailures` retries from
//!   the lowest failed sequence number; an error retries the batch, split in halves first with
//!   `BisectBatchOnFunctionError` (a split costs no retry). After `MaximumRetryAttempts` retries,
//!   or past `MaximumRecordAgeInSeconds`, the batch is given up: an invocation record goes to the
//!   on-failure queue and the shard moves on.
//!
//! `MaximumBatchingWindowInSeconds` is not played: a batch is what one poll returns.
//!
//! Two things follow from moto. It applies requests one at a time (`moto_serial.py`), so queues
//! are short-polled: a long poll would hold every other request for its wait. And a cancelled
//! TransactWriteItems restores a deep copy of the table, stream included, so an iterator kept
//! across polls can be left reading a shard that no write reaches any more: every poll takes a
//! fresh iterator after the last sequence number read.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, Shard, ShardIteratorType};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::lambda::emulator::request_id;
use crate::template::{Function, Physical, StartingPosition};

/// Pollers per queue mapping (each with at most one batch in flight).
const QUEUE_POLLERS: usize = 2;
/// An idle queue poller waits this long after an empty receive, doubling up to the maximum.
const QUEUE_IDLE_MIN: Duration = Duration::from_millis(100);
const QUEUE_IDLE_MAX: Duration = Duration::from_millis(500);
/// Lambda polls a shard four times a second when it has nothing.
const STREAM_IDLE: Duration = Duration::from_millis(250);
/// How often a stream's shard list is read again.
const SHARD_REFRESH: Duration = Duration::from_secs(5);
/// The pause after a failed AWS call.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// The pause before retrying a failed stream batch: doubled per retry, capped.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(200);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(3);
/// Beyond the function's timeout, the time an invocation may take in the emulator (which ends it
/// at the timeout itself): a backstop, not a deadline.
const INVOKE_SLACK: Duration = Duration::from_secs(10);
/// GetRecords' own limit.
const RECORDS_PER_READ: usize = 1000;
/// Bound on the reads that skip a shard's backlog (`LATEST`).
const SKIP_READS_MAX: usize = 100_000;
/// Tries at sending one invocation record to an on-failure queue.
const SEND_TRIES: usize = 3;

/// The function an event source invokes.
#[derive(Debug, Clone)]
pub struct Target {
    pub binary: String,
    /// The function's timeout: an invocation that takes longer failed.
    pub timeout: Duration,
}

/// An SQS event source mapping.
#[derive(Debug, Clone)]
pub struct QueueMapping {
    pub target: Target,
    pub queue_url: String,
    pub queue_arn: String,
    /// At most 10 are received at a time.
    pub batch_size: u32,
    pub report_batch_item_failures: bool,
}

/// A DynamoDB stream event source mapping.
#[derive(Debug, Clone)]
pub struct StreamMapping {
    pub target: Target,
    pub stream_arn: String,
    pub starting_position: StartingPosition,
    pub batch_size: u32,
    pub bisect_on_error: bool,
    /// `None`: retry until the record expires.
    pub max_retry_attempts: Option<u32>,
    /// `None`: no age limit.
    pub max_record_age: Option<Duration>,
    pub report_batch_item_failures: bool,
    /// Where invocation records of given-up batches go.
    pub on_failure_queue_url: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Mapping {
    Queue(QueueMapping),
    Stream(StreamMapping),
}

impl Mapping {
    fn target(&self) -> &Target {
        match self {
            Mapping::Queue(m) => &m.target,
            Mapping::Stream(m) => &m.target,
        }
    }
}

/// The event source mappings of `functions`, with the queues and streams `physical` resolves.
/// (The queues' own timings were time-scaled when they were created; record ages are real
/// seconds.)
pub fn mappings(functions: &[Function], physical: &Physical) -> anyhow::Result<Vec<Mapping>> {
    let mut mappings = Vec::new();
    for function in functions {
        let target = Target {
            binary: function.binary.clone(),
            timeout: Duration::from_secs(function.timeout_s),
        };
        for source in &function.queues {
            let what = format!("{}: event {}", function.logical_id, source.name);
            let queue_url = physical
                .reference(&source.queue)
                .with_context(|| format!("{what}: queue {} was not created", source.queue))?;
            let queue_arn = physical
                .attribute(&source.queue, "Arn")
                .with_context(|| format!("{what}: queue {} has no Arn", source.queue))?;
            mappings.push(Mapping::Queue(QueueMapping {
                target: target.clone(),
                queue_url: queue_url.to_owned(),
                queue_arn: queue_arn.to_owned(),
                batch_size: source.batch_size,
                report_batch_item_failures: source.report_batch_item_failures,
            }));
        }
        for source in &function.streams {
            let what = format!("{}: event {}", function.logical_id, source.name);
            let stream_arn = physical
                .attribute(&source.table, "StreamArn")
                .with_context(|| {
                    format!(
                        "{what}: table {} has no stream (StreamSpecification)",
                        source.table
                    )
                })?;
            let on_failure_queue_url = match &source.on_failure {
                Some(queue) => Some(
                    physical
                        .reference(queue)
                        .with_context(|| format!("{what}: queue {queue} was not created"))?
                        .to_owned(),
                ),
                None => None,
            };
            mappings.push(Mapping::Stream(StreamMapping {
                target: target.clone(),
                stream_arn: stream_arn.to_owned(),
                starting_position: source.starting_position,
                batch_size: source.batch_size,
                bisect_on_error: source.bisect_on_error,
                max_retry_attempts: source.max_retry_attempts,
                // Not time-scaled: it bounds how stale an event may get, not how long anything
                // waits, and a busy local stack can lag its stream by seconds.
                max_record_age: source.max_record_age_s.map(Duration::from_secs),
                report_batch_item_failures: source.report_batch_item_failures,
                on_failure_queue_url,
            }));
        }
    }
    Ok(mappings)
}

/// The running event sources; dropping it stops them.
pub struct EventSources {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for EventSources {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts `mappings` against the emulator's Invoke API at `invoke_url`, with AWS clients from
/// `sdk` (moto). At most `concurrency` invocations of one function run at once, as the emulator
/// runs that many instances of each.
pub fn start(
    sdk: &aws_config::SdkConfig,
    invoke_url: &str,
    region: &str,
    mappings: Vec<Mapping>,
    concurrency: usize,
) -> EventSources {
    let concurrency = concurrency.max(1);
    let permits = mappings
        .iter()
        .map(|m| {
            let permits = Arc::new(Semaphore::new(concurrency));
            (m.target().binary.clone(), permits)
        })
        .collect();
    let invoker = Invoker {
        http: reqwest::Client::new(),
        invoke_url: invoke_url.to_owned(),
        permits: Arc::new(permits),
    };
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(sdk);
    let mut tasks = Vec::new();
    for mapping in mappings {
        match mapping {
            Mapping::Queue(mapping) => {
                let mapping = Arc::new(mapping);
                for _ in 0..QUEUE_POLLERS.min(concurrency) {
                    tasks.push(tokio::spawn(poll_queue(
                        sqs.clone(),
                        invoker.clone(),
                        mapping.clone(),
                        region.to_owned(),
                    )));
                }
            }
            Mapping::Stream(mapping) => {
                let stream = StreamReader {
                    streams: streams.clone(),
                    sqs: sqs.clone(),
                    invoker: invoker.clone(),
                    region: region.to_owned(),
                    mapping,
                };
                tasks.push(tokio::spawn(read_stream(Arc::new(stream))));
            }
        }
    }
    EventSources { tasks }
}

/// Calls the emulator's Invoke API, at most `concurrency` at a time per function.
#[derive(Clone)]
struct Invoker {
    http: reqwest::Client,
    invoke_url: String,
    permits: Arc<BTreeMap<String, Arc<Semaphore>>>,
}

/// What an invocation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// The function returned this response.
    Returned(Vec<u8>),
    /// A function error, a timeout, or no emulator.
    Failed(String),
}

impl Invoker {
    async fn invoke(&self, target: &Target, event: &Value) -> Invocation {
        let permit = match self.permits.get(&target.binary) {
            Some(permits) => permits.clone().acquire_owned().await.ok(),
            None => None,
        };
        let url = format!(
            "{}/2015-03-31/functions/{}/invocations",
            self.invoke_url, target.binary
        );
        let sent = self
            .http
            .post(&url)
            .timeout(target.timeout + INVOKE_SLACK)
            .json(event)
            .send()
            .await;
        let invocation = match sent {
            Err(e) => Invocation::Failed(format!("invoking: {e}")),
            Ok(response) => {
                let status = response.status();
                let function_error = response.headers().contains_key("x-amz-function-error");
                match response.bytes().await {
                    Err(e) => Invocation::Failed(format!("reading the response: {e}")),
                    Ok(body) if status.is_success() && !function_error => {
                        Invocation::Returned(body.to_vec())
                    }
                    Ok(body) => {
                        let text = String::from_utf8_lossy(&body);
                        Invocation::Failed(format!("{status}: {}", truncated(&text, 400)))
                    }
                }
            }
        };
        drop(permit);
        invocation
    }
}

fn truncated(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// What a function's answer says about a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchResult {
    Succeeded,
    /// The items at these positions failed (sorted, not empty); the others succeeded.
    ItemsFailed(Vec<usize>),
    /// The whole batch failed: an error, or an answer Lambda rejects.
    Failed(String),
}

/// Reads an invocation of a batch whose items are `identifiers` (message ids or sequence
/// numbers). Without `ReportBatchItemFailures` any answer is success. With it, Lambda's rules:
/// no answer, `null`, `{}` and an empty or null `batchItemFailures` are success; an answer it
/// cannot read, or an `itemIdentifier` that is missing, empty or not in the batch, fails the
/// whole batch.
pub fn batch_result(
    invocation: &Invocation,
    identifiers: &[&str],
    report_batch_item_failures: bool,
) -> BatchResult {
    let body = match invocation {
        Invocation::Failed(error) => return BatchResult::Failed(error.clone()),
        Invocation::Returned(body) => body,
    };
    if !report_batch_item_failures || body.iter().all(u8::is_ascii_whitespace) {
        return BatchResult::Succeeded;
    }
    let answer: Value = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(e) => return BatchResult::Failed(format!("the answer is not JSON: {e}")),
    };
    let failures = match &answer {
        Value::Null => return BatchResult::Succeeded,
        Value::Object(fields) => match fields.get("batchItemFailures") {
            None | Some(Value::Null) => return BatchResult::Succeeded,
            Some(Value::Array(failures)) => failures,
            Some(other) => {
                return BatchResult::Failed(format!("batchItemFailures is not a list: {other}"));
            }
        },
        other => return BatchResult::Failed(format!("the answer is not an object: {other}")),
    };
    let mut failed = Vec::with_capacity(failures.len());
    for failure in failures {
        let position = failure
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .and_then(|id| identifiers.iter().position(|known| *known == id));
        match position {
            Some(position) => failed.push(position),
            None => {
                return BatchResult::Failed(format!(
                    "batchItemFailures entry {failure} names no item of the batch"
                ));
            }
        }
    }
    failed.sort_unstable();
    failed.dedup();
    if failed.is_empty() {
        BatchResult::Succeeded
    } else {
        BatchResult::ItemsFailed(failed)
    }
}

/// The positions of the messages of a `len`-message batch to delete after `result`.
pub fn to_delete(result: &BatchResult, len: usize) -> Vec<usize> {
    match result {
        BatchResult::Succeeded => (0..len).collect(),
        BatchResult::ItemsFailed(failed) => (0..len).filter(|i| !failed.contains(i)).collect(),
        BatchResult::Failed(_) => Vec::new(),
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The event Lambda sends for SQS `messages` of the queue `queue_arn`.
pub fn sqs_event(messages: &[Message], queue_arn: &str, region: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| sqs_record(m, queue_arn, region))
        .collect();
    json!({ "Records": records })
}

fn sqs_record(message: &Message, queue_arn: &str, region: &str) -> Value {
    let attributes: serde_json::Map<String, Value> = message
        .attributes
        .iter()
        .flatten()
        .map(|(name, value)| (name.as_str().to_owned(), Value::String(value.clone())))
        .collect();
    let message_attributes: serde_json::Map<String, Value> = message
        .message_attributes
        .iter()
        .flatten()
        .map(|(name, value)| {
            let mut attribute = json!({
                "stringListValues": value.string_list_values.clone().unwrap_or_default(),
                "binaryListValues": value
                    .binary_list_values
                    .iter()
                    .flatten()
                    .map(|b| base64(b.as_ref()))
                    .collect::<Vec<_>>(),
                "dataType": value.data_type,
            });
            if let Some(text) = &value.string_value {
                attribute["stringValue"] = json!(text);
            }
            if let Some(bytes) = &value.binary_value {
                attribute["binaryValue"] = json!(base64(bytes.as_ref()));
            }
            (name.clone(), attribute)
        })
        .collect();
    let mut record = json!({
        "messageId": message.message_id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body,
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    });
    if let Some(md5) = &message.md5_of_message_attributes {
        record["md5OfMessageAttributes"] = json!(md5);
    }
    record
}

/// One poller of a queue mapping: receive, invoke, delete what succeeded, forever.
async fn poll_queue(
    sqs: aws_sdk_sqs::Client,
    invoker: Invoker,
    mapping: Arc<QueueMapping>,
    region: String,
) {
    let max_messages = i32::try_from(mapping.batch_size.clamp(1, 10)).unwrap_or(10);
    let function = mapping.target.binary.as_str();
    let mut idle = QUEUE_IDLE_MIN;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&mapping.queue_url)
            .max_number_of_messages(max_messages)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(e) => {
                let error = aws_sdk_sqs::error::DisplayErrorContext(&e);
                warn!(%function, queue = %mapping.queue_url, %error, "sqs: receive failed");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        if messages.is_empty() {
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(QUEUE_IDLE_MAX);
            continue;
        }
        idle = QUEUE_IDLE_MIN;
        let ids: Vec<&str> = messages
            .iter()
            .map(|m| m.message_id().unwrap_or_default())
            .collect();
        let event = sqs_event(&messages, &mapping.queue_arn, &region);
        let invocation = invoker.invoke(&mapping.target, &event).await;
        let result = batch_result(&invocation, &ids, mapping.report_batch_item_failures);
        match &result {
            BatchResult::Succeeded => debug!(%function, messages = ids.len(), "sqs: invoked"),
            BatchResult::ItemsFailed(failed) => {
                debug!(%function, messages = ids.len(), failed = failed.len(), "sqs: invoked; some messages failed");
            }
            BatchResult::Failed(error) => {
                warn!(%function, messages = ids.len(), %error, "sqs: invocation failed; the batch comes back after its visibility timeout");
            }
        }
        delete_messages(
            &sqs,
            &mapping,
            &messages,
            &to_delete(&result, messages.len()),
        )
        .await;
    }
}

async fn delete_messages(
    sqs: &aws_sdk_sqs::Client,
    mapping: &QueueMapping,
    messages: &[Message],
    positions: &[usize],
) {
    if positions.is_empty() {
        return;
    }
    let entries: Result<Vec<_>, _> = positions
        .iter()
        .filter_map(|&i| messages.get(i).map(|m| (i, m)))
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
        })
        .collect();
    let function = mapping.target.binary.as_str();
    let deleted = match entries {
        Ok(entries) => sqs
            .delete_message_batch()
            .queue_url(&mapping.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
        Err(e) => Err(e.to_string()),
    };
    match deleted {
        // A message already moved to the dead-letter queue (its visibility timeout ran out
        // during a slow invocation) can no longer be deleted here.
        Ok(output) if !output.failed.is_empty() => {
            debug!(%function, failed = ?output.failed, "sqs: some successes could not be deleted");
        }
        Ok(_) => {}
        Err(error) => {
            warn!(%function, %error, "sqs: deleting the successes failed; they come back")
        }
    }
}

/// A stream record as Lambda's event carries it, with the bookkeeping of its retries.
#[derive(Debug, Clone)]
pub struct ShardRecord {
    pub sequence_number: String,
    /// ApproximateCreationDateTime, in seconds since the epoch.
    pub created_s: i64,
    /// The record of the event.
    pub event: Value,
    /// Failed invocations of it that were not splits.
    retries: u32,
    invocations: u32,
}

impl ShardRecord {
    pub fn new(sequence_number: String, created_s: i64, event: Value) -> Self {
        Self {
            sequence_number,
            created_s,
            event,
            retries: 0,
            invocations: 0,
        }
    }
}

/// How a stream batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The record at this position failed first: those before it are done.
    FailedFrom(usize),
    /// The whole batch failed.
    Failed,
}

impl Outcome {
    pub fn of(result: &BatchResult) -> Self {
        match result {
            BatchResult::Succeeded => Outcome::Succeeded,
            BatchResult::ItemsFailed(failed) => Outcome::FailedFrom(failed[0]),
            BatchResult::Failed(_) => Outcome::Failed,
        }
    }
}

/// Records given up on, in order (never empty).
#[derive(Debug, Clone)]
pub struct GivenUp {
    pub records: Vec<ShardRecord>,
    /// Invocations of the most invoked of them.
    pub invoke_count: u32,
}

impl GivenUp {
    fn of(records: Vec<ShardRecord>) -> Option<Self> {
        let invoke_count = records.iter().map(|r| r.invocations).max()?;
        Some(Self {
            records,
            invoke_count,
        })
    }
}

/// The records of one shard read but not yet done, cut into batches as Lambda cuts them: the
/// front batch is retried until it succeeds, is split (bisect), or is given up. `segments` are
/// the lengths of the batches cut so far, covering the front of `pending`.
#[derive(Debug, Default)]
pub struct ShardBatches {
    pending: VecDeque<ShardRecord>,
    segments: VecDeque<usize>,
}

impl ShardBatches {
    pub fn push(&mut self, records: impl IntoIterator<Item = ShardRecord>) {
        self.pending.extend(records);
    }

    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// The length of the front batch, cut from up to `batch_size` records when there is none.
    fn front(&mut self, batch_size: usize) -> usize {
        if self.segments.is_empty() && !self.pending.is_empty() {
            self.segments
                .push_back(batch_size.max(1).min(self.pending.len()));
        }
        self.segments.front().copied().unwrap_or(0)
    }

    fn shrink_front(&mut self, done: usize) {
        if let Some(front) = self.segments.front_mut() {
            *front -= done;
            if *front == 0 {
                self.segments.pop_front();
            }
        }
    }

    /// The batch to invoke next.
    pub fn next_batch(&mut self, batch_size: usize) -> &[ShardRecord] {
        let len = self.front(batch_size);
        &self.pending.make_contiguous()[..len]
    }

    /// Takes the records at the front of the next batch older than `max_age_s` at `now_s`.
    pub fn expire(&mut self, now_s: i64, max_age_s: u64, batch_size: usize) -> Option<GivenUp> {
        let len = self.front(batch_size);
        let max_age_s = i64::try_from(max_age_s).unwrap_or(i64::MAX);
        let expired = self
            .pending
            .iter()
            .take(len)
            .take_while(|r| now_s.saturating_sub(r.created_s) > max_age_s)
            .count();
        if expired == 0 {
            return None;
        }
        let records = self.pending.drain(..expired).collect();
        self.shrink_front(expired);
        GivenUp::of(records)
    }

    /// Settles the batch last taken by [`Self::next_batch`]; returns what was given up on.
    pub fn settle(
        &mut self,
        outcome: Outcome,
        bisect: bool,
        max_retry_attempts: Option<u32>,
    ) -> Option<GivenUp> {
        let len = self.segments.front().copied()?;
        for record in self.pending.iter_mut().take(len) {
            record.invocations += 1;
        }
        match outcome {
            Outcome::Succeeded => {
                self.pending.drain(..len);
                self.segments.pop_front();
                return None;
            }
            Outcome::FailedFrom(first) if first > 0 && first < len => {
                self.pending.drain(..first);
                self.shrink_front(first);
            }
            Outcome::Failed if bisect && len > 1 => {
                let half = len.div_ceil(2);
                self.segments.pop_front();
                self.segments.push_front(len - half);
                self.segments.push_front(half);
                return None;
            }
            Outcome::FailedFrom(_) | Outcome::Failed => {}
        }
        let len = self.segments.front().copied()?;
        for record in self.pending.iter_mut().take(len) {
            record.retries += 1;
        }
        let exhausted = max_retry_attempts
            .is_some_and(|max| self.pending.iter().take(len).any(|r| r.retries > max));
        if !exhausted {
            return None;
        }
        let records = self.pending.drain(..len).collect();
        self.segments.pop_front();
        GivenUp::of(records)
    }

    /// Retries so far of the front batch.
    fn front_retries(&self) -> u32 {
        self.pending.front().map_or(0, |r| r.retries)
    }
}

/// DynamoDB's JSON for an attribute value, as stream events carry it.
pub fn attribute_json(value: &AttributeValue) -> anyhow::Result<Value> {
    Ok(match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": base64(b.as_ref()) }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| base64(b.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::M(m) => json!({ "M": item_json(m)? }),
        AttributeValue::L(l) => {
            json!({ "L": l.iter().map(attribute_json).collect::<anyhow::Result<Vec<_>>>()? })
        }
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        other => anyhow::bail!("attribute value {other:?} is newer than this SDK"),
    })
}

fn item_json(item: &HashMap<String, AttributeValue>) -> anyhow::Result<Value> {
    let mut fields = serde_json::Map::new();
    for (name, value) in item {
        fields.insert(name.clone(), attribute_json(value)?);
    }
    Ok(Value::Object(fields))
}

/// A stream record of `stream_arn` as Lambda's event carries it.
pub fn shard_record(
    record: &Record,
    stream_arn: &str,
    region: &str,
) -> anyhow::Result<ShardRecord> {
    let change = record
        .dynamodb
        .as_ref()
        .context("a record without dynamodb")?;
    let sequence_number = change
        .sequence_number
        .clone()
        .context("a record without SequenceNumber")?;
    let created_s = change
        .approximate_creation_date_time
        .map_or_else(now_s, |t| t.secs());
    let mut dynamodb = serde_json::Map::new();
    dynamodb.insert("ApproximateCreationDateTime".into(), json!(created_s));
    for (name, image) in [
        ("Keys", &change.keys),
        ("NewImage", &change.new_image),
        ("OldImage", &change.old_image),
    ] {
        if let Some(image) = image {
            dynamodb.insert(name.into(), item_json(image)?);
        }
    }
    dynamodb.insert("SequenceNumber".into(), json!(sequence_number));
    dynamodb.insert("SizeBytes".into(), json!(change.size_bytes.unwrap_or(0)));
    if let Some(view) = &change.stream_view_type {
        dynamodb.insert("StreamViewType".into(), json!(view.as_str()));
    }
    let event = json!({
        "eventID": record.event_id,
        "eventName": record.event_name.as_ref().map(|n| n.as_str()),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    });
    Ok(ShardRecord::new(sequence_number, created_s, event))
}

/// The event Lambda sends for a batch of stream records.
pub fn stream_event(records: &[ShardRecord]) -> Value {
    json!({ "Records": records.iter().map(|r| r.event.clone()).collect::<Vec<_>>() })
}

/// An SDK error with its causes, as one line.
pub(crate) fn sdk_error<E: std::error::Error>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{}", aws_sdk_dynamodbstreams::error::DisplayErrorContext(e))
}

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339_s(epoch_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch_s)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn rfc3339_now_ms() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

/// Where a batch given up on came from.
pub struct BatchSource<'a> {
    pub function_arn: &'a str,
    pub stream_arn: &'a str,
    pub shard_id: &'a str,
}

/// The invocation record Lambda sends an on-failure destination for a stream batch given up on
/// under `condition` (`RetryAttemptsExhausted`, `RecordAgeExceeded`), after `last` (none when
/// the records expired before any invocation).
pub fn failure_record(
    given_up: &GivenUp,
    condition: &str,
    last: Option<&Invocation>,
    source: &BatchSource<'_>,
) -> Value {
    let first = given_up.records.first();
    let final_record = given_up.records.last();
    let mut record = json!({
        "requestContext": {
            "requestId": request_id(),
            "functionArn": source.function_arn,
            "condition": condition,
            "approximateInvokeCount": given_up.invoke_count,
        },
        "version": "1.0",
        "timestamp": rfc3339_now_ms(),
        "DDBStreamBatchInfo": {
            "shardId": source.shard_id,
            "startSequenceNumber": first.map(|r| r.sequence_number.as_str()),
            "endSequenceNumber": final_record.map(|r| r.sequence_number.as_str()),
            "approximateArrivalOfFirstRecord": first.map(|r| rfc3339_s(r.created_s)),
            "approximateArrivalOfLastRecord": final_record.map(|r| rfc3339_s(r.created_s)),
            "batchSize": given_up.records.len(),
            "streamArn": source.stream_arn,
        },
    });
    match last {
        Some(Invocation::Failed(_)) => {
            record["responseContext"] = json!({
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            });
        }
        Some(Invocation::Returned(_)) => {
            record["responseContext"] = json!({ "statusCode": 200, "executedVersion": "$LATEST" });
        }
        None => {}
    }
    record
}

/// One stream mapping and what reading it takes.
struct StreamReader {
    streams: aws_sdk_dynamodbstreams::Client,
    sqs: aws_sdk_sqs::Client,
    invoker: Invoker,
    region: String,
    mapping: StreamMapping,
}

/// Reads a stream's shard list every [`SHARD_REFRESH`] and reads each shard, a child only once
/// its parent is done. Shards there at the start begin at the mapping's starting position, later
/// ones at their start.
async fn read_stream(reader: Arc<StreamReader>) {
    let mut workers: JoinSet<String> = JoinSet::new();
    let mut started = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut first_list = true;
    loop {
        while let Some(done) = workers.try_join_next() {
            if let Ok(shard_id) = done {
                finished.insert(shard_id);
            }
        }
        match reader.shards().await {
            Ok(shards) => {
                for shard in &shards {
                    let Some(id) = shard.shard_id() else {
                        continue;
                    };
                    let parent_busy = shard.parent_shard_id().is_some_and(|parent| {
                        shards.iter().any(|s| s.shard_id() == Some(parent))
                            && !finished.contains(parent)
                    });
                    if started.contains(id) || parent_busy {
                        continue;
                    }
                    let start = if first_list {
                        reader.mapping.starting_position
                    } else {
                        StartingPosition::TrimHorizon
                    };
                    started.insert(id.to_owned());
                    workers.spawn(reader.clone().read_shard(id.to_owned(), start));
                }
                first_list = false;
            }
            Err(e) => {
                warn!(function = %reader.mapping.target.binary, stream = %reader.mapping.stream_arn, error = %e, "stream: listing shards failed");
            }
        }
        tokio::time::sleep(SHARD_REFRESH).await;
    }
}

/// What one read of a shard returned.
struct Read {
    records: Vec<ShardRecord>,
    /// The shard is closed and read to its end.
    closed: bool,
}

impl StreamReader {
    async fn shards(&self) -> anyhow::Result<Vec<Shard>> {
        let mut shards = Vec::new();
        let mut after: Option<String> = None;
        // Bounded: a stream has a handful of shards, listed 100 at a time.
        for _ in 0..1000 {
            let description = self
                .streams
                .describe_stream()
                .stream_arn(&self.mapping.stream_arn)
                .set_exclusive_start_shard_id(after.take())
                .send()
                .await
                .map_err(sdk_error)?
                .stream_description
                .context("DescribeStream without StreamDescription")?;
            shards.extend(description.shards.unwrap_or_default());
            after = description.last_evaluated_shard_id;
            if after.is_none() {
                break;
            }
        }
        Ok(shards)
    }

    /// Reads up to `limit` records of `shard_id` after `after` (from its start when `None`),
    /// through a fresh iterator (see the module's notes on moto).
    async fn read(
        &self,
        shard_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Read> {
        let request = self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.mapping.stream_arn)
            .shard_id(shard_id);
        let request = match after {
            Some(sequence_number) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence_number),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let iterator = request
            .send()
            .await
            .map_err(sdk_error)?
            .shard_iterator
            .context("GetShardIterator without ShardIterator")?;
        let limit = i32::try_from(limit.clamp(1, RECORDS_PER_READ)).unwrap_or(1000);
        let output = self
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(sdk_error)?;
        let records = output
            .records
            .unwrap_or_default()
            .iter()
            .map(|r| shard_record(r, &self.mapping.stream_arn, &self.region))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Read {
            records,
            closed: output.next_shard_iterator.is_none(),
        })
    }

    /// The sequence number of the last record of the shard now (`LATEST`): reads past its backlog.
    async fn latest(&self, shard_id: &str) -> Option<String> {
        let mut after: Option<String> = None;
        for _ in 0..SKIP_READS_MAX {
            match self
                .read(shard_id, after.as_deref(), RECORDS_PER_READ)
                .await
            {
                Ok(read) => match read.records.last() {
                    Some(last) => after = Some(last.sequence_number.clone()),
                    None => return after,
                },
                Err(e) => {
                    warn!(function = %self.mapping.target.binary, shard = %shard_id, error = %e, "stream: reading failed");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        }
        after
    }

    /// Reads one shard in order, one batch in flight, until it is closed and done; returns its id.
    async fn read_shard(self: Arc<Self>, shard_id: String, start: StartingPosition) -> String {
        let mut after = match start {
            StartingPosition::TrimHorizon => None,
            StartingPosition::Latest => self.latest(&shard_id).await,
        };
        let batch_size = usize::try_from(self.mapping.batch_size)
            .unwrap_or(RECORDS_PER_READ)
            .max(1);
        let mut batches = ShardBatches::default();
        let mut closed = false;
        loop {
            if !closed && batches.buffered() < batch_size {
                let wanted = batch_size - batches.buffered();
                match self.read(&shard_id, after.as_deref(), wanted).await {
                    Ok(read) => {
                        if let Some(last) = read.records.last() {
                            after = Some(last.sequence_number.clone());
                        }
                        closed = read.closed;
                        batches.push(read.records);
                    }
                    Err(e) => {
                        warn!(function = %self.mapping.target.binary, shard = %shard_id, error = %e, "stream: reading failed");
                        tokio::time::sleep(ERROR_PAUSE).await;
                        continue;
                    }
                }
            }
            if batches.buffered() == 0 {
                if closed {
                    return shard_id;
                }
                tokio::time::sleep(STREAM_IDLE).await;
                continue;
            }
            self.invoke_front(&shard_id, &mut batches, batch_size).await;
        }
    }

    /// Expires, or invokes and settles, the front batch of `batches`.
    async fn invoke_front(&self, shard_id: &str, batches: &mut ShardBatches, batch_size: usize) {
        let mapping = &self.mapping;
        if let Some(max_age) = mapping.max_record_age
            && let Some(expired) = batches.expire(now_s(), max_age.as_secs(), batch_size)
        {
            self.give_up(shard_id, &expired, "RecordAgeExceeded", None)
                .await;
            return;
        }
        let batch = batches.next_batch(batch_size);
        let ids: Vec<&str> = batch.iter().map(|r| r.sequence_number.as_str()).collect();
        let event = stream_event(batch);
        let invocation = self.invoker.invoke(&mapping.target, &event).await;
        let result = batch_result(&invocation, &ids, mapping.report_batch_item_failures);
        let function = mapping.target.binary.as_str();
        let records = ids.len();
        match &result {
            BatchResult::Succeeded => debug!(%function, %shard_id, records, "stream: invoked"),
            BatchResult::ItemsFailed(failed) => {
                debug!(%function, %shard_id, records, from = ids[failed[0]], "stream: invoked; retrying from the first failed record");
            }
            BatchResult::Failed(error) => {
                warn!(%function, %shard_id, records, %error, "stream: invocation failed");
            }
        }
        let outcome = Outcome::of(&result);
        match batches.settle(outcome, mapping.bisect_on_error, mapping.max_retry_attempts) {
            Some(given_up) => {
                self.give_up(
                    shard_id,
                    &given_up,
                    "RetryAttemptsExhausted",
                    Some(&invocation),
                )
                .await;
            }
            None if outcome != Outcome::Succeeded => {
                let doublings = batches.front_retries().min(4);
                let pause = RETRY_PAUSE_MIN * 2u32.pow(doublings);
                tokio::time::sleep(pause.min(RETRY_PAUSE_MAX)).await;
            }
            None => {}
        }
    }

    /// Sends the invocation record of a batch given up on to the on-failure queue, if any.
    async fn give_up(
        &self,
        shard_id: &str,
        given_up: &GivenUp,
        condition: &str,
        last: Option<&Invocation>,
    ) {
        let mapping = &self.mapping;
        let function = mapping.target.binary.as_str();
        let account = mapping
            .stream_arn
            .split(':')
            .nth(4)
            .unwrap_or("000000000000");
        let function_arn = format!(
            "arn:aws:lambda:{}:{account}:function:{function}",
            self.region
        );
        let source = BatchSource {
            function_arn: &function_arn,
            stream_arn: &mapping.stream_arn,
            shard_id,
        };
        let record = failure_record(given_up, condition, last, &source);
        let batch_info = &record["DDBStreamBatchInfo"];
        warn!(%function, %shard_id, %condition, batch = %batch_info, "stream: gave up on a batch");
        let Some(queue_url) = &mapping.on_failure_queue_url else {
            return;
        };
        for attempt in 1..=SEND_TRIES {
            let sent = self
                .sqs
                .send_message()
                .queue_url(queue_url)
                .message_body(record.to_string())
                .send()
                .await;
            match sent {
                Ok(_) => return,
                Err(e) if attempt == SEND_TRIES => {
                    let error = aws_sdk_sqs::error::DisplayErrorContext(&e);
                    warn!(%function, %queue_url, %error, "stream: the on-failure record is lost");
                }
                Err(_) => tokio::time::sleep(ERROR_PAUSE).await,
            }
        }
    }
}

#[cfg(test)]
mod tests;
