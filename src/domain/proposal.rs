//! A proposal: one machine's rendered manifests on a branch, awaiting review on a forge.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::mac::Mac;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposalState {
    Open,
    /// Approval is under way (the merge may or may not have reached the remote yet).
    Approving,
    Merged,
    /// Rejected in Registrar (recorded first); closing it on the forge may not have
    /// happened yet. The reconcile finishes it, then it is `closed`.
    Rejecting,
    Closed,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Open => "open",
            ProposalState::Approving => "approving",
            ProposalState::Merged => "merged",
            ProposalState::Rejecting => "rejecting",
            ProposalState::Closed => "closed",
        }
    }
}

impl fmt::Display for ProposalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProposalState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ProposalState::Open,
            ProposalState::Approving,
            ProposalState::Merged,
            ProposalState::Rejecting,
            ProposalState::Closed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("unknown proposal state {s:?}"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    pub mac: Mac,
    /// `local` or `github`.
    pub forge: String,
    /// The forge's number for it (a pull request number; a sequence on the local forge).
    pub number: Option<u64>,
    pub url: Option<String>,
    pub branch: String,
    /// Path of the manifest file in the repository.
    pub path: String,
    pub name: String,
    pub title: String,
    pub summary: String,
    /// The commit Registrar last pushed to the branch.
    pub head: String,
    pub rule: String,
    pub workflow: Option<String>,
    pub state: ProposalState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A person pushed to the branch: Registrar no longer rewrites it.
    #[serde(default)]
    pub hands_off: bool,
}

/// The `once`-key recording that Registrar itself pushed `commit`.
pub fn pushed_key(commit: &str) -> String {
    format!("pushed:{commit}")
}

/// `registrar/aa-bb-cc-dd-ee-ff`: one branch per machine, since `:` is illegal in refs.
pub fn branch_for(mac: &Mac) -> String {
    format!("registrar/{}", mac.dashed())
}
