use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};
use aws_sdk_sqs::types::MessageAttributeValue;

use super::*;

fn returned(body: &str) -> Invocation {
    Invocation::Returned(body.as_bytes().to_vec())
}

#[test]
fn batch_answers_are_read_as_lambda_reads_them() {
    let ids = ["a", "b", "c"];
    let check = |invocation: Invocation, report: bool, expected: &str| {
        let result = batch_result(&invocation, &ids, report);
        let got = match &result {
            BatchResult::Succeeded => "succeeded".to_owned(),
            BatchResult::ItemsFailed(failed) => format!("{failed:?}"),
            BatchResult::Failed(_) => "failed".to_owned(),
        };
        assert_eq!(got, expected, "{invocation:?} report={report}: {result:?}");
    };
    check(Invocation::Failed("boom".into()), true, "failed");
    check(Invocation::Failed("boom".into()), false, "failed");
    // Without ReportBatchItemFailures the answer is not read.
    check(returned("not json"), false, "succeeded");
    check(
        returned(r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#),
        false,
        "succeeded",
    );
    for success in [
        "",
        " \n",
        "null",
        "{}",
        r#"{"batchItemFailures":[]}"#,
        r#"{"batchItemFailures":null}"#,
    ] {
        check(returned(success), true, "succeeded");
    }
    check(
        returned(r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#),
        true,
        "[1]",
    );
    check(
        returned(
            r#"{"batchItemFailures":[{"itemIdentifier":"c"},{"itemIdentifier":"a"},{"itemIdentifier":"c"}]}"#,
        ),
        true,
        "[0, 2]",
    );
    for malformed in [
        "not json",
        r#""ok""#,
        "[]",
        r#"{"batchItemFailures":"b"}"#,
        r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
        r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
        r#"{"batchItemFailures":[{"itemId":"b"}]}"#,
        r#"{"batchItemFailures":[{"itemIdentifier":"z"}]}"#,
        r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"z"}]}"#,
    ] {
        check(returned(malformed), true, "failed");
    }
}

#[test]
fn sqs_deletes_everything_but_the_failures() {
    assert_eq!(to_delete(&BatchResult::Succeeded, 3), [0, 1, 2]);
    assert_eq!(to_delete(&BatchResult::ItemsFailed(vec![1]), 3), [0, 2]);
    assert_eq!(
        to_delete(&BatchResult::ItemsFailed(vec![0, 1, 2]), 3),
        [0usize; 0]
    );
    assert_eq!(to_delete(&BatchResult::Failed("x".into()), 3), [0usize; 0]);
}

fn record(n: usize) -> ShardRecord {
    ShardRecord::new(
        format!("{}", 100 + n),
        1_000 + i64::try_from(n).unwrap_or(0),
        json!({ "n": n }),
    )
}

fn sequence_numbers(records: &[ShardRecord]) -> Vec<String> {
    records.iter().map(|r| r.sequence_number.clone()).collect()
}

fn batches_of(n: usize) -> ShardBatches {
    let mut batches = ShardBatches::default();
    batches.push((0..n).map(record));
    batches
}

#[test]
fn a_stream_batch_is_cut_to_size_and_done_on_success() {
    let mut batches = batches_of(5);
    assert_eq!(
        sequence_numbers(batches.next_batch(3)),
        ["100", "101", "102"]
    );
    assert!(batches.settle(Outcome::Succeeded, false, Some(1)).is_none());
    assert_eq!(sequence_numbers(batches.next_batch(3)), ["103", "104"]);
    assert!(batches.settle(Outcome::Succeeded, false, Some(1)).is_none());
    assert_eq!(batches.buffered(), 0);
}

#[test]
fn a_partial_failure_retries_from_the_first_failed_record() {
    let mut batches = batches_of(6);
    batches.next_batch(5);
    assert!(
        batches
            .settle(Outcome::FailedFrom(2), false, Some(1))
            .is_none()
    );
    // Records after the batch do not join its retry.
    assert_eq!(
        sequence_numbers(batches.next_batch(5)),
        ["102", "103", "104"]
    );
    let given_up = batches
        .settle(Outcome::FailedFrom(0), false, Some(1))
        .expect("its one retry failed too");
    assert_eq!(sequence_numbers(&given_up.records), ["102", "103", "104"]);
    assert_eq!(given_up.invoke_count, 2);
    assert_eq!(sequence_numbers(batches.next_batch(5)), ["105"]);
}

#[test]
fn without_bisect_an_error_retries_the_batch_until_its_retries_run_out() {
    let mut batches = batches_of(3);
    for _ in 0..2 {
        assert_eq!(
            sequence_numbers(batches.next_batch(10)),
            ["100", "101", "102"]
        );
        assert!(batches.settle(Outcome::Failed, false, Some(2)).is_none());
    }
    batches.next_batch(10);
    let given_up = batches
        .settle(Outcome::Failed, false, Some(2))
        .expect("third retry");
    assert_eq!(given_up.records.len(), 3);
    assert_eq!(given_up.invoke_count, 3);
    assert_eq!(batches.buffered(), 0);

    // -1: retried for as long as it takes.
    let mut batches = batches_of(1);
    for _ in 0..50 {
        batches.next_batch(10);
        assert!(batches.settle(Outcome::Failed, false, None).is_none());
    }
}

/// Plays a shard of `n` records through a function that fails any batch holding `poison`;
/// returns the batches invoked and what was given up on.
fn play(
    n: usize,
    poison: &str,
    max_retry_attempts: Option<u32>,
) -> (Vec<Vec<String>>, Vec<String>) {
    let mut batches = batches_of(n);
    let mut invoked = Vec::new();
    let mut given_up = Vec::new();
    for _ in 0..1000 {
        if batches.buffered() == 0 {
            break;
        }
        let batch = sequence_numbers(batches.next_batch(100));
        let outcome = if batch.iter().any(|s| s == poison) {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        };
        invoked.push(batch);
        if let Some(gave_up) = batches.settle(outcome, true, max_retry_attempts) {
            given_up.extend(sequence_numbers(&gave_up.records));
        }
    }
    (invoked, given_up)
}

#[test]
fn bisect_isolates_the_bad_record_and_splits_cost_no_retry() {
    let (invoked, given_up) = play(8, "105", Some(1));
    assert_eq!(given_up, ["105"]);
    let sizes: Vec<usize> = invoked.iter().map(Vec::len).collect();
    // 8 fails; 4 ok; 4 fails; 2 fails; 1 ok; 1 fails twice more (one retry, then given up); 2 ok.
    assert_eq!(sizes, [8, 4, 4, 2, 1, 1, 1, 2]);
    // Every other record succeeded exactly once, in order.
    let succeeded: Vec<&String> = invoked
        .iter()
        .filter(|b| !b.iter().any(|s| s == "105"))
        .flatten()
        .collect();
    let expected = ["100", "101", "102", "103", "104", "106", "107"];
    assert_eq!(succeeded, expected);
}

#[test]
fn records_past_their_age_are_given_up_before_any_invocation() {
    let mut batches = batches_of(4);
    // Records 0 and 1 were created at 1000 and 1001; at 1062 with a 61 s limit only 0 is too old.
    let expired = batches.expire(1_062, 61, 3).expect("one expired");
    assert_eq!(sequence_numbers(&expired.records), ["100"]);
    assert_eq!(expired.invoke_count, 0);
    assert!(batches.expire(1_062, 61, 3).is_none());
    assert_eq!(sequence_numbers(batches.next_batch(3)), ["101", "102"]);
}

#[test]
fn attribute_values_become_dynamodb_json() {
    let blob = || Blob::new(b"hi".to_vec());
    let check = |value: AttributeValue, expected: Value| {
        assert_eq!(
            attribute_json(&value).expect("known"),
            expected,
            "{value:?}"
        );
    };
    check(AttributeValue::S("x".into()), json!({"S": "x"}));
    check(AttributeValue::N("1.5".into()), json!({"N": "1.5"}));
    check(AttributeValue::B(blob()), json!({"B": "aGk="}));
    check(
        AttributeValue::Ss(vec!["a".into(), "b".into()]),
        json!({"SS": ["a", "b"]}),
    );
    check(AttributeValue::Ns(vec!["1".into()]), json!({"NS": ["1"]}));
    check(AttributeValue::Bs(vec![blob()]), json!({"BS": ["aGk="]}));
    check(AttributeValue::Bool(true), json!({"BOOL": true}));
    check(AttributeValue::Null(true), json!({"NULL": true}));
    check(
        AttributeValue::L(vec![
            AttributeValue::S("x".into()),
            AttributeValue::N("2".into()),
        ]),
        json!({"L": [{"S": "x"}, {"N": "2"}]}),
    );
    check(
        AttributeValue::M(HashMap::from([(
            "inner".to_owned(),
            AttributeValue::M(HashMap::from([(
                "n".to_owned(),
                AttributeValue::N("3".into()),
            )])),
        )])),
        json!({"M": {"inner": {"M": {"n": {"N": "3"}}}}}),
    );
}

#[test]
fn the_sqs_event_is_the_one_lambdas_runtime_reads() {
    let message = Message::builder()
        .message_id("m-1")
        .receipt_handle("r-1")
        .body(r#"{"kind":"paid"}"#)
        .md5_of_body("5d41402abc4b2a76b9719d911017c592")
        .md5_of_message_attributes("6d41402abc4b2a76b9719d911017c592")
        .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
        .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000000")
        .attributes(MessageSystemAttributeName::SenderId, "AIDAEXAMPLE")
        .attributes(
            MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            "1700000000100",
        )
        .message_attributes(
            "kind",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("paid")
                .build()
                .expect("attribute"),
        )
        .message_attributes(
            "raw",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(aws_sdk_sqs::primitives::Blob::new(b"hi".to_vec()))
                .build()
                .expect("attribute"),
        )
        .build();
    let arn = "arn:aws:sqs:us-east-1:123456789012:q";
    let event = sqs_event(&[message], arn, "us-east-1");
    let parsed: SqsEvent = serde_json::from_value(event.clone()).expect("an SqsEvent");
    let record = &parsed.records[0];
    assert_eq!(record.message_id.as_deref(), Some("m-1"));
    assert_eq!(record.receipt_handle.as_deref(), Some("r-1"));
    assert_eq!(record.body.as_deref(), Some(r#"{"kind":"paid"}"#));
    assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
    assert_eq!(record.event_source_arn.as_deref(), Some(arn));
    assert_eq!(record.aws_region.as_deref(), Some("us-east-1"));
    assert_eq!(record.attributes["ApproximateReceiveCount"], "2");
    assert_eq!(record.attributes["SenderId"], "AIDAEXAMPLE");
    assert_eq!(
        record.attributes["ApproximateFirstReceiveTimestamp"],
        "1700000000100"
    );
    let kind = &record.message_attributes["kind"];
    assert_eq!(kind.string_value.as_deref(), Some("paid"));
    assert_eq!(kind.data_type.as_deref(), Some("String"));
    assert_eq!(
        event["Records"][0]["messageAttributes"]["raw"]["binaryValue"],
        "aGk="
    );
    assert_eq!(
        record.md5_of_message_attributes.as_deref(),
        Some("6d41402abc4b2a76b9719d911017c592")
    );
}

fn image(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[test]
fn the_stream_event_is_the_one_lambdas_runtime_reads() {
    let key = image(&[("pk", AttributeValue::S("PAY#1".into()))]);
    let old = image(&[
        ("pk", AttributeValue::S("PAY#1".into())),
        ("version", AttributeValue::N("1".into())),
    ]);
    let new = image(&[
        ("pk", AttributeValue::S("PAY#1".into())),
        ("version", AttributeValue::N("2".into())),
        ("tags", AttributeValue::Ss(vec!["a".into()])),
        (
            "meta",
            AttributeValue::M(image(&[("ok", AttributeValue::Bool(true))])),
        ),
        ("none", AttributeValue::Null(true)),
    ]);
    let change = StreamRecord::builder()
        .approximate_creation_date_time(DateTime::from_secs(1_700_000_000))
        .set_keys(Some(key))
        .set_old_image(Some(old))
        .set_new_image(Some(new.clone()))
        .sequence_number("1100000000017454423010")
        .size_bytes(120)
        .stream_view_type(StreamViewType::NewAndOldImages)
        .build();
    let sdk_record = Record::builder()
        .event_id("e-1")
        .event_name(OperationType::Modify)
        .event_source("aws:dynamodb")
        .dynamodb(change)
        .build();
    let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-01-01T00:00:00";
    let record = shard_record(&sdk_record, arn, "us-east-1").expect("record");
    assert_eq!(record.sequence_number, "1100000000017454423010");
    assert_eq!(record.created_s, 1_700_000_000);

    let event = stream_event(&[record]);
    let parsed: DynamoDbEvent = serde_json::from_value(event.clone()).expect("a DynamoDB event");
    let parsed = &parsed.records[0];
    assert_eq!(parsed.event_name, "MODIFY");
    assert_eq!(parsed.event_id, "e-1");
    assert_eq!(parsed.event_version.as_deref(), Some("1.1"));
    assert_eq!(parsed.event_source_arn.as_deref(), Some(arn));
    assert_eq!(
        parsed.change.approximate_creation_date_time.timestamp(),
        1_700_000_000
    );
    assert_eq!(
        parsed.change.sequence_number.as_deref(),
        Some("1100000000017454423010")
    );
    assert_eq!(parsed.change.size_bytes, 120);
    assert_eq!(parsed.change.keys.len(), 1);
    assert_eq!(parsed.change.old_image.len(), 2);
    // The runtime's images say what ours said.
    let images = serde_json::to_value(&parsed.change).expect("serialize");
    assert_eq!(images["NewImage"], item_json(&new).expect("json"));
    assert_eq!(
        event["Records"][0]["dynamodb"]["NewImage"]["version"],
        json!({"N": "2"})
    );
}

#[test]
fn the_failure_record_is_lambdas_invocation_record() {
    let given_up = GivenUp {
        records: vec![record(0), record(1)],
        invoke_count: 3,
    };
    let source = BatchSource {
        function_arn: "arn:aws:lambda:us-east-1:1:function:f",
        stream_arn: "arn:aws:dynamodb:us-east-1:1:table/t/stream/x",
        shard_id: "shardId-1",
    };
    let failed = Invocation::Failed("500".into());
    let sent = failure_record(&given_up, "RetryAttemptsExhausted", Some(&failed), &source);
    assert_eq!(sent["version"], "1.0");
    assert_eq!(
        sent["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(sent["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(sent["requestContext"]["functionArn"], source.function_arn);
    assert_eq!(sent["responseContext"]["functionError"], "Unhandled");
    assert_eq!(sent["responseContext"]["statusCode"], 200);
    let info = &sent["DDBStreamBatchInfo"];
    assert_eq!(info["shardId"], "shardId-1");
    assert_eq!(info["startSequenceNumber"], "100");
    assert_eq!(info["endSequenceNumber"], "101");
    assert_eq!(info["batchSize"], 2);
    assert_eq!(info["streamArn"], source.stream_arn);
    assert_eq!(
        info["approximateArrivalOfFirstRecord"],
        "1970-01-01T00:16:40Z"
    );
    assert_eq!(
        info["approximateArrivalOfLastRecord"],
        "1970-01-01T00:16:41Z"
    );
    let timestamp = sent["timestamp"].as_str().expect("timestamp");
    assert!(
        timestamp.ends_with('Z') && timestamp.len() == 24,
        "{timestamp}"
    );
    let request_id = sent["requestContext"]["requestId"].as_str().expect("id");
    assert_eq!(
        request_id.split('-').map(str::len).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );

    // A partial failure is no function error; expired records saw no invocation at all.
    let partial = failure_record(
        &given_up,
        "RetryAttemptsExhausted",
        Some(&returned("{}")),
        &source,
    );
    assert!(
        partial["responseContext"].get("functionError").is_none(),
        "{partial}"
    );
    let expired = failure_record(&given_up, "RecordAgeExceeded", None, &source);
    assert!(expired.get("responseContext").is_none(), "{expired}");
}
