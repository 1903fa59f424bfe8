//! What every forge's webhook does once a delivery is verified and read: keep it once per
//! delivery id, answer at once, and do the work in the background (forges give a delivery
//! seconds; the reconcile catches up whatever is lost).

use std::future::Future;

use axum::Json;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::propose::ProposeError;

/// `key` names the delivery in the store's once-table; `work` runs only the first time.
pub(super) async fn accept_once(
    state: &AppState,
    key: String,
    event: String,
    delivery: String,
    work: impl Future<Output = Result<(), ProposeError>> + Send + 'static,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let store = state.proposer.store().clone();
    let first = tokio::task::spawn_blocking(move || store.remember_once(&key, Utc::now()))
        .await
        .map_err(ApiError::internal)??;
    if !first {
        state.metrics.webhook("duplicate");
        return Ok((StatusCode::OK, Json(json!({"duplicate": delivery}))));
    }
    state.metrics.webhook("accepted");
    let answer = Json(json!({"accepted": delivery}));
    tokio::spawn(async move {
        if let Err(e) = work.await {
            tracing::warn!(%event, %delivery, error = %e, "webhook handling failed; the reconcile will retry");
        }
    });
    Ok((StatusCode::ACCEPTED, answer))
}
