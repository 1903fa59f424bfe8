//! Liveness, readiness and metrics, cheap to answer. Liveness and readiness are open (the
//! kubelet asks); `/metrics` takes a token (`auth::metrics`).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;
use crate::metrics::StateLabel;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "status",
    responses((status = 200, description = "the process answers", body = String, content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers and every pipeline the configuration enables is ready
/// (forge reachable and authenticated, cluster watch synced, DHCP capture open…); the body
/// names each one with what it is doing or why it is not ready.
///
/// `?check=store,gitops` limits the answer to the named checks: the Deployment's readiness
/// probe asks for `store` only, so that GitHub being down never takes the report webhook
/// and the console out of the Service, while people and monitors read everything.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "status",
    params(("check" = Option<String>, Query, description = "only these checks, comma-separated")),
    responses((status = 200, description = "every check ready", body = Object), (status = 503, description = "some check is not ready; the body says which and why"))
)]
pub async fn readyz(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    let store = state.proposer.store().clone();
    let answered = match tokio::task::spawn_blocking(move || store.count_by_state()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let store_check = crate::supervisor::Check {
        ready: answered.is_ok(),
        detail: answered.err().unwrap_or_else(|| "answering".into()),
        restarts: 0,
    };
    let mut checks: std::collections::BTreeMap<&str, crate::supervisor::Check> =
        state.readiness.snapshot().into_iter().collect();
    checks.insert("store", store_check);
    if let Some(only) = query.get("check") {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        checks.retain(|name, _| wanted.contains(name));
    }
    let ready = checks.values().all(|c| c.ready);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(serde_json::json!({"ready": ready, "checks": checks})))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = 401, description = "no token, or not one that may do this")),
    security(("metrics" = []))
)]
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
