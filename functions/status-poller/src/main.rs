//! The status poller, fired by an EventBridge schedule: wiring only. The handler lives in
//! `handler.rs`.

mod handler;

use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let deps = shared::config::deps_from_env(shared::config::Wiring::StoreAndProviders).await?;
    let poll_run = shared::config::poll_run_from_env()?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        handler::handle(&deps, &poll_run, event)
    }))
    .await
}
