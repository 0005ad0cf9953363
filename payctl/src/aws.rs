//! What the commands that touch the stack share: the tables they are told about, one SDK
//! config (the usual chain: `AWS_REGION`, credentials, and `AWS_ENDPOINT_URL`, so the same
//! commands work against the local moto stack), and a runtime to run them on.

use std::process::ExitCode;

use clap::builder::NonEmptyStringValueParser;

use shared::store::DynamoDeadLetters;

#[derive(clap::Args)]
pub struct Tables {
    /// The compensations table, where the dead-letter handler stores every dead message.
    #[arg(long, env = "COMPENSATIONS_TABLE", value_name = "TABLE", value_parser = NonEmptyStringValueParser::new())]
    pub compensations_table: String,
}

/// Runs one command's async body to its exit code. A runtime that cannot start is a failure.
pub fn block_on(body: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(body),
        Err(e) => {
            eprintln!("payctl: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

pub fn dead_letters(config: &aws_config::SdkConfig, tables: &Tables) -> DynamoDeadLetters {
    DynamoDeadLetters::new(
        aws_sdk_dynamodb::Client::new(config),
        tables.compensations_table.clone(),
    )
}
