//! The check-back, fired by an EventBridge schedule: wiring only (`shared::app::check_back`).

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::app::check_back::{CheckBackDeps, run_check_back};
use shared::config::Wiring;
use shared::domain::Timestamp;

/// Payments per shard per run.
const PAGE: usize = 50;
/// Payments checked at once.
const CONCURRENCY: usize = 8;
/// No check starts this close to the invocation's deadline (one takes a few requests).
const STOP_BEFORE_DEADLINE_MS: i64 = 10_000;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let app = shared::config::deps_from_env(Wiring::StoreOnly).await?;
    let effects = shared::config::effects_from_env(&aws)?;
    let bus = shared::config::event_bus(&aws)?;
    let after_s = shared::config::check_back_after_s_from_env()?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let deps = CheckBackDeps {
            store: app.store.as_ref(),
            effects: &effects,
            bus: &bus,
            after_s,
            page: PAGE,
            concurrency: CONCURRENCY,
            clock: app.clock.as_ref(),
            stop_at: i64::try_from(event.context.deadline)
                .ok()
                .map(|ms| Timestamp::from_unix_ms(ms - STOP_BEFORE_DEADLINE_MS)),
        };
        async move {
            let summary = run_check_back(&deps).await;
            tracing::info!(
                request_id = event.context.request_id,
                ?summary,
                "check-back run done"
            );
            Ok::<_, Error>(serde_json::to_value(&summary)?)
        }
    }))
    .await
}
