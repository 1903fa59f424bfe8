//! `POST /webhooks/gitea`: Forgejo's and Gitea's deliveries. As for GitHub's: the signature
//! over the raw body first, then only deliveries about this repository, each delivery once,
//! an answer at once and the work in the background; a delivery only makes Registrar look
//! (`forge/gitea/hooks.rs`), so a lost one costs a reconcile's wait, nothing more.

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
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(hooks) = state.gitea.clone() else {
        // Served either way (the description lists it): a forge that sends here is misconfigured.
        return Err(ApiError::bad_request(
            "forge.kind is not gitea: this Registrar takes no Forgejo/Gitea deliveries",
        ));
    };
    let header = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
            .map(str::to_string)
    };
    if !hooks.verify(header(&["x-forgejo-signature", "x-gitea-signature"]).as_deref(), &body) {
        state.metrics.webhook("bad_signature");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing or wrong X-Gitea-Signature for this webhook's secret",
        ));
    }
    let (Some(event), Some(delivery)) = (
        header(&["x-forgejo-event", "x-gitea-event"]),
        header(&["x-forgejo-delivery", "x-gitea-delivery"]),
    ) else {
        state.metrics.webhook("malformed");
        return Err(ApiError::bad_request("X-Gitea-Event and X-Gitea-Delivery are required"));
    };
    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        state.metrics.webhook("malformed");
        ApiError::bad_request(format!("the delivery is not JSON: {e}"))
    })?;
    if !hooks.is_ours(&payload) {
        state.metrics.webhook("ignored");
        return Ok((StatusCode::ACCEPTED, Json(json!({"ignored": "another repository"}))));
    }
    let look = hooks.read(&event, &payload).map_err(|e| {
        state.metrics.webhook("malformed");
        ApiError::bad_request(e)
    })?;
    let key = format!("delivery:gitea:{delivery}");
    let work = async move { hooks.handle(&look).await };
    super::deliveries::accept_once(&state, key, event, delivery, work).await
}
