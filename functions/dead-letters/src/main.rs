//! The dead-letter handler, fed by every dead-letter queue: wiring only
//! (`shared::app::dead_letters`).

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::app::dead_letters::store_dead_letters;
use shared::clock::SystemClock;
use shared::ports::Clock as _;
use shared::queue::{messages, sqs_batch_response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let (store, sources) = shared::config::dead_letters_from_env().await?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (store, sources) = (&store, &sources);
        async move {
            let failed =
                store_dead_letters(store, sources, &messages(event.payload), SystemClock.now())
                    .await;
            Ok::<_, Error>(sqs_batch_response(failed))
        }
    }))
    .await
}
