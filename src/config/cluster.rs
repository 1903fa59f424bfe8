//! The Kubernetes cluster Tinkerbell runs in: Smee's logs, discovery objects, the namespace.

use serde::Deserialize;

/// The Kubernetes cluster Tinkerbell runs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Watch Hardware (known MACs, Tinkerbell's auto discovery). Uses the in-cluster
    /// service account, or KUBECONFIG / ~/.kube/config outside a cluster.
    pub enabled: bool,
    /// The namespace whose Hardware is watched; empty: all namespaces.
    pub watch_namespace: String,
    pub discovery: DiscoveryConfig,
    pub smee_logs: SmeeLogsConfig,
    /// After a merge, the approved Hardware should appear in the cluster (Flux or Argo CD
    /// applies it) within this long; past it the machine shows why it still waits.
    pub handoff_timeout_seconds: u64,
    /// Before a new machine's BMC object names the credentials Secret `<name>-bmc`, ask the
    /// cluster whether that Secret exists already (left from another machine, say): then
    /// the object is left out and the pull request says why. Needs `get` on Secrets in
    /// Tinkerbell's namespace, which the shipped RBAC does not grant (docs/operations.md).
    pub check_bmc_secrets: bool,
    /// Several replicas on one PostgreSQL store (`store.postgres_url`): the replica holding
    /// this Lease works the queue against git and the forge; every replica serves.
    pub leader_election: LeaderElectionConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderElectionConfig {
    pub enabled: bool,
    /// The Lease, in Tinkerbell's namespace (`tinkerbell.namespace`).
    pub lease_name: String,
    /// How long a Lease nobody renews stays taken: the longest a failed leader's work waits
    /// for another replica. The holder renews every third of it.
    pub lease_seconds: u64,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            enabled: false,
            lease_name: "registrar".into(),
            lease_seconds: 15,
        }
    }
}

/// Follow Smee's logs for MACs it has no Hardware for (Smee logs them in its proxy and
/// auto-proxy DHCP modes only; in reservation mode use DHCP snooping).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmeeLogsConfig {
    pub enabled: bool,
    pub namespace: String,
    /// `app=tinkerbell` for the current chart, `app=smee` for the legacy stack.
    pub label_selector: String,
    /// `tinkerbell` or `smee`.
    pub container: String,
}

impl Default for SmeeLogsConfig {
    fn default() -> Self {
        SmeeLogsConfig {
            enabled: false,
            namespace: "tinkerbell".into(),
            label_selector: "app=tinkerbell".into(),
            container: "tinkerbell".into(),
        }
    }
}

/// Temporary discovery objects for unknown machines (in `tinkerbell.namespace`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    pub enabled: bool,
    /// The discovery Template (`deploy/discovery/template.yaml`).
    pub template: String,
    /// The re-inventory Template (`deploy/discovery/reinventory-template.yaml`): the
    /// discovery action, then a reboot into the machine's own disk.
    pub reinventory_template: String,
    /// Registrar's URL as a machine on the provisioning network reaches it.
    pub report_url: String,
    /// At most this many machines in discovery at once.
    pub max_machines: usize,
    /// A machine that has not reported this long after its temporary objects were created
    /// loses them (and its report token); its slot goes to the next waiting machine.
    pub ttl_seconds: u64,
    /// How long a machine that reported waits in discovery for its review (the discovery
    /// action's MAX_WAIT_SECONDS, passed to it as `max_wait_seconds`): from its report on,
    /// its token and temporary objects live this long, so the waiting action can always ask.
    pub decision_wait_seconds: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: false,
            template: "registrar-discovery".into(),
            reinventory_template: "registrar-reinventory".into(),
            report_url: String::new(),
            max_machines: 20,
            ttl_seconds: 3600,
            decision_wait_seconds: 86_400,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            watch_namespace: String::new(),
            discovery: DiscoveryConfig::default(),
            smee_logs: SmeeLogsConfig::default(),
            handoff_timeout_seconds: 1800,
            check_bmc_secrets: false,
            leader_election: LeaderElectionConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TinkerbellConfig {
    /// Namespace of rendered objects: `tinkerbell` with the current chart, `tink-system` before.
    pub namespace: String,
}

impl Default for TinkerbellConfig {
    fn default() -> Self {
        TinkerbellConfig {
            namespace: "tinkerbell".into(),
        }
    }
}
