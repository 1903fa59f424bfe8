//! From the merge to "provisioned", observed rather than assumed: an approved machine is
//! `applied` once a registered Hardware with its MAC is in the cluster (Flux or Argo CD
//! applied the merge) *and* its temporary discovery objects are gone; only then does the
//! waiting discovery action hear "reboot". Its provisioning Workflow (named like its
//! Hardware) then takes it to `provisioned`, or `failed` with the reason.
//!
//! The temporary objects stay until the approved Hardware appears, so the machine always has
//! a Hardware Smee answers for; two Hardware hold its MAC only between the apply and the next
//! pass (seconds), while the machine waits in the discovery OS and is not asking DHCP.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::cluster::{Cluster, Provisioning, provisioning_of};
use crate::domain::{KnownMacs, Machine, State};
use crate::metrics::Metrics;
use crate::propose::Proposer;
use crate::shutdown::Shutdown;
use crate::store::{MachineQuery, StoreError};
use crate::supervisor::Readiness;

pub struct Handoff {
    pub proposer: Arc<Proposer>,
    pub cluster: Cluster,
    pub known: Arc<KnownMacs>,
    pub metrics: Arc<Metrics>,
    pub namespace: String,
    /// An approved machine whose Hardware has not appeared after this long shows why.
    pub timeout: chrono::Duration,
    /// Re-inventory Workflows; None without `cluster.discovery.report_url`.
    pub inventory: Option<Arc<crate::cluster::inventory::Inventory>>,
}

const PASS: Duration = Duration::from_secs(2);

impl Handoff {
    pub async fn run(&self, readiness: Arc<Readiness>, shutdown: Shutdown) -> anyhow::Result<()> {
        loop {
            match self.pass().await {
                Ok((approved, applied)) => readiness.ready(
                    "handoff",
                    format!("{approved} approved machine(s) awaiting their Hardware, {applied} provisioning"),
                ),
                Err(e) => readiness.not_ready("handoff", format!("{e:#}")),
            }
            tokio::select! {
                _ = tokio::time::sleep(PASS) => {}
                _ = shutdown.wait() => return Ok(()),
            }
        }
    }

    pub(super) async fn machines(&self, state: State) -> anyhow::Result<Vec<Machine>> {
        let store = self.proposer.store().clone();
        Ok(tokio::task::spawn_blocking(move || {
            store.machines(&MachineQuery {
                state: Some(state),
                limit: 1000,
                ..Default::default()
            })
        })
        .await??)
    }

    async fn pass(&self) -> anyhow::Result<(usize, usize)> {
        let approved = self.machines(State::Approved).await?;
        let mut overdue = 0;
        let mut awaiting = 0;
        // One machine's trouble (a deletion refused, a Workflow unreadable) is shown on that
        // machine and retried next pass; it never holds up the others.
        for m in &approved {
            let step = if self.known.contains_in("cluster", &m.mac) {
                self.apply(m).await
            } else {
                awaiting += 1;
                self.flag_if_overdue(m).await.map(|late| overdue += i64::from(late))
            };
            self.note_failure(m, step).await;
        }
        self.metrics.handoff_overdue.set(overdue);
        let applied = self.machines(State::Applied).await?;
        for m in &applied {
            let step = self.follow_provisioning(m).await;
            self.note_failure(m, step).await;
        }
        // A merged decommission is done when its Hardware has left the cluster (Flux or
        // Argo CD pruned it) — known only once the watch has listed at least once.
        if self.known.has_source("cluster") {
            for m in self.machines(State::Decommissioning).await? {
                if !self.known.contains_in("cluster", &m.mac) {
                    let step = self
                        .proposer
                        .finish_decommission(m.mac, "its Hardware is gone from the cluster")
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from);
                    self.note_failure(&m, step).await;
                }
            }
        }
        self.follow_inventories().await?;
        Ok((awaiting, applied.len()))
    }

    pub(super) async fn note_failure(&self, m: &Machine, step: anyhow::Result<()>) {
        let Err(e) = step else { return };
        let (store, mac, why) = (self.proposer.store().clone(), m.mac, format!("hand-off: {e:#}"));
        tracing::warn!(%mac, error = %why, "hand-off step failed; retrying next pass");
        let _ = tokio::task::spawn_blocking(move || store.set_error(mac, Some(&why))).await;
    }

    /// The approved Hardware is in the cluster: the temporary objects go first, then the
    /// machine is `applied` (which is what tells its discovery action to reboot).
    async fn apply(&self, m: &Machine) -> anyhow::Result<()> {
        let mac = m.mac;
        let removed = self.cluster.remove_discovery_objects(mac).await?;
        self.proposer.release_discovery_address(mac).await?;
        let cause = format!("its approved Hardware is in the cluster; {removed} discovery Hardware removed");
        let store = self.proposer.store().clone();
        tokio::task::spawn_blocking(move || {
            store.transition(mac, State::Applied, &cause, "registrar", Utc::now())?;
            store.set_error(mac, None)
        })
        .await??;
        tracing::info!(%mac, "approved machine applied");
        Ok(())
    }

    /// Past the hand-off timeout the machine says why it still waits (once).
    async fn flag_if_overdue(&self, m: &Machine) -> anyhow::Result<bool> {
        let (store, mac) = (self.proposer.store().clone(), m.mac);
        let approved_at = tokio::task::spawn_blocking(move || store.transitions(mac))
            .await??
            .iter()
            .rev()
            .find(|t| t.to == State::Approved)
            .map(|t| t.at);
        let Some(at) = approved_at else { return Ok(false) };
        if Utc::now() - at < self.timeout {
            return Ok(false);
        }
        let why = format!(
            "approved {} min ago, but no Hardware with MAC {mac} is in the cluster yet: is Flux or Argo CD applying the GitOps repository?",
            (Utc::now() - at).num_minutes()
        );
        if m.last_error.as_deref() != Some(why.as_str()) {
            let store = self.proposer.store().clone();
            tokio::task::spawn_blocking(move || store.set_error(mac, Some(&why))).await??;
        }
        Ok(true)
    }

    async fn follow_provisioning(&self, m: &Machine) -> anyhow::Result<()> {
        let Some(hardware) = m.name.as_deref() else {
            return Ok(());
        };
        // The Workflow git holds for it (a re-provisioned machine's round's, not the finished
        // one); its round's usual name if its file cannot be read.
        let name = match self.proposer.workflow_in_git(m).await? {
            Some(name) => name,
            None => crate::render::workflow_name(hardware, m.settled.as_ref().map_or(0, |b| b.round)),
        };
        let Some(workflow) = self.cluster.workflow(&name).await? else {
            return Ok(());
        };
        let namespace = &self.namespace;
        let (to, cause) = match provisioning_of(&workflow) {
            Provisioning::Running => return Ok(()),
            Provisioning::Succeeded => (State::Provisioned, format!("Workflow {namespace}/{name} succeeded")),
            Provisioning::Failed(why) => (State::Failed, format!("Workflow {namespace}/{name} failed: {why}")),
        };
        let (store, mac) = (self.proposer.store().clone(), m.mac);
        tokio::task::spawn_blocking(move || {
            store.transition(mac, to, &cause, "registrar", Utc::now())?;
            // Provisioned: its Hardware is rendered again (netboot off, unless its rule
            // keeps it), and the difference is proposed as a change.
            if to == State::Provisioned {
                store.requeue(mac, Utc::now())?;
            }
            Ok(())
        })
        .await?
        .map_err(|e: StoreError| anyhow::anyhow!(e))?;
        if to == State::Provisioned {
            self.proposer.wake();
        }
        tracing::info!(%mac, state = %to, "provisioning finished");
        Ok(())
    }
}
