//! `payctl`: what an operator reaches for. Wiring only: parse flags, read files, build AWS
//! clients, call `shared`.

mod aws;
mod compensate;
mod dlq;
mod raw_request;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "payctl", about = "Operations CLI for the payment platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a provider callback as received: is the signature valid, what exactly was signed,
    /// what does it say. Exit 0 valid, 1 invalid, 2 usage error.
    VerifyCallback(Box<verify::Args>),
    /// The dead messages the consumers gave up on, as stored in the compensations table.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Re-run a dead message's effect directly through its consumer's dedupe record (at most
    /// once), then mark it compensated. Exit 0 done (or done already), 1 failed, 2 usage error.
    Compensate(compensate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::VerifyCallback(args) => verify::run(&args),
        Command::Dlq(command) => dlq::run(&command),
        Command::Compensate(args) => compensate::run(&args),
    }
}
