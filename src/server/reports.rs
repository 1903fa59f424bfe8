//! `POST /api/v1/reports` (and `/register`): a discovery OS reports a machine's facts.
//! Parse and bound first; store only what parsed; wake the proposer; answer at once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::domain::Source;
use crate::sources::report::{self, ReportError};

/// Refuses a body whose declared length is over the limit before reading any of it, so a
/// client is told at once instead of after uploading megabytes. (Bodies without a length
/// are cut off by the body limit while being read.)
pub async fn refuse_declared_oversize(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        state.metrics.report("too_large");
        return Err(too_large(&state));
    }
    Ok(next.run(req).await)
}

fn too_large(state: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the report exceeds {} bytes", state.max_body_bytes),
    )
}

#[derive(Deserialize)]
pub struct ReportQuery {
    mac: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/reports",
    tag = "reports",
    params(("mac" = Option<String>, Query, description = "the MAC, when the body does not name it")),
    request_body(content = Object, content_type = "application/json", description = "{\"mac\": …, \"specs\": <lshw -json>} (or Tink Agent attributes); optional ip_link, dmidecode, lldp, bmc_address"),
    responses((status = 202, description = "stored; the proposal follows", body = Object), (status = 400, description = "not a report, naming what is wrong"), (status = 401, description = "no token, or not one that may do this"), (status = 403, description = "a per-machine token for another MAC"), (status = 413, description = "too big")),
    security(("report" = []))
)]
pub async fn post_report(
    State(state): State<AppState>,
    Query(query): Query<ReportQuery>,
    machine_token: Option<axum::Extension<super::auth::MachineToken>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            state.metrics.report("too_large");
            too_large(&state)
        } else {
            state.metrics.report("unreadable");
            ApiError::bad_request(format!("could not read the body: {e}"))
        }
    })?;
    let header_mac = headers
        .get("x-registrar-mac")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(query.mac);
    let parsed = report::parse(&body, header_mac.as_deref()).map_err(|e| match e {
        ReportError::Malformed(m) => {
            state.metrics.report("malformed");
            ApiError::bad_request(format!("the body is not valid JSON: {m}"))
        }
        ReportError::Invalid(m) => {
            state.metrics.report("invalid");
            ApiError::unprocessable(m)
        }
    })?;

    if let Some(axum::Extension(super::auth::MachineToken(allowed))) = machine_token
        && allowed != parsed.mac
    {
        state.metrics.report("wrong_machine");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token was issued for {allowed}, not {}", parsed.mac),
        ));
    }
    let store = state.proposer.store().clone();
    let by_machine = machine_token.is_some();
    let wait = state.decision_wait;
    let recorded = tokio::task::spawn_blocking(move || {
        let recorded = store.record_facts(parsed.mac, Source::Report, &parsed.facts, Utc::now())?;
        // The discovery action now waits for the review: its token must last the whole wait.
        if by_machine {
            store.extend_report_tokens(parsed.mac, Utc::now() + wait)?;
        }
        Ok::<_, crate::store::StoreError>(recorded)
    })
    .await
    .map_err(ApiError::internal)??;
    let result = if recorded.machine.suppressed {
        "suppressed"
    } else if recorded.queued {
        "accepted"
    } else {
        "unchanged"
    };
    state.metrics.report(result);
    if recorded.queued {
        state.proposer.wake();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "mac": recorded.machine.mac,
            "state": recorded.machine.state,
            "new": recorded.new,
            "queued": recorded.queued,
            "suppressed": recorded.machine.suppressed,
        })),
    ))
}

/// `GET /api/v1/reports/{mac}`: what the discovery action that waits should do next, and
/// only that: a reporter learns nothing else about any machine, and a per-machine token
/// reads its own machine only.
///
/// "reboot" comes only when rebooting works: with the cluster followed, once the approved
/// Hardware is in the cluster and the temporary objects are gone (state `applied`); without
/// it, Registrar cannot see the cluster and says "reboot" at the merge.
#[utoipa::path(
    get,
    path = "/api/v1/reports/{mac}",
    tag = "reports",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    responses((status = 200, description = "what the discovery action should do next: wait, reboot or stop", body = Object), (status = 401, description = "no token, or not one that may do this"), (status = 403, description = "a per-machine token for another MAC")),
    security(("report" = []))
)]
pub async fn report_state(
    State(state): State<AppState>,
    machine_token: Option<axum::Extension<super::auth::MachineToken>>,
    axum::extract::Path(mac): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    use crate::domain::State as S;
    let mac = crate::domain::Mac::parse(&mac).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(axum::Extension(super::auth::MachineToken(allowed))) = machine_token
        && allowed != mac
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token was issued for {allowed}, not {mac}"),
        ));
    }
    let store = state.proposer.store().clone();
    let machine = tokio::task::spawn_blocking(move || store.machine(mac))
        .await
        .map_err(ApiError::internal)??;
    let machine = machine.ok_or_else(|| ApiError::not_found(format!("no report for {mac}")))?;
    let (next, why) = match machine.state {
        S::Applied | S::Provisioned | S::Failed => ("reboot", "the approved Hardware is in the cluster"),
        S::Approved if !state.follows_cluster => ("reboot", "approved"),
        S::Approved => (
            "wait",
            "approved; waiting for the approved Hardware to be applied to the cluster",
        ),
        S::Rejected => ("poweroff", "rejected"),
        _ => ("wait", "waiting for the review"),
    };
    Ok(Json(
        json!({"mac": mac, "state": machine.state, "next": next, "reason": why}),
    ))
}

/// The same as `POST /api/v1/reports`, where older discovery scripts post.
#[utoipa::path(
    post,
    path = "/register",
    tag = "reports",
    request_body(content = Object, content_type = "application/json", description = "a report, as for /api/v1/reports"),
    responses((status = 202, description = "stored", body = Object), (status = 400, description = "not a report"), (status = 401, description = "no token")),
    security(("report" = []))
)]
pub async fn register(
    state: State<AppState>,
    query: Query<ReportQuery>,
    machine_token: Option<axum::Extension<super::auth::MachineToken>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    post_report(state, query, machine_token, headers, body).await
}
