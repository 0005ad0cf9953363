//! DynamoDB's TTL, played by the local stack: moto records `TimeToLiveSpecification` but never
//! expires anything. A sweeper deletes the items of every TTL table of the template whose TTL
//! attribute (epoch seconds) has passed, each with a condition that it still has, as DynamoDB's
//! background deletion would (only sooner: DynamoDB takes up to a few days).

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::template::TtlTable;

/// How often the sweeper runs: TTL is about days, so this is only to be seen working.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The running sweeper; dropping it stops it.
pub struct Sweeper {
    task: JoinHandle<()>,
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start(client: aws_sdk_dynamodb::Client, tables: Vec<TtlTable>) -> Sweeper {
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            for table in &tables {
                match sweep(&client, table, now).await {
                    Ok(0) => {}
                    Ok(n) => {
                        debug!(table = %table.table, expired = n, "ttl: expired items deleted")
                    }
                    Err(e) => {
                        warn!(table = %table.table, error = format!("{e:#}"), "ttl: sweep failed")
                    }
                }
            }
        }
    });
    Sweeper { task }
}

/// Deletes the items of `table` whose TTL attribute is before `now_s`; returns how many.
pub async fn sweep(
    client: &aws_sdk_dynamodb::Client,
    table: &TtlTable,
    now_s: u64,
) -> anyhow::Result<usize> {
    let now = AttributeValue::N(now_s.to_string());
    let mut scan = client
        .scan()
        .table_name(&table.table)
        .filter_expression("#ttl < :now")
        .expression_attribute_names("#ttl", &table.attribute)
        .expression_attribute_values(":now", now.clone());
    let mut projection = Vec::new();
    for (i, key) in table.key.iter().enumerate() {
        let name = format!("#k{i}");
        scan = scan.expression_attribute_names(&name, key);
        projection.push(name);
    }
    let expired: Vec<_> = scan
        .projection_expression(projection.join(", "))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .with_context(|| format!("scanning {}", table.table))?;
    let mut deleted = 0;
    for key in expired {
        let result = client
            .delete_item()
            .table_name(&table.table)
            .set_key(Some(key))
            .condition_expression("#ttl < :now")
            .expression_attribute_names("#ttl", &table.attribute)
            .expression_attribute_values(":now", now.clone())
            .send()
            .await;
        match result {
            Ok(_) => deleted += 1,
            // Written again since the scan with a later expiry: not expired any more.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(e) => {
                return Err(crate::event_sources::sdk_error(e))
                    .with_context(|| format!("deleting from {}", table.table));
            }
        }
    }
    Ok(deleted)
}
