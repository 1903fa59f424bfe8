//! A machine's life in Registrar, as a state machine whose every step is recorded.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::facts::Facts;
use super::mac::Mac;
use super::sighting::Sighting;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Seen (DHCP, logs, import) but no facts yet.
    Detected,
    /// Seen, to be booted into discovery, but every discovery slot is taken: it starts as
    /// soon as one frees up, whether or not it is seen again.
    Waiting,
    /// Booted into discovery; its report is awaited.
    Discovering,
    /// Facts arrived; a proposal is due.
    Reported,
    /// A proposal (branch + PR or local proposal) exists.
    Proposed,
    /// Merged into the base branch.
    Approved,
    /// The cluster holds the approved Hardware.
    Applied,
    /// Its provisioning Workflow succeeded.
    Provisioned,
    /// Provisioned, and booted into discovery again on request (re-inventory): its report
    /// is awaited, then it boots its own disk again.
    Inventorying,
    /// Its provisioning Workflow failed or timed out.
    Failed,
    /// Refused by a reviewer; its MAC is suppressed until someone lifts that.
    Rejected,
    /// Its decommission was merged; Registrar waits for its Hardware to leave the cluster.
    Decommissioning,
    /// Its manifests are gone from git and its Hardware from the cluster; its addresses
    /// went back to their pools. Its history stays.
    Decommissioned,
}

impl State {
    pub const ALL: [State; 13] = [
        State::Detected,
        State::Waiting,
        State::Discovering,
        State::Reported,
        State::Proposed,
        State::Approved,
        State::Applied,
        State::Provisioned,
        State::Inventorying,
        State::Failed,
        State::Rejected,
        State::Decommissioning,
        State::Decommissioned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Detected => "detected",
            State::Waiting => "waiting",
            State::Discovering => "discovering",
            State::Reported => "reported",
            State::Proposed => "proposed",
            State::Approved => "approved",
            State::Applied => "applied",
            State::Provisioned => "provisioned",
            State::Inventorying => "inventorying",
            State::Failed => "failed",
            State::Rejected => "rejected",
            State::Decommissioning => "decommissioning",
            State::Decommissioned => "decommissioned",
        }
    }

    /// Whether new facts for a machine in this state should (re)render its proposal.
    /// Once approved, git holds the truth and a late report must not reopen the question.
    pub fn accepts_facts(self) -> bool {
        matches!(
            self,
            State::Detected | State::Waiting | State::Discovering | State::Reported | State::Proposed
        )
    }

    /// Git holds the machine: what changes now is proposed as a change of it (new hardware,
    /// netboot off, decommission), never as a new machine.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            State::Approved | State::Applied | State::Provisioned | State::Inventorying | State::Failed
        )
    }

    /// The transitions Registrar allows; anything else is a bug or a stale event.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        if self == next {
            return false;
        }
        match (self, next) {
            // Once merged, git holds the machine: removing it is a change to git, not a review.
            (_, Rejected) => !matches!(
                self,
                Approved | Applied | Provisioned | Inventorying | Failed | Decommissioning | Decommissioned
            ),
            (Detected, Waiting | Discovering | Reported) => true,
            (Waiting, Discovering | Reported | Detected) => true,
            (Discovering, Reported | Detected) => true,
            (Reported, Proposed) => true,
            // A reopened or rebuilt proposal goes back to reported before it is proposed again.
            (Proposed, Reported | Approved) => true,
            (Approved, Applied | Proposed) => true,
            (Applied, Provisioned | Failed) => true,
            // A merged re-provisioning: it follows its new Workflow.
            (Provisioned, Applied) => true,
            (Failed, Provisioned | Applied) => true,
            // Re-inventory: its report (or the end of a Workflow that never sent one) brings
            // it back; git never stopped holding it.
            (Provisioned, Inventorying) | (Inventorying, Provisioned) => true,
            (Rejected, Detected | Reported | Proposed) => true,
            // A pull request merged after its machine was rejected (a reviewer reopened and
            // merged it, or merged it before Registrar could close it): git holds it now.
            (Rejected, Approved) => true,
            // A merged decommission; the Hardware leaving the cluster finishes it.
            (Approved | Applied | Provisioned | Inventorying | Failed, Decommissioning) => true,
            (Decommissioning, Decommissioned) => true,
            _ => false,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// Where Registrar first heard of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Report,
    Dhcp,
    Smee,
    AutoDiscovery,
    Import,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Report => "report",
            Source::Dhcp => "dhcp",
            Source::Smee => "smee",
            Source::AutoDiscovery => "auto_discovery",
            Source::Import => "import",
        }
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Source::Report,
            Source::Dhcp,
            Source::Smee,
            Source::AutoDiscovery,
            Source::Import,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
        .ok_or_else(|| format!("unknown source {s:?}"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub mac: Mac,
    pub state: State,
    pub source: Source,
    pub facts: Option<Facts>,
    /// The name its Hardware got when last rendered.
    pub name: Option<String>,
    /// The provisioning workflow chosen for it (by rules, or by a reviewer).
    pub workflow: Option<String>,
    pub suppressed: bool,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub seen_count: u64,
    /// Set while a change still has to reach git and the forge.
    pub pending: bool,
    pub last_error: Option<String>,
    /// What the network revealed (DHCP), if it was seen there.
    pub sighting: Option<Sighting>,
    /// What an operator imported for it, if it was expected.
    #[serde(default)]
    pub expected: Option<super::Expected>,
    /// What its manifests on the base branch were rendered from (set at each merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<super::Basis>,
    /// A change a person asked for and not yet proposed or closed (a decommission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted: Option<super::ProposalKind>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transition {
    pub from: Option<State>,
    pub to: State,
    pub at: DateTime<Utc>,
    pub cause: String,
    pub actor: String,
}

#[cfg(test)]
mod tests {
    use super::State::*;

    #[test]
    fn the_happy_path_is_allowed() {
        for pair in [
            Detected,
            Discovering,
            Reported,
            Proposed,
            Approved,
            Applied,
            Provisioned,
        ]
        .windows(2)
        {
            assert!(pair[0].can_become(pair[1]), "{} -> {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn no_way_back_from_provisioned_and_no_skipping_review() {
        assert!(!Provisioned.can_become(Rejected));
        assert!(!Reported.can_become(Approved));
        assert!(!Detected.can_become(Proposed));
        assert!(!Proposed.can_become(Proposed));
        assert!(Proposed.can_become(Rejected));
        assert!(Rejected.can_become(Detected));
        assert!(Rejected.can_become(Approved), "a pull request merged after a rejection");
    }

    #[test]
    fn a_machine_waiting_for_a_discovery_slot_takes_the_facts_it_reports() {
        assert!(Waiting.accepts_facts());
        assert!(Waiting.can_become(Reported));
    }

    #[test]
    fn only_a_machine_git_holds_is_decommissioned() {
        for s in [Approved, Applied, Provisioned, Failed] {
            assert!(s.can_become(Decommissioning), "{s}");
        }
        assert!(!Proposed.can_become(Decommissioning));
        assert!(!Decommissioning.can_become(Rejected));
        assert!(Decommissioning.can_become(Decommissioned));
        assert!(!Decommissioned.can_become(Reported));
    }

    #[test]
    fn only_a_provisioned_machine_is_inventoried_again_and_it_comes_back_provisioned() {
        assert!(Provisioned.can_become(Inventorying));
        assert!(Inventorying.can_become(Provisioned));
        for s in [Detected, Proposed, Approved, Applied, Failed, Decommissioned] {
            assert!(!s.can_become(Inventorying), "{s}");
        }
        assert!(!Inventorying.can_become(Rejected));
        assert!(!Inventorying.can_become(Reported), "never a stranger again");
    }

    #[test]
    fn state_names_round_trip() {
        for s in super::State::ALL {
            assert_eq!(s.as_str().parse::<super::State>().unwrap(), s);
        }
    }
}
