//! The rest of a machine's life through the API: asking for its decommission, or for a
//! re-inventory, or for a re-provisioning.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;

use super::AppState;
use super::api::{NamedCaller, ReviewBody, Session, actor, intend};
use super::error::ApiError;
use crate::propose::Intent;
use axum::http::StatusCode;

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

#[utoipa::path(
    post,
    path = "/api/v1/machines/{mac}/reinventory",
    tag = "review",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    request_body(content = Option<Object>, content_type = "application/json", description = "optional: {\"actor\": …}"),
    responses(
        (status = 200, description = "asked for: the machine is `inventorying`; a Workflow boots it into discovery, its report brings it back to `provisioned`, and what changed is proposed as an update", body = Object),
        (status = 409, description = "not a provisioned machine, its rule does not set `reinventory: true`, or Registrar does not follow the cluster"),
        (status = 401, description = "no token, or not one that may do this"),
        (status = 403, description = "the caller's role does not allow it")
    ),
    security(("bearer" = []))
)]
pub async fn reinventory(
    State(state): State<AppState>,
    session: Session,
    caller: NamedCaller,
    Path(mac): Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Json<Value>, ApiError> {
    if !state.follows_cluster {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "re-inventory boots the machine through the cluster: it needs cluster.enabled and cluster.discovery.report_url",
        ));
    }
    intend(&state, &mac, actor(&session, &caller, &body), Intent::Reinventory).await
}

#[utoipa::path(
    post,
    path = "/api/v1/machines/{mac}/reprovision",
    tag = "review",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    request_body(content = Option<Object>, content_type = "application/json", description = "optional: {\"actor\": …}"),
    responses(
        (status = 200, description = "asked for: a proposal switches netboot on with a Workflow of a new name; merged, the machine is `applied` and follows that Workflow", body = Object),
        (status = 409, description = "neither provisioned nor failed, another change is asked for, or its workflow template would reuse the finished Workflow's name"),
        (status = 401, description = "no token, or not one that may do this"),
        (status = 403, description = "the caller's role does not allow it")
    ),
    security(("bearer" = []))
)]
pub async fn reprovision(
    State(state): State<AppState>,
    session: Session,
    caller: NamedCaller,
    Path(mac): Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Json<Value>, ApiError> {
    intend(&state, &mac, actor(&session, &caller, &body), Intent::Reprovision).await
}
