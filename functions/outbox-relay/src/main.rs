//! The outbox relay, fed by the payments table's stream: wiring only (`shared::app::relay`).

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::app::relay::relay;
use shared::queue::{payment_changes, stream_batch_response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let bus = shared::config::event_bus(&aws)?;
    run(service_fn(|event: LambdaEvent<Event>| {
        let bus = &bus;
        async move {
            let summary = relay(bus, payment_changes(event.payload)).await;
            tracing::info!(
                request_id = event.context.request_id,
                ?summary,
                "relay batch done"
            );
            Ok::<_, Error>(stream_batch_response(summary.failed_at))
        }
    }))
    .await
}
