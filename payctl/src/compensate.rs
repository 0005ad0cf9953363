//! `payctl compensate <ID>`: re-runs a dead message's effect directly, then marks it compensated
//! (`shared::app::redrive::compensate`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::builder::NonEmptyStringValueParser;
use shared::app::consume::Outcome;
use shared::app::redrive::{self, CompensateOutcome};
use shared::clock::SystemClock;
use shared::config::per_consumer;
use shared::domain::event::Consumer;
use shared::ports::{Clock as _, Effects};
use shared::store::DynamoEffects;

use crate::aws;
use crate::dlq::status_name;

#[derive(clap::Args)]
pub struct Args {
    /// The dead letter, by its id as `payctl dlq list` prints it.
    id: String,
    #[command(flatten)]
    tables: aws::Tables,
    /// Each consumer's effects table: `order-updater=<table>,coupon-granter=<table>`.
    #[arg(long, env = "EFFECTS_TABLES", value_name = "CONSUMER=TABLE,...", value_parser = NonEmptyStringValueParser::new())]
    effects_tables: String,
}

pub fn run(args: &Args) -> ExitCode {
    let tables = match per_consumer("--effects-tables", &args.effects_tables) {
        Ok(tables) => tables,
        Err(e) => {
            eprintln!("payctl: {e:#}");
            return ExitCode::from(2);
        }
    };
    aws::block_on(compensate(args, tables))
}

#[allow(clippy::print_stdout)]
async fn compensate(args: &Args, tables: Vec<(Consumer, String)>) -> ExitCode {
    let config = aws::sdk_config().await;
    let store = aws::dead_letters(&config, &args.tables);
    let client = aws_sdk_dynamodb::Client::new(&config);
    let effects: Vec<Arc<dyn Effects>> = tables
        .into_iter()
        .map(|(consumer, table)| {
            Arc::new(DynamoEffects::new(client.clone(), table, consumer)) as Arc<dyn Effects>
        })
        .collect();
    let id = &args.id;
    match redrive::compensate(&store, &effects, id, SystemClock.now()).await {
        Ok(CompensateOutcome::Compensated { consumer, effect }) => {
            println!("{id}  compensated: {}", describe(consumer, &effect));
            ExitCode::SUCCESS
        }
        Ok(CompensateOutcome::EffectDoneNotMarked { consumer, effect }) => {
            println!(
                "{id}  {}; but it was no longer open: its status is left as it was",
                describe(consumer, &effect)
            );
            ExitCode::SUCCESS
        }
        Ok(CompensateOutcome::NotOpen(status)) => {
            println!("{id}  already {}: nothing done", status_name(status));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("payctl: compensate {id}: {e}");
            ExitCode::from(1)
        }
    }
}

fn describe(consumer: Consumer, effect: &Outcome) -> String {
    match effect {
        Outcome::Applied => format!("{consumer} applied the event's effect now"),
        Outcome::Duplicate => format!("{consumer} had applied this event already"),
        Outcome::OrderAlreadyDone => {
            format!("{consumer} had made the order's effect already, for another event")
        }
        Outcome::Ignored => format!("not a paid event: {consumer} has no effect to make"),
        other => format!("{consumer}: {other:?}"),
    }
}
