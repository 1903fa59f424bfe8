//! The long-running loops between the sources and the store, and between the store and the
//! forge. Each returns only at shutdown (Ok) or on a failure the supervisor restarts it for,
//! and keeps its own line of `/readyz` true.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::discovery::DiscoveryQueue;
use crate::domain::{KnownMacs, Mac, Sighting, Source};
use crate::metrics::Metrics;
use crate::propose::Proposer;
use crate::propose::forge::github::events::GithubHooks;
use crate::shutdown::Shutdown;
use crate::sources::dhcp::Debouncer;
use crate::store::StoreError;
use crate::supervisor::Readiness;

/// Once per start: proposals whose branches outlived the store (a lost volume) come back.
/// Retried until the remote and the forge answer.
pub async fn adopt_orphans(proposer: Arc<Proposer>, retry: Duration, shutdown: Shutdown) -> anyhow::Result<()> {
    loop {
        match proposer.adopt_orphan_branches().await {
            Ok(0) => return Ok(()),
            Ok(n) => {
                tracing::info!(
                    adopted = n,
                    "rebuilt the store's record of proposals from their branches"
                );
                return Ok(());
            }
            Err(e) => tracing::warn!(error = %e, "could not look for proposals the store lost; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.wait() => return Ok(()),
        }
    }
}

/// Keeps the known-MAC set in step with the GitOps base branch, re-reading the manifests
/// only when their directory's tree changed, and the address pools with their file there
/// (`ipam.file`). Its readiness is the remote's: fetched or not. It looks every 30 s, and
/// at once when a push webhook says the base moved.
pub async fn index_gitops(
    proposer: Arc<Proposer>,
    known: Arc<KnownMacs>,
    metrics: Arc<Metrics>,
    dir: String,
    pools_file: Option<String>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut last = None;
    let mut pools_file = pools_file.map(super::pools_file::PoolsFile::new);
    if let Some(file) = &pools_file {
        readiness.not_ready("ipam", format!("{} not read yet", file.path()));
    }
    loop {
        let (git, d) = (proposer.git().clone(), dir.clone());
        let result = tokio::task::spawn_blocking(move || {
            git.fetch()?;
            git.registered_macs(&d, last)
        })
        .await?;
        match result {
            Ok(indexed) => {
                if let Some((tree, found)) = indexed {
                    tracing::debug!(
                        macs = found.macs.len(),
                        addresses = found.addresses.len(),
                        "indexed the base branch's Hardware"
                    );
                    known.replace("gitops", found.macs);
                    known.replace_addresses("gitops", found.addresses);
                    known.replace_names("gitops", found.names);
                    known.replace_bmcs("gitops", found.bmcs);
                    metrics.known_macs.set(known.len() as i64);
                    last = Some(tree);
                }
                readiness.ready("gitops", "base branch fetched and indexed");
                if let Some(file) = pools_file.as_mut() {
                    file.refresh(&proposer, &readiness).await;
                }
            }
            Err(e) => {
                readiness.not_ready("gitops", format!("could not fetch the GitOps repository: {e}"));
                tracing::warn!(error = %e, "could not index the GitOps base branch");
            }
        }
        // A remote that failed is tried again soon, so readiness recovers within seconds.
        let pause = if readiness.snapshot().get("gitops").is_some_and(|c| c.ready) {
            30
        } else {
            2
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(pause)) => {}
            _ = proposer.base_moved_notified() => {}
            _ = shutdown.wait() => return Ok(()),
        }
    }
}

/// Stores what the DHCP listener saw; one log line per machine it had never seen.
pub async fn record_sightings(
    proposer: Arc<Proposer>,
    metrics: Arc<Metrics>,
    discovery: Option<Arc<DiscoveryQueue>>,
    mut rx: tokio::sync::mpsc::Receiver<(Mac, Sighting)>,
) {
    while let Some((mac, sighting)) = rx.recv().await {
        let store = proposer.store().clone();
        let s = sighting.clone();
        match tokio::task::spawn_blocking(move || store.record_detection(mac, Source::Dhcp, Some(&s), Utc::now())).await
        {
            Ok(Ok(recorded)) => {
                metrics.detections_evicted.inc_by(recorded.evicted);
                if recorded.new {
                    metrics.dhcp_new_macs.inc();
                    tracing::info!(
                        %mac,
                        arch = sighting.arch.as_deref().unwrap_or("unknown"),
                        uefi = ?sighting.uefi,
                        netboot = sighting.netboot,
                        location = sighting.location().as_deref().unwrap_or("direct"),
                        "new machine seen by DHCP"
                    );
                }
                if recorded.queued {
                    proposer.wake();
                }
                if let Some(d) = &discovery {
                    d.notice(&recorded.machine).await;
                }
            }
            Ok(Err(StoreError::Flood(why))) => {
                metrics.detections_refused.inc();
                tracing::debug!(%mac, %why, "new machine not recorded");
            }
            Ok(Err(e)) => tracing::warn!(%mac, error = %e, "could not record a DHCP sighting"),
            Err(e) => tracing::warn!(%mac, error = %e, "DHCP sighting task failed"),
        }
    }
}

/// Stores the machines Smee could not find Hardware for, debounced per MAC.
pub async fn record_smee(
    proposer: Arc<Proposer>,
    metrics: Arc<Metrics>,
    known: Arc<KnownMacs>,
    discovery: Option<Arc<DiscoveryQueue>>,
    mut rx: tokio::sync::mpsc::Receiver<Mac>,
) {
    let mut debounce = Debouncer::new(Duration::from_secs(60), 65_536, std::time::Instant::now());
    while let Some(mac) = rx.recv().await {
        if !debounce.admit(mac, std::time::Instant::now()) || known.contains(&mac) {
            continue;
        }
        let store = proposer.store().clone();
        match tokio::task::spawn_blocking(move || store.record_detection(mac, Source::Smee, None, Utc::now())).await {
            Ok(Ok(recorded)) => {
                metrics.detections_evicted.inc_by(recorded.evicted);
                if recorded.new {
                    tracing::info!(%mac, "new machine in Smee's log");
                }
                if let Some(d) = &discovery {
                    d.notice(&recorded.machine).await;
                }
            }
            Ok(Err(StoreError::Flood(why))) => {
                metrics.detections_refused.inc();
                tracing::debug!(%mac, %why, "new machine not recorded");
            }
            Ok(Err(e)) => tracing::warn!(%mac, error = %e, "could not record a machine from Smee's log"),
            Err(e) => tracing::warn!(%mac, error = %e, "Smee log task failed"),
        }
    }
}

/// Stores the machines Tinkerbell's auto discovery created Hardware for, as reports.
pub async fn record_discovered(
    proposer: Arc<Proposer>,
    mut rx: tokio::sync::mpsc::Receiver<crate::cluster::hardware::Noticed>,
) {
    while let Some(crate::cluster::hardware::Noticed(mac, facts)) = rx.recv().await {
        let store = proposer.store().clone();
        match tokio::task::spawn_blocking(move || store.record_facts(mac, Source::AutoDiscovery, &facts, Utc::now()))
            .await
        {
            Ok(Ok(r)) => {
                if r.new {
                    tracing::info!(%mac, "machine found by Tinkerbell's auto discovery");
                }
                if r.queued {
                    proposer.wake();
                }
            }
            Ok(Err(e)) => tracing::warn!(%mac, error = %e, "could not record an auto-discovered machine"),
            Err(e) => tracing::warn!(%mac, error = %e, "auto discovery task failed"),
        }
    }
}

pub async fn refresh_git_token(hooks: &GithubHooks) -> anyhow::Result<()> {
    if let Some(token) = hooks.forge.installation_token().await? {
        hooks.proposer.git().set_password(token);
    }
    Ok(())
}

/// Creates the labels Registrar uses, then reconciles pull requests periodically, and keeps
/// a GitHub App's git token fresh (they expire after an hour). Ready while GitHub answers
/// authenticated calls.
pub async fn run_github(
    hooks: Arc<GithubHooks>,
    every: Duration,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut labels_done = false;
    let mut token_at: Option<std::time::Instant> = None;
    loop {
        let pass: anyhow::Result<usize> = async {
            if token_at.is_none_or(|t| t.elapsed() > Duration::from_secs(40 * 60)) {
                refresh_git_token(&hooks)
                    .await
                    .map_err(|e| anyhow::anyhow!("installation token: {e}"))?;
                token_at = Some(std::time::Instant::now());
            }
            if !labels_done {
                hooks
                    .forge
                    .ensure_labels(hooks.proposer.renderer().workflows())
                    .await
                    .map_err(|e| anyhow::anyhow!("creating Registrar's labels: {e}"))?;
                labels_done = true;
            }
            Ok(hooks.reconcile().await?)
        }
        .await;
        match pass {
            Ok(n) => {
                tracing::debug!(pull_requests = n, "reconciled with GitHub");
                readiness.ready("forge", format!("GitHub answers; {n} pull request(s) reconciled"));
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "GitHub pass failed; retrying");
                readiness.not_ready("forge", format!("GitHub: {e:#}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return Ok(()),
        }
    }
}
