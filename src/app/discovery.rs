//! Booting unknown machines into discovery, within a bound: a machine noticed while every
//! slot is taken waits (state `waiting`, metric `registrar_discovery_waiting`) and starts as
//! soon as a slot frees up, whether or not it is seen again. Temporary objects of a machine
//! that never reported expire after `ttl_seconds`; a machine that reported keeps them (and
//! its token) for the whole wait for its review.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::cluster::discovery::Discovery;
use crate::domain::{Mac, Machine, Sighting, State};
use crate::metrics::Metrics;
use crate::propose::Proposer;
use crate::shutdown::Shutdown;
use crate::store::{MachineQuery, Sort, StoreError};
use crate::supervisor::Readiness;

pub struct DiscoveryQueue {
    proposer: Arc<Proposer>,
    discovery: Discovery,
    metrics: Arc<Metrics>,
    /// A MAC that found a home while it waited (a Hardware applied, a manifest merged) is
    /// never given temporary Hardware: two Hardware with one MAC and Smee answers neither.
    known: Arc<crate::domain::KnownMacs>,
    wake: tokio::sync::Notify,
}

/// How often the queue looks for free slots and expired objects when nothing wakes it.
const PASS: Duration = Duration::from_secs(2);

impl DiscoveryQueue {
    pub fn new(
        proposer: Arc<Proposer>,
        discovery: Discovery,
        metrics: Arc<Metrics>,
        known: Arc<crate::domain::KnownMacs>,
    ) -> Self {
        DiscoveryQueue {
            proposer,
            discovery,
            metrics,
            known,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// A source noticed `machine`: boot it into discovery now, or queue it.
    pub async fn notice(&self, machine: &Machine) {
        if machine.state != State::Detected
            || machine.facts.is_some()
            || machine.suppressed
            || self.known.contains(&machine.mac)
        {
            return;
        }
        let sighting = machine.sighting.clone().unwrap_or_default();
        if let Err(e) = self.start_or_queue(machine.mac, &sighting).await {
            tracing::warn!(mac = %machine.mac, error = %format!("{e:#}"), "could not start discovery; it waits");
        }
    }

    /// Takes a slot for `mac` if one is free (true), or leaves it waiting for one (false).
    async fn start_or_queue(&self, mac: Mac, sighting: &Sighting) -> anyhow::Result<bool> {
        // Without its pools, the temporary Hardware would get no address Smee serves: it
        // waits for them like for a slot, and starts when the queue finds them read.
        if let Some(source) = self.proposer.pools_awaited() {
            let cause = format!("waiting for the address pools: {source} is not read yet");
            self.move_if(mac, State::Detected, State::Waiting, &cause).await?;
            return Ok(false);
        }
        let _slots = self.discovery.slot_guard().await;
        let max = self.discovery.settings().max_machines;
        if self.discovery.count().await? >= max {
            let cause = format!("every discovery slot is taken (cluster.discovery.max_machines: {max})");
            self.move_if(mac, State::Detected, State::Waiting, &cause).await?;
            return Ok(false);
        }
        // The token's hash is stored before anything that carries the token exists.
        let token = hex::encode(rand::random::<[u8; 24]>());
        let expires = Utc::now() + self.discovery.settings().ttl;
        let (store, hash) = (self.proposer.store().clone(), crate::server::digest_hex(&token));
        tokio::task::spawn_blocking(move || store.add_report_token(mac, &hash, expires)).await??;
        let address = self.proposer.discovery_address(mac).await?;
        self.discovery
            .create(&mac, Some(sighting), &token, expires, address.as_ref())
            .await?;
        let store = self.proposer.store().clone();
        tokio::task::spawn_blocking(move || {
            if let Some(m) = store.machine(mac)?
                && matches!(m.state, State::Detected | State::Waiting)
            {
                store.transition(
                    mac,
                    State::Discovering,
                    "discovery objects created",
                    "registrar",
                    Utc::now(),
                )?;
            }
            Ok::<_, StoreError>(())
        })
        .await??;
        tracing::info!(%mac, "booting into discovery");
        Ok(true)
    }

    async fn move_if(&self, mac: Mac, from: State, to: State, cause: &str) -> anyhow::Result<()> {
        let (store, cause) = (self.proposer.store().clone(), cause.to_string());
        tokio::task::spawn_blocking(move || {
            if store.machine(mac)?.is_some_and(|m| m.state == from) {
                store.transition(mac, to, &cause, "registrar", Utc::now())?;
            }
            Ok::<_, StoreError>(())
        })
        .await??;
        Ok(())
    }

    /// The queue's pipeline: expires what outlived its time, then gives free slots to the
    /// machines that have waited longest.
    pub async fn run(&self, readiness: Arc<Readiness>, shutdown: Shutdown) -> anyhow::Result<()> {
        loop {
            match self.pass().await {
                Ok(waiting) => readiness.ready("discovery", format!("{waiting} machine(s) waiting for a slot")),
                Err(e) => readiness.not_ready("discovery", format!("{e:#}")),
            }
            tokio::select! {
                _ = tokio::time::sleep(PASS) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.wait() => return Ok(()),
            }
        }
    }

    async fn pass(&self) -> anyhow::Result<u64> {
        self.sweep().await?;
        let max = self.discovery.settings().max_machines;
        let free = max.saturating_sub(self.discovery.count().await?);
        if free > 0 {
            let store = self.proposer.store().clone();
            let waiting = tokio::task::spawn_blocking(move || {
                store.machines(&MachineQuery {
                    state: Some(State::Waiting),
                    sort: Sort::FirstSeen,
                    descending: false,
                    limit: free as u32,
                    ..Default::default()
                })
            })
            .await??;
            for m in waiting {
                if m.suppressed || m.facts.is_some() {
                    continue;
                }
                if self.known.contains(&m.mac) {
                    let cause = "a Hardware or a manifest holds its MAC now: it needs no discovery";
                    self.move_if(m.mac, State::Waiting, State::Detected, cause).await?;
                    continue;
                }
                if !self
                    .start_or_queue(m.mac, &m.sighting.clone().unwrap_or_default())
                    .await?
                {
                    break;
                }
            }
        }
        let store = self.proposer.store().clone();
        let waiting = tokio::task::spawn_blocking(move || {
            store.count_machines(&MachineQuery {
                state: Some(State::Waiting),
                ..Default::default()
            })
        })
        .await??;
        self.metrics.discovery_waiting.set(waiting as i64);
        Ok(waiting)
    }

    /// Removes temporary objects whose time is up: a machine that never reported gets
    /// `ttl_seconds`; one that reported keeps them while its (extended) token is valid, so
    /// the discovery action waiting for the review is never pulled from under it.
    async fn sweep(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        for mac in self.discovery.expired(now).await? {
            let store = self.proposer.store().clone();
            let (machine, token_until) = tokio::task::spawn_blocking(move || {
                Ok::<_, StoreError>((store.machine(mac)?, store.report_token_expiry(mac)?))
            })
            .await??;
            let reported = machine.as_ref().is_some_and(|m| {
                matches!(m.state, State::Reported | State::Proposed | State::Approved) && !m.suppressed
            });
            if reported && token_until.is_some_and(|t| t > now) {
                continue;
            }
            self.discovery.remove(&mac).await?;
            self.proposer.release_discovery_address(mac).await?;
            let cause = if reported {
                "the discovery action's wait for the review is over; temporary objects removed"
            } else {
                "discovery expired without a report"
            };
            self.move_if(mac, State::Discovering, State::Detected, cause).await?;
            if reported {
                let (store, note) = (self.proposer.store().clone(), cause.to_string());
                tokio::task::spawn_blocking(move || store.note(mac, &note, "registrar", Utc::now())).await??;
            }
            tracing::info!(%mac, "{cause}");
            self.wake.notify_one();
        }
        Ok(())
    }
}
