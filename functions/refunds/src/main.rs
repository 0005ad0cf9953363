//! `POST` and `GET /payments/{payment_id}/refunds`: wiring only. The handler lives in
//! `handler.rs`.

mod handler;

use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let deps = shared::config::deps_from_env(shared::config::Wiring::StoreAndProviders).await?;
    run(service_fn(|request: Request| {
        handler::handle(&deps, request)
    }))
    .await
}
