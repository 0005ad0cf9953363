//! The event source mappings against a real moto, with a small HTTP server standing in for the
//! emulator's Invoke API: what reaches the function, what is deleted, retried, redriven or given
//! up on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use xtask::event_sources::{self, EventSources, Mapping, QueueMapping, StreamMapping, Target};
use xtask::moto::Moto;
use xtask::template::{Physical, Resolver, StartingPosition, Template};

/// How the stand-in answers an event, given the events it was sent before.
type Answer = Arc<dyn Fn(&Value, &[Value]) -> (StatusCode, Value) + Send + Sync>;

/// The stand-in for the emulator: records every event, answers with `answer`.
struct FakeFunction {
    url: String,
    events: Arc<Mutex<Vec<Value>>>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct FakeState {
    events: Arc<Mutex<Vec<Value>>>,
    answer: Answer,
}

async fn invoked(
    State(state): State<FakeState>,
    Json(event): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut events = state.events.lock().expect("events");
    let (status, body) = (state.answer)(&event, &events);
    events.push(event);
    (status, Json(body))
}

impl FakeFunction {
    async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState {
            events: events.clone(),
            answer,
        };
        let app = axum::Router::new()
            .route(
                "/2015-03-31/functions/{name}/invocations",
                axum::routing::post(invoked),
            )
            .with_state(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            url,
            events,
            _server: server,
        }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }
}

/// The emulator's answer to a function error.
fn function_error() -> (StatusCode, Value) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"errorType": "Boom", "errorMessage": "always"}),
    )
}

/// moto with the template `resources` created in it.
struct Aws {
    _moto: Moto,
    sdk: aws_config::SdkConfig,
    physical: Physical,
    _log_dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn aws(resources: &str) -> Aws {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "xtask=warn".into()),
        )
        .try_init();
    let venv = tokio::task::spawn_blocking(xtask::venv::ensure)
        .await
        .expect("join")
        .expect("venv");
    let log_dir = std::env::temp_dir().join(format!("xtask-event-sources-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let moto = xtask::moto::start(&venv, &log_dir).await.expect("moto");
    let sdk = xtask::moto::sdk_config(&moto.endpoint).await;
    let physical = match resources.trim() {
        "" => Physical::default(),
        _ => create(&sdk, resources).await,
    };
    Aws {
        _moto: moto,
        sdk,
        physical,
        _log_dir: TempDir(log_dir),
    }
}

/// Creates the tables and queues of `resources`, for stack `t`, time scale 1.
async fn create(sdk: &aws_config::SdkConfig, resources: &str) -> Physical {
    let template = Template::from_yaml(&format!("Resources:\n{resources}")).expect("template");
    let resolver = Resolver {
        stack_name: "t".into(),
        region: xtask::REGION.into(),
        parameters: BTreeMap::new(),
    };
    let mut physical = template
        .create_tables(&aws_sdk_dynamodb::Client::new(sdk), &resolver)
        .await
        .expect("tables");
    template
        .create_queues(&aws_sdk_sqs::Client::new(sdk), &resolver, &mut physical)
        .await
        .expect("queues");
    physical
}

impl Aws {
    fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    fn queue_url(&self, id: &str) -> String {
        self.physical.reference(id).expect(id).to_owned()
    }

    fn start(&self, function: &FakeFunction, mapping: Mapping) -> EventSources {
        event_sources::start(&self.sdk, &function.url, xtask::REGION, vec![mapping], 2)
    }

    async fn send(&self, queue: &str, body: &str) {
        self.sqs()
            .send_message()
            .queue_url(self.queue_url(queue))
            .message_body(body)
            .send()
            .await
            .expect("send");
    }

    /// Waits for one message on `queue` (nothing consumes it but this).
    async fn receive_one(&self, queue: &str, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let received = self
                .sqs()
                .receive_message()
                .queue_url(self.queue_url(queue))
                .send()
                .await
                .expect("receive");
            if let Some(message) = received.messages.unwrap_or_default().pop() {
                return message.body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    async fn messages_left(&self, queue: &str) -> usize {
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        let attributes = self
            .sqs()
            .get_queue_attributes()
            .queue_url(self.queue_url(queue))
            .attribute_names(Name::ApproximateNumberOfMessages)
            .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("attributes")
            .attributes
            .unwrap_or_default();
        attributes
            .values()
            .map(|n| n.parse::<usize>().expect("count"))
            .sum()
    }
}

/// Waits until `done` holds for the stand-in's events.
async fn wait_for(function: &FakeFunction, within: Duration, done: impl Fn(&[Value]) -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if done(&function.events()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "not within {within:?}; events: {}",
        serde_json::to_string_pretty(&function.events()).unwrap_or_default()
    );
}

fn target() -> Target {
    Target {
        binary: "fake".into(),
        timeout: Duration::from_secs(5),
    }
}

const QUEUES: &str = "
  Work:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
      RedrivePolicy:
        deadLetterTargetArn: {Fn::GetAtt: [Dead, Arn]}
        maxReceiveCount: 2
  Dead:
    Type: AWS::SQS::Queue
";

fn queue_mapping(aws: &Aws) -> Mapping {
    Mapping::Queue(QueueMapping {
        target: target(),
        queue_url: aws.queue_url("Work"),
        queue_arn: aws
            .physical
            .attribute("Work", "Arn")
            .expect("arn")
            .to_owned(),
        batch_size: 10,
        report_batch_item_failures: true,
    })
}

/// (body, ApproximateReceiveCount) of every message delivered, in order.
fn deliveries(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .flat_map(|event| {
            let event: SqsEvent = serde_json::from_value(event.clone()).expect("an SqsEvent");
            event.records
        })
        .map(|m| {
            (
                m.body.unwrap_or_default(),
                m.attributes["ApproximateReceiveCount"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn sqs_partial_batch_failure_deletes_only_the_successes() {
    let aws = aws(QUEUES).await;
    for body in ["m1", "m2", "m3"] {
        aws.send("Work", body).await;
    }
    // m2 fails on its first delivery only.
    let answer: Answer = Arc::new(|event, _| {
        let event: SqsEvent = serde_json::from_value(event.clone()).expect("an SqsEvent");
        let failures: Vec<Value> = event
            .records
            .iter()
            .filter(|m| {
                m.body.as_deref() == Some("m2") && m.attributes["ApproximateReceiveCount"] == "1"
            })
            .map(|m| json!({ "itemIdentifier": m.message_id }))
            .collect();
        (StatusCode::OK, json!({ "batchItemFailures": failures }))
    });
    let function = FakeFunction::start(answer).await;
    let _sources = aws.start(&function, queue_mapping(&aws));

    wait_for(&function, Duration::from_secs(20), |events| {
        deliveries(events).iter().filter(|(b, _)| b == "m2").count() == 2
    })
    .await;
    // Past another visibility timeout: nothing else comes back, nothing is left.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut delivered = deliveries(&function.events());
    delivered.sort();
    let expected = [("m1", "1"), ("m2", "1"), ("m2", "2"), ("m3", "1")]
        .map(|(b, n)| (b.to_owned(), n.to_owned()));
    assert_eq!(delivered, expected);
    assert_eq!(aws.messages_left("Work").await, 0);
    assert_eq!(aws.messages_left("Dead").await, 0);
}

#[tokio::test]
async fn moto_redrives_a_message_that_always_fails_after_max_receive_count() {
    let aws = aws(QUEUES).await;
    aws.send("Work", "poison").await;
    let function = FakeFunction::start(Arc::new(|_, _| function_error())).await;
    let _sources = aws.start(&function, queue_mapping(&aws));

    let dead = aws.receive_one("Dead", Duration::from_secs(20)).await;
    assert_eq!(dead.as_deref(), Some("poison"));
    // maxReceiveCount 2: delivered twice, then moved on the third receive.
    let expected = [("poison", "1"), ("poison", "2")].map(|(b, n)| (b.to_owned(), n.to_owned()));
    assert_eq!(deliveries(&function.events()), expected);
    assert_eq!(aws.messages_left("Work").await, 0);
}

const TABLE: &str = "
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      StreamSpecification:
        StreamViewType: NEW_AND_OLD_IMAGES
  Failures:
    Type: AWS::SQS::Queue
";

fn stream_mapping(aws: &Aws) -> StreamMapping {
    StreamMapping {
        target: target(),
        stream_arn: aws
            .physical
            .attribute("Table", "StreamArn")
            .expect("stream")
            .to_owned(),
        starting_position: StartingPosition::TrimHorizon,
        batch_size: 10,
        bisect_on_error: false,
        max_retry_attempts: None,
        max_record_age: None,
        report_batch_item_failures: true,
        on_failure_queue_url: None,
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u32) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

async fn put(aws: &Aws, pk: &str, v: u32) {
    aws.dynamodb()
        .put_item()
        .table_name("t-Table")
        .item("pk", s(pk))
        .item("v", n(v))
        .send()
        .await
        .expect("put");
}

/// `pk` to `v`, and a new item `new_pk`, in one transaction guarded by `pk`'s `v` being `was`.
async fn transact(aws: &Aws, pk: &str, was: u32, v: u32, new_pk: &str) -> bool {
    let update = Update::builder()
        .table_name("t-Table")
        .key("pk", s(pk))
        .update_expression("SET v = :v")
        .condition_expression("v = :was")
        .expression_attribute_values(":v", n(v))
        .expression_attribute_values(":was", n(was))
        .build()
        .expect("update");
    let create = Put::builder()
        .table_name("t-Table")
        .item("pk", s(new_pk))
        .item("v", n(1))
        .build()
        .expect("put");
    aws.dynamodb()
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().update(update).build())
        .transact_items(TransactWriteItem::builder().put(create).build())
        .send()
        .await
        .is_ok()
}

/// (eventName, pk, old v, new v) of a stream record, from the runtime's own event type.
type Change = (String, String, Option<String>, Option<String>);

fn changes(event: &Value) -> Vec<Change> {
    let event: DynamoDbEvent = serde_json::from_value(event.clone()).expect("a DynamoDB event");
    event
        .records
        .iter()
        .map(|r| {
            let change = serde_json::to_value(&r.change).expect("json");
            let v = |image: &str| change[image]["v"]["N"].as_str().map(str::to_owned);
            let pk = change["Keys"]["pk"]["S"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (r.event_name.clone(), pk, v("OldImage"), v("NewImage"))
        })
        .collect()
}

fn change(name: &str, pk: &str, old: Option<u32>, new: Option<u32>) -> Change {
    (
        name.to_owned(),
        pk.to_owned(),
        old.map(|v| v.to_string()),
        new.map(|v| v.to_string()),
    )
}

fn sequence_number(event: &Value, position: usize) -> String {
    event["Records"][position]["dynamodb"]["SequenceNumber"]
        .as_str()
        .expect("sequence number")
        .to_owned()
}

#[tokio::test]
async fn stream_records_of_writes_and_transactions_reach_the_function_and_retry_from_a_failure() {
    let aws = aws(TABLE).await;
    put(&aws, "a", 1).await;
    assert!(
        transact(&aws, "a", 1, 2, "b").await,
        "the transaction applies"
    );
    // The first delivery fails at the MODIFY of a: it and what follows come again.
    let answer: Answer = Arc::new(|event, before| match before {
        [] => (
            StatusCode::OK,
            json!({"batchItemFailures": [{"itemIdentifier": sequence_number(event, 1)}]}),
        ),
        _ => (StatusCode::OK, json!({"batchItemFailures": []})),
    });
    let function = FakeFunction::start(answer).await;
    let _sources = aws.start(&function, Mapping::Stream(stream_mapping(&aws)));

    wait_for(&function, Duration::from_secs(20), |events| {
        events.len() >= 2
    })
    .await;
    let events = function.events();
    assert_eq!(
        changes(&events[0]),
        [
            change("INSERT", "a", None, Some(1)),
            change("MODIFY", "a", Some(1), Some(2)),
            change("INSERT", "b", None, Some(1)),
        ]
    );
    assert_eq!(changes(&events[1]), changes(&events[0])[1..]);
    assert_eq!(
        sequence_number(&events[1], 0),
        sequence_number(&events[0], 1)
    );

    // A cancelled transaction leaves no record, and writes after it still arrive (moto restores
    // a copy of the table, stream included, when it cancels one).
    assert!(!transact(&aws, "a", 99, 3, "c").await, "the guard fails");
    put(&aws, "d", 1).await;
    wait_for(&function, Duration::from_secs(20), |events| {
        events.len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let later: Vec<Change> = function.events()[2..].iter().flat_map(changes).collect();
    assert_eq!(later, [change("INSERT", "d", None, Some(1))]);
}

#[tokio::test]
async fn exhausted_retries_send_the_invocation_record_to_the_on_failure_queue() {
    let aws = aws(TABLE).await;
    for pk in ["x", "poison", "y"] {
        put(&aws, pk, 1).await;
    }
    let answer: Answer = Arc::new(|event, _| {
        if changes(event).iter().any(|(_, pk, _, _)| pk == "poison") {
            function_error()
        } else {
            (StatusCode::OK, Value::Null)
        }
    });
    let function = FakeFunction::start(answer).await;
    let mapping = StreamMapping {
        bisect_on_error: true,
        max_retry_attempts: Some(1),
        report_batch_item_failures: false,
        on_failure_queue_url: Some(aws.queue_url("Failures")),
        ..stream_mapping(&aws)
    };
    let stream_arn = mapping.stream_arn.clone();
    let _sources = aws.start(&function, Mapping::Stream(mapping));

    let record = aws
        .receive_one("Failures", Duration::from_secs(30))
        .await
        .expect("an invocation record");
    let record: Value = serde_json::from_str(&record).expect("json");
    let events = function.events();
    let poison = events
        .iter()
        .find(|e| {
            e["Records"].as_array().is_some_and(|r| r.len() == 1) && changes(e)[0].1 == "poison"
        })
        .expect("poison alone");
    let poison_sequence = sequence_number(poison, 0);
    assert_eq!(
        record["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    let info = &record["DDBStreamBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["startSequenceNumber"], poison_sequence.as_str());
    assert_eq!(info["endSequenceNumber"], poison_sequence.as_str());
    assert_eq!(info["streamArn"], stream_arn.as_str());
    // Invoked 4 times: in the batch of 3, in its first half, alone, and alone once more.
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 4);

    // y comes after the poison, and x and y each succeeded once.
    wait_for(&function, Duration::from_secs(20), |events| {
        events.iter().any(|e| {
            changes(e).iter().any(|(_, pk, _, _)| pk == "y")
                && !changes(e).iter().any(|(_, pk, _, _)| pk == "poison")
        })
    })
    .await;
    let succeeded: Vec<String> = function
        .events()
        .iter()
        .map(changes)
        .filter(|c| !c.iter().any(|(_, pk, _, _)| pk == "poison"))
        .flatten()
        .map(|(_, pk, _, _)| pk)
        .collect();
    assert_eq!(succeeded, ["x", "y"]);
}

#[tokio::test]
async fn the_real_template_creates_and_wires_its_queues_tables_and_event_sources() {
    let aws = aws("").await;
    let template = Template::load_default().expect("template");
    let mut resolver = Resolver {
        stack_name: "real".into(),
        region: xtask::REGION.into(),
        parameters: template.parameter_defaults().clone(),
    };
    resolver
        .parameters
        .insert("CallbackBaseUrl".into(), "http://127.0.0.1:9".into());
    let mut physical = template
        .create_tables(&aws.dynamodb(), &resolver)
        .await
        .expect("tables");
    template
        .create_queues(&aws.sqs(), &resolver, &mut physical)
        .await
        .expect("queues");

    use aws_sdk_sqs::types::QueueAttributeName as Name;
    let url = physical.reference("OrderUpdaterQueue").expect("url");
    let attributes = aws
        .sqs()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(Name::All)
        .send()
        .await
        .expect("attributes")
        .attributes
        .unwrap_or_default();
    assert_eq!(attributes[&Name::VisibilityTimeout], "60");
    let policy: Value = serde_json::from_str(&attributes[&Name::RedrivePolicy]).expect("json");
    assert_eq!(
        policy["deadLetterTargetArn"],
        physical
            .attribute("OrderUpdaterDeadLetters", "Arn")
            .expect("dlq arn")
    );
    assert_eq!(policy["maxReceiveCount"], 5);

    let functions = template.functions().expect("functions");
    for function in &functions {
        template
            .environment(function, &resolver, &physical)
            .expect(&function.logical_id);
    }
    let mappings = event_sources::mappings(&functions, &physical).expect("mappings");
    let streams: Vec<&StreamMapping> = mappings
        .iter()
        .filter_map(|m| match m {
            Mapping::Stream(s) => Some(s),
            Mapping::Queue(_) => None,
        })
        .collect();
    assert_eq!(mappings.len(), 6, "{mappings:#?}");
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].target.binary, "outbox-relay");
    assert_eq!(streams[0].max_record_age, Some(Duration::from_secs(3600)));
    assert_eq!(
        streams[0].on_failure_queue_url.as_deref(),
        physical.reference("RelayFailures")
    );
    let described = aws_sdk_dynamodbstreams::Client::new(&aws.sdk)
        .describe_stream()
        .stream_arn(&streams[0].stream_arn)
        .send()
        .await
        .expect("the payments table's stream");
    let description = described.stream_description.expect("description");
    assert_eq!(description.table_name.as_deref(), Some("real-payments"));
}
