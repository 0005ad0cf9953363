//! `/admin/*`: fault knobs, counters, per-trade delivery log and refunds. Unsigned,
//! unauthenticated.

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

/// A trade as the admin API shows it: every stored field, plus its refunds' sums.
#[derive(Debug, Serialize)]
pub(crate) struct TradeView {
    #[serde(flatten)]
    trade: Trade,
    /// What its SUCCESS refunds add up to.
    refunded_minor: i64,
    /// What all its refunds add up to, PROCESSING ones included.
    committed_minor: i64,
}

/// `GET /admin/trades/{out_trade_no}`: the trade with its delivery log and its refunds.
pub(crate) async fn trade(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TradeView>, ApiError> {
    let out_trade_no = path_param(path)?;
    let trade = shared.lock().trades.get(&out_trade_no).cloned();
    let trade = trade.ok_or_else(ApiError::not_exist)?;
    Ok(Json(TradeView {
        refunded_minor: trade.refunded_minor(),
        committed_minor: trade.committed_minor(),
        trade,
    }))
}
