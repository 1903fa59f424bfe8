//! `POST /webhooks/gitea` and `POST /webhooks/gitlab`: Forgejo's, Gitea's and GitLab's
//! deliveries, one path for all of them. As for GitHub's: the secret first (over the raw
//! body), then only deliveries about this repository, each delivery once, an answer at once
//! and the work in the background; a delivery only makes Registrar look
//! (`forge/hooks.rs`), so a lost one costs a reconcile's wait, nothing more.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

#[utoipa::path(
    post,
    path = "/webhooks/gitea",
    tag = "forge",
    request_body(content = Object, content_type = "application/json", description = "a Forgejo or Gitea delivery (X-Gitea-Event or X-Forgejo-Event, X-Gitea-Delivery, X-Gitea-Signature or X-Forgejo-Signature)"),
    responses((status = 200, description = "a duplicate delivery", body = Object), (status = 202, description = "accepted, or ignored (another repository)", body = Object), (status = 400, description = "malformed, or the gitea forge is not configured"), (status = 401, description = "bad signature"))
)]
pub async fn gitea(
    state: State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    receive("gitea", state, headers, body).await
}

#[utoipa::path(
    post,
    path = "/webhooks/gitlab",
    tag = "forge",
    request_body(content = Object, content_type = "application/json", description = "a GitLab delivery (X-Gitlab-Event, X-Gitlab-Event-UUID, X-Gitlab-Token)"),
    responses((status = 200, description = "a duplicate delivery", body = Object), (status = 202, description = "accepted, or ignored (another project)", body = Object), (status = 400, description = "malformed, or the gitlab forge is not configured"), (status = 401, description = "missing or wrong secret token"))
)]
pub async fn gitlab(
    state: State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    receive("gitlab", state, headers, body).await
}

async fn receive(
    kind: &str,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(hooks) = state.forge_hooks.clone().filter(|h| h.deliveries.kind() == kind) else {
        // Served either way (the description lists it): a forge that sends here is misconfigured.
        return Err(ApiError::bad_request(format!(
            "forge.kind is not {kind}: this Registrar takes no {kind} deliveries"
        )));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let deliveries = &hooks.deliveries;
    if !deliveries.verify(&header, &body) {
        state.metrics.webhook("bad_signature");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!(
                "missing or wrong {} for this webhook's secret",
                deliveries.signature_header()
            ),
        ));
    }
    let Some((event, delivery)) = deliveries.event_and_id(&header, &body) else {
        state.metrics.webhook("malformed");
        return Err(ApiError::bad_request(
            "the delivery's event and id headers are required",
        ));
    };
    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        state.metrics.webhook("malformed");
        ApiError::bad_request(format!("the delivery is not JSON: {e}"))
    })?;
    if !deliveries.is_ours(&payload) {
        state.metrics.webhook("ignored");
        return Ok((StatusCode::ACCEPTED, Json(json!({"ignored": "another repository"}))));
    }
    let look = deliveries.read(&event, &payload).map_err(|e| {
        state.metrics.webhook("malformed");
        ApiError::bad_request(e)
    })?;
    let key = format!("delivery:{kind}:{delivery}");
    let work = async move { hooks.handle(&look).await };
    super::deliveries::accept_once(&state, key, event, delivery, work).await
}
