//! `payctl dlq list` and `payctl dlq redrive`: the dead messages stored in the compensations
//! table (`shared::app::redrive`).

use std::process::ExitCode;

use shared::app::redrive::{self, NO_SOURCE_QUEUE, RedriveOutcome};
use shared::clock::SystemClock;
use shared::ports::{Clock as _, DeadLetter, DeadLetterStatus};
use shared::queue::SqsSender;

use crate::aws;

#[derive(clap::Subcommand)]
pub enum Command {
    /// The stored dead messages, oldest first: the open ones unless --all. One line each, its id
    /// first. Exit 0 listed, 1 the read failed, 2 usage error.
    List(ListArgs),
    /// Sends open dead messages back to their source queues (every open one, or each --id) and
    /// marks them redriven. One line per message, then a summary. Exit 0 all done, 1 any failed,
    /// 2 usage error.
    Redrive(RedriveArgs),
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Every stored dead message, redriven and compensated ones too.
    #[arg(long)]
    all: bool,
    /// The stored records as JSON, one per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tables: aws::Tables,
}

#[derive(clap::Args)]
pub struct RedriveArgs {
    /// Only this dead letter (as `payctl dlq list` prints its id). Repeatable.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    tables: aws::Tables,
}

pub fn run(command: &Command) -> ExitCode {
    aws::block_on(async {
        match command {
            Command::List(args) => list(args).await,
            Command::Redrive(args) => redrive(args).await,
        }
    })
}

/// How long an error may run in the table before it is cut.
const ERROR_CHARS: usize = 60;

pub fn status_name(status: DeadLetterStatus) -> &'static str {
    match status {
        DeadLetterStatus::Open => "open",
        DeadLetterStatus::Redriven => "redriven",
        DeadLetterStatus::Compensated => "compensated",
    }
}

#[allow(clippy::print_stdout)]
async fn list(args: &ListArgs) -> ExitCode {
    let config = aws::sdk_config().await;
    let store = aws::dead_letters(&config, &args.tables);
    let dead = match redrive::list(&store, args.all).await {
        Ok(dead) => dead,
        Err(e) => {
            eprintln!("payctl: reading the dead letters failed: {e:#}");
            return ExitCode::from(1);
        }
    };
    if args.json {
        for d in &dead {
            match serde_json::to_string(d) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("payctl: {}: cannot write it as JSON: {e}", d.id);
                    return ExitCode::from(1);
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    print_table(&dead, args.all);
    ExitCode::SUCCESS
}

#[allow(clippy::print_stdout)]
fn print_table(dead: &[DeadLetter], all: bool) {
    if dead.is_empty() {
        println!("no {}dead letters", if all { "" } else { "open " });
        return;
    }
    let id_width = dead.iter().map(|d| d.id.len()).max().unwrap_or(2);
    println!(
        "{:<id_width$}  {:<14}  {:<11}  {:>8}  {:<24}  {:<24}  ERROR",
        "ID", "CONSUMER", "STATUS", "RECEIVES", "FIRST SEEN", "LAST SEEN"
    );
    for d in dead {
        println!(
            "{:<id_width$}  {:<14}  {:<11}  {:>8}  {:<24}  {:<24}  {}",
            d.id,
            d.consumer,
            status_name(d.status),
            d.receive_count,
            d.first_seen.to_rfc3339(),
            d.last_seen.to_rfc3339(),
            one_line(&d.error, ERROR_CHARS),
        );
    }
    let stranded = dead
        .iter()
        .filter(|d| d.status == DeadLetterStatus::Open && d.source_queue_url.is_none())
        .count();
    if stranded > 0 {
        println!(
            "note: {stranded} open record(s) cannot be redriven or compensated: {NO_SOURCE_QUEUE}"
        );
    }
}

/// `text` on one line, cut to `max` characters (an ellipsis marks the cut).
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[allow(clippy::print_stdout)]
async fn redrive(args: &RedriveArgs) -> ExitCode {
    let config = aws::sdk_config().await;
    let store = aws::dead_letters(&config, &args.tables);
    let sender = SqsSender::new(aws_sdk_sqs::Client::new(&config));
    let ids = (!args.ids.is_empty()).then_some(args.ids.as_slice());
    let outcomes = match redrive::redrive(&store, &sender, ids, SystemClock.now()).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            eprintln!("payctl: reading the open dead letters failed, nothing sent: {e:#}");
            return ExitCode::from(1);
        }
    };
    let (mut sent, mut failed, mut unchanged) = (0, 0, 0);
    for (id, outcome) in &outcomes {
        println!("{id}  {}", describe(outcome));
        match outcome {
            o if o.is_failure() => failed += 1,
            RedriveOutcome::Redriven { .. } | RedriveOutcome::SentNotMarked { .. } => sent += 1,
            _ => unchanged += 1,
        }
    }
    if outcomes.is_empty() {
        println!("redrive: no open dead letters");
    } else {
        println!("redrive: {sent} sent back, {failed} failed, {unchanged} left as they were");
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn describe(outcome: &RedriveOutcome) -> String {
    match outcome {
        RedriveOutcome::Redriven { queue_url } => format!("redriven -> {queue_url}"),
        RedriveOutcome::SentNotMarked { queue_url } => format!(
            "sent -> {queue_url}, but it was no longer open: its status is left as it was (the \
             consumers dedupe the extra copy)"
        ),
        RedriveOutcome::Skipped => format!("skipped: {NO_SOURCE_QUEUE}"),
        RedriveOutcome::NoSourceQueue => format!("REFUSED: {NO_SOURCE_QUEUE}"),
        RedriveOutcome::Unknown => "FAILED: no dead letter has this id".to_owned(),
        RedriveOutcome::NotOpen(status) => {
            format!("already {}: nothing sent", status_name(*status))
        }
        RedriveOutcome::ReadFailed(e) => format!("FAILED: reading it: {e}"),
        RedriveOutcome::SendFailed(e) => format!("FAILED: {e} (it stays open)"),
        RedriveOutcome::MarkFailed(e) => format!(
            "FAILED: sent, but marking it redriven failed: {e} (it stays open; a later redrive \
             sends it again and the consumers dedupe)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_cut_to_one_line() {
        assert_eq!(one_line("short", 10), "short");
        assert_eq!(one_line("a\nb\tc", 10), "a b c");
        assert_eq!(one_line("0123456789abc", 10), "012345678…");
        assert_eq!(one_line("支付失败支付失败支付失败", 5), "支付失败…");
    }
}
