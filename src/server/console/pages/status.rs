//! The status page and the live-update event stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use minijinja::context;

use super::{PageResult, page, run, store_error};
use crate::metrics::KindLabel;
use crate::server::AppState;
use crate::server::console::session::Operator;
use crate::server::console::view::ago;

pub async fn status(State(state): State<AppState>, Extension(op): Extension<Operator>) -> PageResult {
    let store = state.proposer.store().clone();
    let loaded = run(move || {
        let (n, oldest) = store.queue_summary()?;
        let head = store.pending(1)?.first().map(|p| p.mac);
        let err = match head {
            Some(mac) => store.machine(mac)?.and_then(|m| m.last_error.map(|e| (mac, e))),
            None => None,
        };
        Ok((n, oldest, err))
    })
    .await;
    let (n, oldest, err) = loaded.map_err(|e| store_error(&state, &op, &e))?;
    state.sync_forge_metrics();
    let m = &state.metrics;
    let kind = |k: &str| m.forge_errors.get_or_create(&KindLabel { kind: k.into() }).get();
    let now = Utc::now();
    page(
        &state,
        "status.html",
        context! {
            title => "Status", nav => "status", user => &op.user, csrf => &op.csrf,
            queue => context! {
                length => n, oldest => oldest.map(|o| o.to_rfc3339()), oldest_ago => oldest.map(|o| ago(o, now)),
                last_error => err.as_ref().map(|e| &e.1), last_error_mac => err.as_ref().map(|e| e.0.to_string()),
            },
            forge => state.forge_kind, base => state.proposer.git().base(),
            forge_remaining => m.forge_rate_limit_remaining.get(), forge_rate_limited => kind("rate_limited"), forge_errors => kind("error"),
            cluster_enabled => state.console.cluster_enabled, cluster_up => m.cluster_watch_up.get() == 1,
            known => state.known.counts().into_iter().map(|(k, n)| (k.to_string(), n)).collect::<Vec<_>>(),
            dhcp => context! {
                up => m.dhcp_listener_up.get() == 1, packets => m.dhcp_packets.get(), parsed => m.dhcp_parsed.get(),
                new_macs => m.dhcp_new_macs.get(), tracked => m.dhcp_tracked_macs.get(),
            },
        },
    )
}

/// Server-sent events: `changed` whenever the store changed, coalesced; ends at shutdown so
/// a graceful stop is not held open by browsers.
pub async fn events(State(state): State<AppState>) -> Response {
    use std::sync::atomic::Ordering;
    let streams = state.console.streams.clone();
    if streams.fetch_add(1, Ordering::SeqCst) >= super::super::MAX_STREAMS {
        streams.fetch_sub(1, Ordering::SeqCst);
        // The pages work without live updates; the script retries later.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            "too many live-update streams open\n",
        )
            .into_response();
    }
    /// Gives the stream's slot back when the browser goes away.
    struct Slot(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let slot = Slot(streams);
    let rx = state.proposer.store().changes();
    let stop = state.shutdown.clone();
    let stream = futures::stream::unfold((rx, stop, slot), |(mut rx, stop, slot)| async move {
        let stopped = async {
            match &stop {
                Some(s) => s.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rx.changed() => changed.ok()?,
            _ = stopped => return None,
        }
        // Bursts (an import, a drain) become one event.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = *rx.borrow_and_update();
        Some((
            Ok::<_, Infallible>(Event::default().event("changed").data(n.to_string())),
            (rx, stop, slot),
        ))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}
