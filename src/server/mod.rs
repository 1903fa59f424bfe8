//! The HTTP edge: parses, authenticates and hands over. No business logic lives here.

pub mod api;
mod audit;
pub mod auth;
pub mod console;
mod deliveries;
pub mod error;
mod forge_hooks;
mod github;
mod health;
mod lifecycle;
pub mod openapi;
mod reports;
pub mod sightings;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};

use crate::metrics::Metrics;
use crate::propose::Proposer;
pub use auth::{TokenSet, digest_hex};

#[derive(Clone)]
pub struct AppState {
    pub proposer: Arc<Proposer>,
    pub metrics: Arc<Metrics>,
    pub tokens: Arc<TokenSet>,
    pub max_body_bytes: usize,
    pub forge_kind: &'static str,
    pub github: Option<Arc<crate::propose::forge::github::events::GithubHooks>>,
    /// Forgejo's, Gitea's or GitLab's webhooks, with `forge.kind: gitea` or `gitlab`.
    pub forge_hooks: Option<Arc<crate::propose::forge::hooks::ForgeHooks>>,
    pub known: Arc<crate::domain::KnownMacs>,
    pub console: Arc<console::Console>,
    /// Set while serving: long-lived responses (server-sent events) end with it.
    pub shutdown: Option<crate::shutdown::Shutdown>,
    /// How long a discovery action waits for its review after reporting; its per-machine
    /// token is extended to that at the report.
    pub decision_wait: chrono::Duration,
    /// Whether Registrar sees the cluster, and so can tell a discovery action to reboot only
    /// once the approved Hardware is there.
    pub follows_cluster: bool,
    /// Every enabled pipeline's readiness, for `/readyz`.
    pub readiness: Arc<crate::supervisor::Readiness>,
    /// Where sightings forwarded by `registrar snoop` go; set while serving, when
    /// `auth.snoop_token` is configured.
    pub sightings: Option<tokio::sync::mpsc::Sender<(crate::domain::Mac, crate::domain::Sighting)>>,
}

impl AppState {
    /// Brings the GitHub client's own counters into the exported metrics (they are kept
    /// where the calls happen, without a dependency on the metrics registry).
    pub fn sync_forge_metrics(&self) {
        let Some(hooks) = &self.github else { return };
        let c = hooks.forge.counters();
        let m = &self.metrics;
        m.forge_rate_limit_remaining
            .set(c.remaining.load(std::sync::atomic::Ordering::Relaxed));
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        for (family, kind, total) in [
            (&m.forge_errors, "error", load(&c.errors)),
            (&m.forge_errors, "rate_limited", load(&c.rate_limited)),
            (&m.forge_requests, "read", load(&c.reads)),
            (&m.forge_requests, "write", load(&c.writes)),
            (&m.forge_requests, "create", load(&c.creates)),
            (&m.forge_requests, "not_modified", load(&c.not_modified)),
        ] {
            let counter = family.get_or_create(&crate::metrics::KindLabel { kind: kind.into() });
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }
}

pub fn router(state: AppState) -> Router {
    // Each group's routes come from openapi.rs, which also describes them: here they only
    // get their limits and their authentication.
    let reports = openapi::reports()
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .route_layer(from_fn_with_state(state.clone(), reports::refuse_declared_oversize))
        .route_layer(from_fn_with_state(state.clone(), auth::reporter));
    // 512 sightings of at most ~1.2 KB each (every field at its longest) fit in 1 MiB.
    let sightings = openapi::sightings()
        .layer(DefaultBodyLimit::max(1 << 20))
        .route_layer(from_fn_with_state(state.clone(), auth::snooper));
    let operator = openapi::operator()
        .layer(DefaultBodyLimit::max(64 * 1024))
        .route_layer(from_fn_with_state(state.clone(), auth::operator));
    // Imports are bigger than any other API body: their own limit, checked before reading.
    let imports = openapi::imports()
        .layer(DefaultBodyLimit::max(console::MAX_IMPORT_BYTES))
        .route_layer(from_fn_with_state(state.clone(), api::refuse_oversize_import))
        .route_layer(from_fn_with_state(state.clone(), auth::operator));
    let webhooks = openapi::webhooks().layer(DefaultBodyLimit::max(2 << 20));
    let metrics = openapi::metrics().route_layer(from_fn_with_state(state.clone(), auth::metrics));
    let (api, _) = openapi::health()
        .merge(metrics)
        .merge(reports)
        .merge(sightings)
        .merge(imports)
        .merge(operator)
        .merge(webhooks)
        .split_for_parts();
    api.merge(console::router(state.clone()))
        .layer(from_fn(security_headers))
        .with_state(state)
}

/// Headers every answer carries; the CSP matters for the console, and costs the API nothing.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(console::CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}
