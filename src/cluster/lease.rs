//! Leader election on a Kubernetes Lease (coordination.k8s.io/v1), for replicas sharing one
//! PostgreSQL store: every replica serves (reports, webhooks, the console) and records
//! into the shared store, but only the replica holding the Lease works the queue against
//! git and the forge, so the forge is paced once and a proposal is pushed by one writer.
//!
//! The rules are client-go's:
//! - a Lease is free when nobody holds it, or when its record (holder and renew time) has
//!   not changed for its whole duration *as this replica observed it*, by its own
//!   monotonic clock: clocks that disagree between nodes never hand it over early;
//! - every write carries the resourceVersion read, so of two replicas taking a free Lease
//!   at once the API server lets exactly one succeed (409 for the other);
//! - the holder renews every third of the duration, each round bounded in time; a holder
//!   whose last renewal was *sent* two thirds of a duration ago stops leading (the process
//!   stops, and its restart stands by) — a third of a duration before any standby may take
//!   the Lease, so two replicas never both lead;
//! - a holder that stops cleanly gives the Lease up once its pipelines have stopped, so a
//!   rolling update hands over at once and never to a replica working beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

use crate::shutdown::Shutdown;
use crate::supervisor::Readiness;

/// Who leads, as this replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Waiting for the Lease; who holds it, if anyone.
    StandingBy(Option<String>),
    Leading,
    /// Could not renew in time: this replica must stop.
    Lost(String),
}

/// A handle the pipelines that only the leader runs wait on.
#[derive(Clone)]
pub struct Leadership(watch::Receiver<Role>);

impl Leadership {
    /// No election (one instance): always leading.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(Role::Leading);
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        Leadership(rx)
    }

    pub fn role(&self) -> Role {
        self.0.borrow().clone()
    }

    /// Every change of role, from now on.
    pub fn changes(&self) -> watch::Receiver<Role> {
        self.0.clone()
    }

    /// Returns once this replica leads (never, if it lost the Lease: it is stopping).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|r| *r == Role::Leading).await;
        if *rx.borrow() != Role::Leading {
            std::future::pending::<()>().await;
        }
    }

    /// Returns once this replica lost the Lease it held.
    pub async fn lost(&self) -> String {
        let mut rx = self.0.clone();
        let why = match rx.wait_for(|r| matches!(r, Role::Lost(_))).await.as_deref() {
            Ok(Role::Lost(why)) => Some(why.clone()),
            _ => None,
        };
        match why {
            Some(why) => why,
            // The election ended without losing (shutdown, or no election): never.
            None => std::future::pending().await,
        }
    }
}

pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// The record last seen, and when this replica first saw it.
struct Observed {
    record: (Option<String>, Option<MicroTime>),
    since: Instant,
}

impl Election {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Election {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// Campaigns, leads and renews until `shutdown`, publishing the role; gives the Lease up
    /// on the way out.
    pub fn start(
        self,
        readiness: Arc<Readiness>,
        shutdown: Shutdown,
        pipelines_stopped: Shutdown,
    ) -> (Leadership, impl Future<Output = anyhow::Result<()>> + Send) {
        let (tx, rx) = watch::channel(Role::StandingBy(None));
        (Leadership(rx), self.run(tx, readiness, shutdown, pipelines_stopped))
    }

    /// Campaigns and renews until `shutdown`; then, once `pipelines_stopped` fires (the
    /// leader's work has ended), gives the Lease up. Readiness names the election's state.
    async fn run(
        self,
        role: watch::Sender<Role>,
        readiness: Arc<Readiness>,
        shutdown: Shutdown,
        pipelines_stopped: Shutdown,
    ) -> anyhow::Result<()> {
        const CHECK: &str = "leader-election";
        readiness.expect(CHECK);
        let mut observed: Option<Observed> = None;
        // When the last successful renewal was *sent*: the Lease runs from then.
        let mut renewed = None::<Instant>;
        let period = self.duration / 3;
        // A leader stops believing it leads well before a standby may take over (a full
        // duration after the record last changed): client-go's renew deadline.
        let deadline = self.duration * 2 / 3;
        loop {
            let sent = Instant::now();
            // A round that hangs (an API server that does not answer) must not outlive the
            // leader's deadline: bounded by what is left of it.
            let left = renewed.map_or(period, |at| {
                deadline.saturating_sub(at.elapsed()).max(Duration::from_millis(1))
            });
            let round = match tokio::time::timeout(left, self.try_hold(&mut observed)).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("no answer within {left:?}")),
            };
            match round {
                Ok(true) => {
                    if renewed.is_none() {
                        tracing::info!(lease = %self.name, identity = %self.identity, "leading: this replica works the queue");
                    }
                    renewed = Some(sent);
                    role.send_replace(Role::Leading);
                    readiness.ready(CHECK, format!("leading (Lease {})", self.name));
                }
                Ok(false) if renewed.is_some() => {
                    let why = format!("Lease {} was taken by another replica", self.name);
                    role.send_replace(Role::Lost(why.clone()));
                    anyhow::bail!(why);
                }
                Ok(false) => {
                    let holder = observed.as_ref().and_then(|o| o.record.0.clone());
                    let who = holder.clone().unwrap_or_else(|| "no replica yet".into());
                    readiness.ready(CHECK, format!("standing by: {who} leads (Lease {})", self.name));
                    role.send_replace(Role::StandingBy(holder));
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %format!("{e:#}"), "the Lease could not be read or written");
                    readiness.not_ready(
                        CHECK,
                        format!("the Lease {} could not be read or written: {e:#}", self.name),
                    );
                    if renewed.is_some_and(|at| at.elapsed() >= deadline) {
                        let why = format!("Lease {} not renewed within {deadline:?}: {e:#}", self.name);
                        role.send_replace(Role::Lost(why.clone()));
                        anyhow::bail!(why);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.wait() => break,
            }
        }
        if renewed.is_some() {
            // Given up only once the leader's pipelines have stopped: a standby taking it
            // earlier would work the queue beside them.
            pipelines_stopped.wait().await;
            self.give_up().await;
        }
        Ok(())
    }

    /// One round: takes or renews the Lease if this replica may; whether it holds it now.
    async fn try_hold(&self, observed: &mut Option<Observed>) -> anyhow::Result<bool> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        if observed.as_ref().is_none_or(|o| o.record != record) {
            *observed = Some(Observed {
                record,
                since: Instant::now(),
            });
        }
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.duration);
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty)
            || observed.as_ref().is_some_and(|o| o.since.elapsed() >= duration);
        if !mine && !free {
            return Ok(false);
        }
        let (acquired, transitions) = if mine {
            (
                spec.acquire_time.clone().unwrap_or(now.clone()),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now.clone(), spec.lease_transitions.unwrap_or(0) + 1)
        };
        let mut next = lease;
        next.spec = Some(self.spec(acquired, now, transitions));
        match self.api.replace(&self.name, &PostParams::default(), &next).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Empties the holder, so a standing-by replica takes over at its next round.
    async fn give_up(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, "gave the Lease up"),
            Err(e) => tracing::warn!(lease = %self.name, error = %e, "could not give the Lease up; it expires"),
        }
    }
}

/// This replica's name in the Lease: the pod's name where Kubernetes gives it
/// (`POD_NAME`, from the downward API), else the host's name and the process id.
pub fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// Lease names the API server accepts are DNS subdomains; checked at start.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "cluster.leader_election.lease_name {name:?} is not a DNS subdomain"
        ))
    }
}
