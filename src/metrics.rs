//! Prometheus metrics. Names are part of the operator's interface (dashboards and alerts
//! reference them), so they are declared here, in one place.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

pub struct Metrics {
    registry: Registry,
    /// Reports received, by outcome: accepted, unchanged, suppressed, or the rejection reason.
    pub reports: Family<ResultLabel, Counter>,
    /// Proposal syncs, by outcome: pushed, unchanged, error.
    pub syncs: Family<ResultLabel, Counter>,
    /// Seconds from picking up a machine's work to its proposal being recorded.
    pub sync_seconds: Histogram,
    /// Machines whose latest change has not reached git and the forge yet.
    pub queue_length: Gauge,
    pub queue_retrying: Gauge,
    /// Addresses a pool may hand out, and how many are held or quarantined.
    pub pool_size: Family<PoolLabel, Gauge>,
    pub pool_used: Family<PoolLabel, Gauge>,
    /// Machines refused an address because their pool had none left.
    pub pool_exhausted: Family<PoolLabel, Counter>,
    /// Machines per state.
    pub machines: Family<StateLabel, Gauge>,
    /// Requests refused for a missing or wrong token.
    pub auth_failures: Counter,
    /// GitHub webhook deliveries, by result (accepted, duplicate, ignored, bad_signature…).
    pub webhooks: Family<ResultLabel, Counter>,
    /// Accepted webhook deliveries whose background handling finished, by result (ok, error).
    pub webhooks_handled: Family<ResultLabel, Counter>,
    /// Scans for `registrar/` branches the store had no record of (one per start), finished.
    pub adoption_scans: Counter,
    /// DHCP datagrams received by the snooping listener.
    pub dhcp_packets: Counter,
    /// DHCP datagrams that parsed.
    pub dhcp_parsed: Counter,
    /// DHCP datagrams not passed on, by reason (malformed, reply, repeat, known, filters…).
    pub dhcp_dropped: Family<ReasonLabel, Counter>,
    /// Machines the DHCP listener saw for the first time.
    pub dhcp_new_macs: Counter,
    /// MACs the DHCP debounce currently remembers (bounded).
    pub dhcp_tracked_macs: Gauge,
    /// 1 while the DHCP listener is receiving.
    pub dhcp_listener_up: Gauge,
    /// MACs known to have a home (GitOps base branch, cluster), which sources skip.
    pub known_macs: Gauge,
    /// Seconds the oldest machine in the proposal queue has waited (0 when empty).
    pub queue_oldest_seconds: Gauge,
    /// Forge calls that failed, by kind: error (any failure) or rate_limited (primary or
    /// secondary limit answers, which the client waits out).
    pub forge_errors: Family<KindLabel, Counter>,
    /// Forge requests by kind: read, write, create, and not_modified (conditional reads
    /// answered 304, which GitHub does not count against the rate limit).
    pub forge_requests: Family<KindLabel, Counter>,
    /// Requests left in the forge's primary rate-limit window (-1 when not known).
    pub forge_rate_limit_remaining: Gauge,
    /// 1 while the Hardware watch on the cluster is connected and listing or watching.
    pub cluster_watch_up: Gauge,
    /// 1 while a supervised pipeline runs (0 while it waits to be restarted).
    pub pipelines_up: Family<PipelineLabel, Gauge>,
    /// Restarts of a supervised pipeline after it failed or panicked.
    pub pipeline_restarts_total: Family<PipelineLabel, Counter>,
    /// Machines noticed while every discovery slot was taken; they start as slots free up.
    pub discovery_waiting: Gauge,
    /// Machines whose first proposal waits for a review slot (`discovery.max_open_proposals`).
    pub review_slot_waiting: Gauge,
    /// Approved machines whose Hardware has not appeared in the cluster within the hand-off
    /// timeout (Flux or Argo CD not applying?).
    pub handoff_overdue: Gauge,
    /// Finished passes of the proposals' reconcile with the forge and the repository.
    pub reconcile_passes: Counter,
    /// How long a pass of the proposals' reconcile takes (it reads every proposal's record:
    /// its cost grows with the store, never with GitHub requests).
    pub reconcile_seconds: Histogram,
    /// Machines only ever seen, dropped (oldest first) to stay within discovery.max_undiscovered.
    pub detections_evicted: Counter,
    /// New machines not recorded: more than discovery.max_new_per_minute arrived.
    pub detections_refused: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabel {
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("registrar");
        let reports = Family::<ResultLabel, Counter>::default();
        registry.register("reports", "Hardware reports received, by result", reports.clone());
        let syncs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "proposal_syncs",
            "Proposal syncs to git and the forge, by result",
            syncs.clone(),
        );
        let sync_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "proposal_sync_seconds",
            "Time to bring one machine's change to git and the forge",
            sync_seconds.clone(),
        );
        let queue_length = Gauge::default();
        registry.register(
            "queue_length",
            "Machines whose change still has to reach git and the forge",
            queue_length.clone(),
        );
        let queue_retrying = Gauge::default();
        registry.register(
            "queue_retrying",
            "Machines whose last sync failed and that wait out their backoff before the next try",
            queue_retrying.clone(),
        );
        let pool_size = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "address_pool_size",
            "Addresses an address pool may hand out",
            pool_size.clone(),
        );
        let pool_used = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "address_pool_used",
            "Addresses of a pool held by machines or resting in quarantine",
            pool_used.clone(),
        );
        let pool_exhausted = Family::<PoolLabel, Counter>::default();
        registry.register(
            "address_pool_exhausted",
            "Times a machine found its address pool with no address left",
            pool_exhausted.clone(),
        );
        let machines = Family::<StateLabel, Gauge>::default();
        registry.register("machines", "Machines known to Registrar, by state", machines.clone());
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Requests refused for a missing or wrong token",
            auth_failures.clone(),
        );
        let dhcp_packets = Counter::default();
        registry.register(
            "dhcp_packets",
            "DHCP datagrams received by the snooping listener",
            dhcp_packets.clone(),
        );
        let dhcp_parsed = Counter::default();
        registry.register("dhcp_parsed", "DHCP datagrams that parsed", dhcp_parsed.clone());
        let dhcp_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dhcp_dropped",
            "DHCP datagrams not passed on, by reason",
            dhcp_dropped.clone(),
        );
        let dhcp_new_macs = Counter::default();
        registry.register(
            "dhcp_new_macs",
            "Machines the DHCP listener saw for the first time",
            dhcp_new_macs.clone(),
        );
        let dhcp_tracked_macs = Gauge::default();
        registry.register(
            "dhcp_tracked_macs",
            "MACs the DHCP debounce currently remembers",
            dhcp_tracked_macs.clone(),
        );
        let dhcp_listener_up = Gauge::default();
        registry.register(
            "dhcp_listener_up",
            "1 while the DHCP listener is receiving",
            dhcp_listener_up.clone(),
        );
        let webhooks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "GitHub webhook deliveries, by result",
            webhooks.clone(),
        );
        let webhooks_handled = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhook_handled",
            "Accepted GitHub webhook deliveries whose handling finished, by result",
            webhooks_handled.clone(),
        );
        let adoption_scans = Counter::default();
        registry.register(
            "adoption_scans",
            "Finished scans for proposal branches the store had no record of",
            adoption_scans.clone(),
        );
        let known_macs = Gauge::default();
        registry.register(
            "known_macs",
            "MACs known to have a home (GitOps base branch, cluster), skipped by sources",
            known_macs.clone(),
        );
        let queue_oldest_seconds = Gauge::default();
        registry.register(
            "queue_oldest_seconds",
            "Seconds the oldest machine in the proposal queue has waited",
            queue_oldest_seconds.clone(),
        );
        let forge_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "forge_errors",
            "Forge calls that failed, by kind (error, rate_limited)",
            forge_errors.clone(),
        );
        let forge_requests = Family::<KindLabel, Counter>::default();
        registry.register(
            "forge_requests",
            "Forge requests sent, by kind (read, write, create; not_modified: reads answered 304, free of rate limit)",
            forge_requests.clone(),
        );
        for k in ["read", "write", "create", "not_modified"] {
            let _ = forge_requests.get_or_create(&KindLabel { kind: k.into() });
        }
        let forge_rate_limit_remaining = Gauge::default();
        forge_rate_limit_remaining.set(-1);
        registry.register(
            "forge_rate_limit_remaining",
            "Requests left in the forge's rate-limit window, -1 when unknown",
            forge_rate_limit_remaining.clone(),
        );
        let cluster_watch_up = Gauge::default();
        registry.register(
            "cluster_watch_up",
            "1 while the cluster's Hardware watch is connected",
            cluster_watch_up.clone(),
        );
        let pipelines_up = Family::<PipelineLabel, Gauge>::default();
        registry.register(
            "pipeline_up",
            "1 while a supervised pipeline runs, 0 while it waits to be restarted",
            pipelines_up.clone(),
        );
        let pipeline_restarts_total = Family::<PipelineLabel, Counter>::default();
        registry.register(
            "pipeline_restarts",
            "Restarts of a supervised pipeline after it failed or panicked",
            pipeline_restarts_total.clone(),
        );
        let discovery_waiting = Gauge::default();
        registry.register(
            "discovery_waiting",
            "Machines waiting for a discovery slot",
            discovery_waiting.clone(),
        );
        let review_slot_waiting = Gauge::default();
        registry.register(
            "review_slot_waiting",
            "Machines whose first proposal waits for a review slot",
            review_slot_waiting.clone(),
        );
        let handoff_overdue = Gauge::default();
        registry.register(
            "handoff_overdue",
            "Approved machines whose Hardware has not appeared in the cluster within the hand-off timeout",
            handoff_overdue.clone(),
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_seconds",
            "Time of one pass of the proposals' reconcile",
            reconcile_seconds.clone(),
        );
        let reconcile_passes = Counter::default();
        registry.register(
            "reconcile_passes",
            "Finished passes of the proposals' reconcile with the forge and the repository",
            reconcile_passes.clone(),
        );
        let detections_evicted = Counter::default();
        registry.register(
            "detections_evicted",
            "Machines only ever seen, dropped oldest first to stay within discovery.max_undiscovered",
            detections_evicted.clone(),
        );
        let detections_refused = Counter::default();
        registry.register(
            "detections_refused",
            "New machines not recorded: more than discovery.max_new_per_minute arrived",
            detections_refused.clone(),
        );
        // Label values known in advance start at 0, so `increase()` sees their first event
        // and dashboards show 0 rather than "no data".
        for r in [
            "accepted",
            "unchanged",
            "suppressed",
            "invalid",
            "malformed",
            "too_large",
            "unreadable",
            "wrong_machine",
        ] {
            let _ = reports.get_or_create(&ResultLabel { result: r.into() });
        }
        for r in ["pushed", "unchanged", "error"] {
            let _ = syncs.get_or_create(&ResultLabel { result: r.into() });
        }
        for r in ["accepted", "duplicate", "ignored", "bad_signature", "malformed", "ping"] {
            let _ = webhooks.get_or_create(&ResultLabel { result: r.into() });
        }
        for r in ["ok", "error"] {
            let _ = webhooks_handled.get_or_create(&ResultLabel { result: r.into() });
        }
        for k in ["error", "rate_limited"] {
            let _ = forge_errors.get_or_create(&KindLabel { kind: k.into() });
        }
        for r in ["repeat", "known"] {
            let _ = dhcp_dropped.get_or_create(&ReasonLabel { reason: r.into() });
        }
        Metrics {
            detections_evicted,
            detections_refused,
            reconcile_passes,
            reconcile_seconds,
            pipelines_up,
            pipeline_restarts_total,
            discovery_waiting,
            review_slot_waiting,
            handoff_overdue,
            queue_oldest_seconds,
            forge_errors,
            forge_requests,
            forge_rate_limit_remaining,
            cluster_watch_up,
            webhooks,
            webhooks_handled,
            adoption_scans,
            known_macs,
            registry,
            reports,
            syncs,
            sync_seconds,
            queue_length,
            queue_retrying,
            pool_size,
            pool_used,
            pool_exhausted,
            machines,
            auth_failures,
            dhcp_packets,
            dhcp_parsed,
            dhcp_dropped,
            dhcp_new_macs,
            dhcp_tracked_macs,
            dhcp_listener_up,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn report(&self, result: &str) {
        self.reports.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    pub fn webhook(&self, result: &str) {
        self.webhooks
            .get_or_create(&ResultLabel { result: result.into() })
            .inc();
    }

    pub fn webhook_handled(&self, ok: bool) {
        self.webhooks_handled
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    pub fn dhcp_dropped(&self, reason: &str) {
        self.dhcp_dropped
            .get_or_create(&ReasonLabel { reason: reason.into() })
            .inc();
    }

    pub fn forge_error(&self, kind: &str) {
        self.forge_errors.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    pub fn sync(&self, result: &str) {
        self.syncs.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    pub fn pipeline_up(&self, pipeline: &str) -> Gauge {
        self.pipelines_up
            .get_or_create(&PipelineLabel {
                pipeline: pipeline.into(),
            })
            .clone()
    }

    pub fn pipeline_restarts(&self, pipeline: &str) -> Counter {
        self.pipeline_restarts_total
            .get_or_create(&PipelineLabel {
                pipeline: pipeline.into(),
            })
            .clone()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
