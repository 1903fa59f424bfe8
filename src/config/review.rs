//! What reaches the review queue, and the proposal queue's worker.

use serde::Deserialize;

/// What reaches the review queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    /// Only machines imported as expected are proposed; others are recorded and shown, never
    /// proposed, so a rogue machine on the provisioning network gets no pull request.
    pub only_expected: bool,
    /// At most this many machines only ever seen (no facts, not expected, no proposal); the
    /// oldest are dropped first, so a flood of spoofed MACs costs bounded rows. 0: no bound.
    pub max_undiscovered: u64,
    /// At most this many new machines a minute; more are not recorded (counted). 0: no bound.
    pub max_new_per_minute: u64,
    /// Where BMCs may be. A BMC address a machine reports is proposed (as a Rufio Machine,
    /// to which Rufio sends the BMC's credentials) only inside one of these networks; an
    /// operator's import row is trusted. Empty: no reported BMC address is proposed.
    pub bmc_networks: Vec<ipnet::IpNet>,
    /// At most this many proposals open on the forge at once; more machines wait their turn
    /// (oldest first) and are proposed as proposals are merged or closed. 0: no bound.
    pub max_open_proposals: u64,
    /// `expected`: a machine whose report matches its import row exactly (MAC, and serial
    /// where the row gives one), with nothing the reviewer must be warned of, is approved
    /// without a person — on GitHub by enabling auto-merge, which merges once the required
    /// checks pass (branch protection applies); on the local forge at once. `none`: never.
    pub auto_approve: AutoApprove,
    /// Several machines in one pull request: `import` (the batch that expected them),
    /// `rack` (their import rows' rack), `switch` (their DHCP relay's switch) or `rule`
    /// (the `group` value their rule sets). A machine with no such key is proposed alone.
    /// `none`: every machine alone. Not with the local forge.
    pub group_by: crate::domain::GroupBy,
    /// At most this many machines in one grouped pull request (1 to 500).
    pub group_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoApprove {
    #[default]
    None,
    Expected,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            only_expected: false,
            max_undiscovered: 10_000,
            max_new_per_minute: 1_000,
            bmc_networks: vec![],
            max_open_proposals: 0,
            auto_approve: AutoApprove::None,
            group_by: crate::domain::GroupBy::None,
            group_size: 100,
        }
    }
}

/// The proposal queue's worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How many machines are brought to git and the forge at once (never two steps of one
    /// machine at once). The forge's pacing is shared by all of them.
    pub concurrency: usize,
    /// Work that failed (forge or remote down) is retried after this long at first; new work
    /// starts at once.
    pub retry_seconds: u64,
    /// A machine that keeps failing backs off, doubling (with jitter) up to this.
    pub retry_max_seconds: u64,
    /// How often proposals are reconciled with the forge and the repository (unfinished
    /// approvals and rejections carried through, merges done elsewhere noticed).
    pub reconcile_seconds: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            concurrency: 4,
            retry_seconds: 10,
            retry_max_seconds: 600,
            reconcile_seconds: 60,
        }
    }
}
