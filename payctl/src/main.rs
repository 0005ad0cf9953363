//! `payctl`: what an operator reaches for. Wiring only: parse flags, read files, call `shared`.

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
    VerifyCallback(verify::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::VerifyCallback(args) => verify::run(&args),
    }
}
