//! Liveness, readiness and metrics: unauthenticated, and cheap.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;
use crate::metrics::StateLabel;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the store answers.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.proposer.store().clone();
    match tokio::task::spawn_blocking(move || store.count_by_state()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n".to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.proposer.store().clone();
    if let Ok(Ok((counts, (queued, oldest)))) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((store.count_by_state()?, store.queue_summary()?))
    })
    .await
    {
        state.metrics.queue_length.set(queued as i64);
        let waited = oldest
            .map(|o| (chrono::Utc::now() - o).num_seconds().max(0))
            .unwrap_or(0);
        state.metrics.queue_oldest_seconds.set(waited);
        for s in crate::domain::State::ALL {
            let n = counts.iter().find(|(st, _)| *st == s).map(|(_, n)| *n).unwrap_or(0);
            state
                .metrics
                .machines
                .get_or_create(&StateLabel { state: s.to_string() })
                .set(n as i64);
        }
    }
    state.sync_forge_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.encode(),
    )
}
