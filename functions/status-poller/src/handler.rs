//! One scheduled run: the event carries nothing we need (the clock port says what is due).

use lambda_runtime::{Error, LambdaEvent};
use shared::app::Deps;
use shared::app::poll::{PollRun, run_poller};

pub async fn handle(
    deps: &Deps,
    poll_run: &PollRun,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, Error> {
    let summary = run_poller(deps, poll_run).await;
    tracing::info!(
        request_id = event.context.request_id,
        ?summary,
        "poller run done"
    );
    Ok(serde_json::to_value(&summary)?)
}
