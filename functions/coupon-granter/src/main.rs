//! The coupon-granter consumer, fed by its SQS queue with partial batch responses: wiring only
//! (`shared::app::consume`).

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::app::consume::consume;
use shared::domain::event::Consumer;
use shared::ports::Clock as _;
use shared::queue::{messages, sqs_batch_response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let wiring = shared::config::consumer_from_env(Consumer::CouponGranter).await?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let wiring = &wiring;
        async move {
            let failed =
                consume(&wiring.deps(), &messages(event.payload), wiring.clock.now()).await;
            Ok::<_, Error>(sqs_batch_response(failed))
        }
    }))
    .await
}
