//! `POST /webhooks/github`: verify the signature over the raw body before parsing anything,
//! drop what is not ours, deduplicate on the delivery id, answer at once and work in the
//! background (GitHub gives a delivery 10 s and never retries a failed one; the reconcile
//! catches up whatever is lost).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::propose::forge::github::events::Delivery;

#[utoipa::path(
    post,
    path = "/webhooks/github",
    tag = "forge",
    request_body(content = Object, content_type = "application/json", description = "a GitHub delivery (X-GitHub-Event, X-GitHub-Delivery, X-Hub-Signature-256)"),
    responses((status = 200, description = "ping, or a duplicate delivery", body = Object), (status = 202, description = "accepted, or ignored (another repository)", body = Object), (status = 400, description = "malformed"), (status = 401, description = "bad signature"))
)]
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(hooks) = state.github.clone() else {
        return Err(ApiError::not_found("the github forge is not configured"));
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if !hooks.verify(header("x-hub-signature-256"), &body) {
        state.metrics.webhook("bad_signature");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing or wrong X-Hub-Signature-256 for this webhook's secret",
        ));
    }
    let (Some(event), Some(delivery)) = (
        header("x-github-event").map(str::to_string),
        header("x-github-delivery").map(str::to_string),
    ) else {
        state.metrics.webhook("malformed");
        return Err(ApiError::bad_request(
            "X-GitHub-Event and X-GitHub-Delivery are required",
        ));
    };
    if event == "ping" {
        state.metrics.webhook("ping");
        return Ok((StatusCode::OK, Json(json!({"ok": true, "event": "ping"}))));
    }
    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        state.metrics.webhook("malformed");
        ApiError::bad_request(format!("the delivery is not JSON: {e}"))
    })?;
    if !hooks.is_ours(&payload) {
        state.metrics.webhook("ignored");
        return Ok((StatusCode::ACCEPTED, Json(json!({"ignored": "another repository"}))));
    }
    let read = Delivery::read(&event, &body).map_err(|e| {
        state.metrics.webhook("malformed");
        ApiError::bad_request(format!("the delivery is not a GitHub {event} event: {e}"))
    })?;
    let key = format!("delivery:{}:{delivery}", header("x-github-hook-id").unwrap_or("-"));
    let work = async move { hooks.handle(&read).await };
    super::deliveries::accept_once(&state, key, event, delivery, work).await
}
