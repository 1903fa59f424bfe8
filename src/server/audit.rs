//! The audit trail through the API: who did what, newest first.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

#[derive(Deserialize, Default, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only this person's steps (`console:alice`, `api:bob`, `github:carol`).
    actor: Option<String>,
    /// Only entries older than this id (the previous page's last).
    before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "machines",
    params(AuditQuery),
    responses((status = 200, description = "people's steps, newest first: {entries: [{id, at, actor, mac, action}]}; kept when a machine is forgotten", body = Object), (status = 401, description = "no token")),
    security(("bearer" = []))
)]
pub async fn audit(State(state): State<AppState>, Query(q): Query<AuditQuery>) -> Result<Json<Value>, ApiError> {
    let store = state.proposer.store().clone();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = tokio::task::spawn_blocking(move || store.audit(q.actor.as_deref(), q.before, limit))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(json!({ "entries": entries })))
}
