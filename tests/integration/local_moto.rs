//! The local stack's moto (`xtask/moto_serial.py`) hands moto's Query only the candidate items:
//! a table query's partition, an index query's items filed under its hash value. Every write path
//! must keep that filing true, or a query misses an item DynamoDB would return.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use tests::{dynamo, fresh_tables};

type Item = HashMap<String, AttributeValue>;

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn payment(pk: &str, shard: &str, at: u32) -> Item {
    HashMap::from([
        ("pk".into(), s(pk)),
        ("sk".into(), s("PAYMENT")),
        ("due_shard".into(), s(shard)),
        ("next_check_at".into(), AttributeValue::N(at.to_string())),
    ])
}

fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([("pk".into(), s(pk)), ("sk".into(), s(sk))])
}

async fn due(client: &aws_sdk_dynamodb::Client, table: &str, shard: &str) -> Vec<String> {
    let out = client
        .query()
        .table_name(table)
        .index_name("due-checks")
        .key_condition_expression("due_shard = :s AND next_check_at <= :t")
        .expression_attribute_values(":s", s(shard))
        .expression_attribute_values(":t", AttributeValue::N("1000".into()))
        .send()
        .await
        .expect("query index");
    pks(out.items())
}

fn pks(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["pk"].as_s().expect("pk").clone())
        .collect()
}

fn set_shard(table: &str, pk: &str, shard: &str) -> TransactWriteItem {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(key(pk, "PAYMENT")))
        .update_expression("SET due_shard = :s")
        .expression_attribute_values(":s", s(shard))
        .build()
        .expect("update");
    TransactWriteItem::builder().update(update).build()
}

/// UpdateItem of `pk`'s payment item: `expression` with `values`.
async fn update(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    expression: &str,
    values: &[(&str, AttributeValue)],
) {
    let mut update = client
        .update_item()
        .table_name(table)
        .set_key(Some(key(pk, "PAYMENT")))
        .update_expression(expression);
    for (name, value) in values {
        update = update.expression_attribute_values(*name, value.clone());
    }
    update.send().await.expect("update");
}

#[tokio::test]
async fn index_and_partition_queries_see_every_write_path() {
    let client = dynamo(None).await;
    let (table, _) = fresh_tables(&client).await;
    for (pk, shard, at) in [("A", "DUE#0", 1), ("B", "DUE#0", 2), ("C", "DUE#1", 3)] {
        let put = client.put_item().table_name(&table);
        put.set_item(Some(payment(pk, shard, at)))
            .send()
            .await
            .expect("put");
    }
    assert_eq!(due(&client, &table, "DUE#0").await, ["A", "B"]);
    assert_eq!(due(&client, &table, "DUE#1").await, ["C"]);

    // UpdateItem moves B to another shard; the old filing is stale, not an answer.
    update(
        &client,
        &table,
        "B",
        "SET due_shard = :s",
        &[(":s", s("DUE#1"))],
    )
    .await;
    assert_eq!(due(&client, &table, "DUE#0").await, ["A"]);
    assert_eq!(due(&client, &table, "DUE#1").await, ["B", "C"]);

    // A transaction takes A out of the index and puts D in.
    let out_of_index = Update::builder()
        .table_name(&table)
        .set_key(Some(key("A", "PAYMENT")))
        .update_expression("REMOVE due_shard")
        .build()
        .expect("update");
    let put_d = Put::builder()
        .table_name(&table)
        .set_item(Some(payment("D", "DUE#0", 4)))
        .build()
        .expect("put");
    let committed = client
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().update(out_of_index).build())
        .transact_items(TransactWriteItem::builder().put(put_d).build());
    committed.send().await.expect("transaction");
    assert_eq!(due(&client, &table, "DUE#0").await, ["D"]);

    // A cancelled transaction moves nothing.
    let missing = ConditionCheck::builder()
        .table_name(&table)
        .set_key(Some(key("nobody", "PAYMENT")))
        .condition_expression("attribute_exists(pk)")
        .build()
        .expect("check");
    let cancelled = client
        .transact_write_items()
        .transact_items(set_shard(&table, "D", "DUE#1"))
        .transact_items(
            TransactWriteItem::builder()
                .condition_check(missing)
                .build(),
        );
    assert!(cancelled.send().await.is_err(), "the condition fails");
    assert_eq!(due(&client, &table, "DUE#0").await, ["D"]);
    assert_eq!(due(&client, &table, "DUE#1").await, ["B", "C"]);

    // An update of a missing item creates it, filed; a delete takes it out.
    let values = [(":s", s("DUE#0")), (":t", AttributeValue::N("5".into()))];
    let expression = "SET due_shard = :s, next_check_at = :t";
    update(&client, &table, "E", expression, &values).await;
    let gone = client
        .delete_item()
        .table_name(&table)
        .set_key(Some(key("D", "PAYMENT")));
    gone.send().await.expect("delete");
    assert_eq!(due(&client, &table, "DUE#0").await, ["E"]);

    // A table query reads one partition, in sort-key order.
    for sk in ["H#2", "H#1"] {
        let put = client
            .put_item()
            .table_name(&table)
            .set_item(Some(key("A", sk)));
        put.send().await.expect("put history");
    }
    let out = client
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s("A"))
        .send()
        .await
        .expect("query table");
    let sks: Vec<&str> = out
        .items()
        .iter()
        .map(|i| i["sk"].as_s().unwrap().as_str())
        .collect();
    assert_eq!(sks, ["H#1", "H#2", "PAYMENT"]);
}
