//! `registrar snoop`: DHCP snooping on its own, forwarding what it notices to Registrar's
//! API. Only the capture needs the provisioning network's node (its network namespace,
//! port 67 or `CAP_NET_RAW`); run this there — a DaemonSet with `hostNetwork` — and the
//! API and console stay on the pod network behind a Service. The snooper opens no port.
//!
//! It knows no registered MACs: the API skips those. It debounces per MAC exactly as the
//! in-process listener does, keeps at most `BACKLOG` sightings while the API cannot be
//! reached (the listener drops, and counts, what does not fit), and sends the rest in
//! batches with its own token, which allows nothing but this.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

use super::{Debouncer, Snooper, listener};
use crate::config::Config;
use crate::domain::{KnownMacs, Mac, Sighting};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Sightings held while the API is unreachable.
const BACKLOG: usize = 4096;
/// Sightings per request (the API takes up to `server::sightings::MAX_BATCH`).
const BATCH: usize = 256;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// Snoops until shutdown, forwarding to `dhcp.forward_to`.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let api = config.dhcp.forward_to.trim_end_matches('/').to_string();
    if api.is_empty() {
        anyhow::bail!(
            "registrar snoop needs dhcp.forward_to (or REGISTRAR_DHCP_FORWARD_TO): the URL of the Registrar API to forward sightings to"
        );
    }
    let token = config.snoop_token()?.context(
        "registrar snoop needs auth.snoop_token_file (or REGISTRAR_SNOOP_TOKEN), the same token the API is given",
    )?;
    let input = listener::open(&config.dhcp)?;
    let snooper = Snooper::new(
        config.dhcp.filters()?,
        Debouncer::new(
            Duration::from_secs(config.dhcp.debounce_seconds),
            config.dhcp.max_tracked_macs,
            std::time::Instant::now(),
        ),
        Arc::new(KnownMacs::default()),
    );
    let (tx, rx) = mpsc::channel(BACKLOG);
    let endpoint = format!("{api}/api/v1/sightings");
    tracing::info!(%endpoint, "registrar snoop: forwarding DHCP sightings");
    let forwarding = tokio::spawn(forward(rx, endpoint, token, shutdown.clone()));
    let result = listener::run(input, snooper, tx, Arc::new(Metrics::new()), shutdown).await;
    // The listener has stopped and dropped its sender: the forwarder sends what is left.
    let _ = tokio::time::timeout(Duration::from_secs(5), forwarding).await;
    result
}

enum Failure {
    /// Worth sending again: the API is down, busy or unreachable.
    Retry(String),
    /// Sending again cannot help (a wrong token, a refused batch).
    Refused(String),
}

async fn forward(mut rx: mpsc::Receiver<(Mac, Sighting)>, endpoint: String, token: SecretString, shutdown: Shutdown) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let mut batch: Vec<(Mac, Sighting)> = Vec::new();
    let mut wait = FIRST_RETRY;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(seen) => batch.push(seen),
                None => return,
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(seen) => batch.push(seen),
                Err(_) => break,
            }
        }
        match send(&client, &endpoint, &token, &batch).await {
            Ok(accepted) => {
                tracing::debug!(sent = batch.len(), accepted, "sightings forwarded");
                batch.clear();
                wait = FIRST_RETRY;
            }
            Err(Failure::Refused(why)) => {
                tracing::error!(dropped = batch.len(), %why, "the API refused forwarded sightings");
                batch.clear();
            }
            Err(Failure::Retry(why)) => {
                tracing::warn!(held = batch.len(), %why, retry_in = ?wait, "cannot forward sightings yet");
                if shutdown.is_fired() {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LAST_RETRY);
            }
        }
    }
}

async fn send(
    client: &reqwest::Client,
    endpoint: &str,
    token: &SecretString,
    batch: &[(Mac, Sighting)],
) -> Result<u64, Failure> {
    let body = serde_json::json!({
        "sightings": batch.iter().map(|(mac, sighting)| serde_json::json!({"mac": mac.to_string(), "sighting": sighting})).collect::<Vec<_>>(),
    });
    let resp = client
        .post(endpoint)
        .bearer_auth(token.expose_secret())
        .json(&body)
        .send()
        .await
        .map_err(|e| Failure::Retry(e.to_string()))?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = answer["message"].as_str().unwrap_or_default().to_string();
    if status.is_success() {
        Ok(answer["accepted"].as_u64().unwrap_or_default())
    } else if status.is_server_error() || matches!(status.as_u16(), 401 | 403 | 404 | 408 | 413 | 429) {
        // Worth sending again, later: an API restarting, a token being rotated on both
        // sides, an API that does not take sightings yet (404) — what is held is kept.
        Err(Failure::Retry(format!("{status}: {message}")))
    } else {
        Err(Failure::Refused(format!("{status}: {message}")))
    }
}
