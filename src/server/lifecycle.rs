//! The rest of a machine's life through the API: asking for its decommission.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;

use super::AppState;
use super::api::{NamedCaller, ReviewBody, Session, actor, intend};
use super::error::ApiError;
use crate::propose::Intent;

#[utoipa::path(
    post,
    path = "/api/v1/machines/{mac}/decommission",
    tag = "review",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    request_body(content = Option<Object>, content_type = "application/json", description = "optional: {\"actor\": …}"),
    responses(
        (status = 200, description = "asked for: a proposal that removes the machine's files follows; merged and applied, the machine is decommissioned", body = Object),
        (status = 409, description = "git does not hold this machine (not approved yet, or decommissioned already)"),
        (status = 401, description = "no token, or not one that may do this"),
        (status = 403, description = "the caller's role does not allow it")
    ),
    security(("bearer" = []))
)]
pub async fn decommission(
    State(state): State<AppState>,
    session: Session,
    caller: NamedCaller,
    Path(mac): Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Json<Value>, ApiError> {
    intend(&state, &mac, actor(&session, &caller, &body), Intent::Decommission).await
}
