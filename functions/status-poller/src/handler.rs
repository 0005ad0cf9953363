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
    if summary.shards_unread == shared::ports::DUE_SHARDS as usize {
        // Nothing could be read: fail the invocation, so the Errors alarm sees it.
        return Err("the due index could not be read".into());
    }
    Ok(serde_json::to_value(&summary)?)
}
