//! The pipelines that need the cluster, and who leads among replicas: the Hardware
//! watch, the hand-off, Smee's logs and discovery; the Lease election, and the wait every
//! leader-only pipeline starts with.

use std::sync::Arc;
use std::time::Duration;

use super::discovery::DiscoveryQueue;
use super::{App, handoff, pipelines, reinventory};
use crate::cluster::lease::{Leadership, Role};
use crate::shutdown::Shutdown;
use crate::supervisor::{Readiness, Supervisor};

/// The running election: told when the pipelines have stopped, so it gives the Lease up
/// only then.
pub(super) struct Campaign {
    stopped: crate::shutdown::Trigger,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Campaign {
    /// The pipelines have stopped: give the Lease up (bounded: it expires anyway).
    pub(super) async fn end(self) {
        self.stopped.fire();
        match tokio::time::timeout(Duration::from_secs(5), self.running).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %format!("{e:#}"), "leader election ended"),
            Ok(_) => {}
            Err(_) => tracing::warn!("the Lease was not given up in time; it expires"),
        }
    }
}

impl App {
    /// The Lease election, when replicas share the store (`cluster.leader_election`); else
    /// this instance always leads.
    pub(super) fn elect(
        &self,
        kube: Option<&kube::Client>,
        supervisor: &Supervisor,
    ) -> anyhow::Result<(Leadership, Option<Campaign>)> {
        let settings = &self.config.cluster.leader_election;
        if !settings.enabled {
            return Ok((Leadership::always(), None));
        }
        let Some(client) = kube else {
            anyhow::bail!(
                "cluster.leader_election needs the Kubernetes API: set cluster.enabled (in-cluster service account or KUBECONFIG)"
            );
        };
        let identity = crate::cluster::lease::identity();
        let (stopped, pipelines_stopped) = crate::shutdown::channel();
        tracing::info!(lease = %settings.lease_name, %identity, "standing for leader");
        let (leadership, campaign) = crate::cluster::lease::Election::new(
            client.clone(),
            &self.config.tinkerbell.namespace,
            &settings.lease_name,
            &identity,
            Duration::from_secs(settings.lease_seconds),
        )
        .start(
            supervisor.readiness().clone(),
            supervisor.shutdown().clone(),
            pipelines_stopped,
        );
        // Not the supervisor's: it ends after the supervisor's pipelines (see `Campaign`).
        let running = tokio::spawn(campaign);
        Ok((leadership, Some(Campaign { stopped, running })))
    }

    /// The cluster's pipelines: the Hardware watch (known MACs, auto discovery), the
    /// hand-off from merge to provisioned, Smee's logs and the discovery queue.
    pub(super) fn start_cluster(
        &self,
        supervisor: &Supervisor,
        client: kube::Client,
        leadership: &Leadership,
    ) -> Option<Arc<DiscoveryQueue>> {
        let namespace = self.config.tinkerbell.namespace.clone();
        let cluster = crate::cluster::Cluster::new(client.clone(), &namespace);
        self.proposer
            .set_cluster(cluster.clone(), self.config.cluster.check_bmc_secrets);
        let (stop, ready) = (supervisor.shutdown().clone(), supervisor.readiness().clone());

        let (proposer, known, metrics) = (self.proposer.clone(), self.known.clone(), self.state.metrics.clone());
        let watched = Some(self.config.cluster.watch_namespace.clone()).filter(|n| !n.is_empty());
        let (watch_client, watch_stop, watch_ready, bmc_namespace) =
            (client.clone(), stop.clone(), ready.clone(), watched.clone());
        supervisor.spawn("cluster", move || {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let consumer = tokio::spawn(pipelines::record_discovered(proposer.clone(), rx));
            let watch = crate::cluster::hardware::watch(
                watch_client.clone(),
                watched.clone(),
                known.clone(),
                tx,
                metrics.cluster_watch_up.clone(),
                watch_ready.clone(),
                watch_stop.clone(),
            );
            async move {
                let result = watch.await;
                consumer.abort();
                result
            }
        });

        let (bmc_client, bmc_known, bmc_stop, bmc_ready) =
            (client.clone(), self.known.clone(), stop.clone(), ready.clone());
        supervisor.spawn("cluster-bmcs", move || {
            crate::cluster::bmcs::watch(
                bmc_client.clone(),
                bmc_namespace.clone(),
                bmc_known.clone(),
                bmc_ready.clone(),
                bmc_stop.clone(),
            )
        });

        let handoff = Arc::new(handoff::Handoff {
            proposer: self.proposer.clone(),
            cluster,
            known: self.known.clone(),
            metrics: self.state.metrics.clone(),
            namespace: namespace.clone(),
            timeout: chrono::Duration::seconds(self.config.cluster.handoff_timeout_seconds as i64),
            inventory: reinventory::inventory(&self.config.cluster.discovery, &client, &namespace),
        });
        let (handoff_stop, handoff_ready, lead) = (stop.clone(), ready.clone(), leadership.clone());
        supervisor.spawn("handoff", move || {
            let (h, r, s, lead) = (
                handoff.clone(),
                handoff_ready.clone(),
                handoff_stop.clone(),
                lead.clone(),
            );
            async move {
                if !when_leading(&lead, &r, "handoff", &s).await {
                    return Ok(());
                }
                h.run(r, s).await
            }
        });

        let d = &self.config.cluster.discovery;
        let discovery = d.enabled.then(|| {
            let settings = crate::cluster::discovery::DiscoverySettings {
                namespace: namespace.clone(),
                template: d.template.clone(),
                report_url: d.report_url.clone(),
                max_machines: d.max_machines,
                ttl: chrono::Duration::seconds(d.ttl_seconds as i64),
                decision_wait: chrono::Duration::seconds(d.decision_wait_seconds as i64),
            };
            let queue = Arc::new(DiscoveryQueue::new(
                self.proposer.clone(),
                crate::cluster::discovery::Discovery::new(client.clone(), settings),
                self.state.metrics.clone(),
                self.known.clone(),
            ));
            let (q, s, r, lead) = (queue.clone(), stop.clone(), ready.clone(), leadership.clone());
            supervisor.spawn("discovery", move || {
                let (q, s, r, lead) = (q.clone(), s.clone(), r.clone(), lead.clone());
                async move {
                    if !when_leading(&lead, &r, "discovery", &s).await {
                        return Ok(());
                    }
                    q.run(r, s).await
                }
            });
            queue
        });

        let sl = &self.config.cluster.smee_logs;
        if sl.enabled {
            let settings = crate::cluster::smee_logs::SmeeLogs {
                namespace: sl.namespace.clone(),
                label_selector: sl.label_selector.clone(),
                container: sl.container.clone(),
            };
            let (proposer, known, queue) = (self.proposer.clone(), self.known.clone(), discovery.clone());
            let metrics = self.state.metrics.clone();
            supervisor.spawn("smee_logs", move || {
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                let consumer = tokio::spawn(pipelines::record_smee(
                    proposer.clone(),
                    metrics.clone(),
                    known.clone(),
                    queue.clone(),
                    rx,
                ));
                let follow = crate::cluster::smee_logs::follow(
                    client.clone(),
                    settings.clone(),
                    tx,
                    ready.clone(),
                    stop.clone(),
                );
                async move {
                    follow.await;
                    consumer.abort();
                    Ok(())
                }
            });
        }
        discovery
    }
}

/// Waits until this replica leads; meanwhile pipeline `name` is ready, standing by.
/// False when shutdown came first.
pub(super) async fn when_leading(
    leadership: &Leadership,
    ready: &Readiness,
    name: &'static str,
    stop: &Shutdown,
) -> bool {
    let mut roles = leadership.changes();
    loop {
        let role = roles.borrow_and_update().clone();
        match role {
            Role::Leading => return true,
            Role::StandingBy(holder) => {
                let holder = holder.unwrap_or_else(|| "no replica yet".into());
                ready.ready(name, format!("standing by: {holder} leads"));
            }
            Role::Lost(_) => return false,
        }
        tokio::select! {
            changed = roles.changed() => if changed.is_err() { return leadership.role() == Role::Leading },
            _ = stop.wait() => return false,
        }
    }
}
