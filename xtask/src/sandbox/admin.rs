//! `/admin/*`: fault knobs, counters, per-trade delivery log. Unsigned, unauthenticated.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::Serialize;
use tracing::info;

use super::faults::{self, Faults};
use super::server::{ApiError, path_param};
use super::state::{Shared, Stats, Trade};

/// The whole fault table, as every `/admin/faults` call answers it.
#[derive(Debug, Serialize)]
pub(crate) struct FaultsView {
    faults: BTreeMap<String, Faults>,
}

fn faults_view(shared: &Shared) -> Json<FaultsView> {
    Json(FaultsView {
        faults: shared.lock().faults.snapshot(),
    })
}

/// `PUT /admin/faults`: replaces the knobs of one scope.
pub(crate) async fn set_faults(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<FaultsView>, ApiError> {
    let (scope, knobs) =
        faults::parse_request(&body).map_err(|e| ApiError::invalid(format!("bad faults: {e}")))?;
    info!(%scope, ?knobs, "sandbox: fault knobs set");
    shared.lock().faults.set(scope, knobs);
    Ok(faults_view(&shared))
}

/// `DELETE /admin/faults`: clears every scope.
pub(crate) async fn clear_faults(State(shared): State<Arc<Shared>>) -> Json<FaultsView> {
    info!("sandbox: fault knobs cleared");
    shared.lock().faults.clear();
    faults_view(&shared)
}

/// `GET /admin/faults`.
pub(crate) async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<FaultsView> {
    faults_view(&shared)
}

/// `GET /admin/stats`.
pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.lock().stats)
}

/// `GET /admin/trades/{out_trade_no}`: the trade with its delivery log.
pub(crate) async fn trade(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Trade>, ApiError> {
    let out_trade_no = path_param(path)?;
    let trade = shared.lock().trades.get(&out_trade_no).cloned();
    trade.map(Json).ok_or_else(ApiError::not_exist)
}
