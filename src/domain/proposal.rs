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

/// What a proposal does to the base branch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposalKind {
    /// Adds a machine git does not hold yet: its merge approves the machine.
    #[default]
    Register,
    /// Changes the manifests of a machine git holds (new hardware, netboot off after
    /// provisioning): its merge changes no state, closing it rejects only the change.
    Update,
    /// Removes a machine's manifests: merged and applied, the machine is decommissioned.
    Decommission,
    /// Provisions a machine git holds once more: netboot on and a Workflow of a new name.
    /// Merged, the machine is `applied` again and follows that Workflow.
    Reprovision,
    /// Registers a new board of a machine git holds (same serial or system UUID, other
    /// MACs): its merge approves the newcomer in the old one's file, name and address, and
    /// decommissions the old one. Closing it rejects the newcomer, as any registration.
    Replace,
}

impl ProposalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalKind::Register => "register",
            ProposalKind::Update => "update",
            ProposalKind::Decommission => "decommission",
            ProposalKind::Reprovision => "reprovision",
            ProposalKind::Replace => "replace",
        }
    }

    /// A change of a machine git already holds (an update or a decommission), reviewed
    /// without touching the machine's state; a registration (new or replacing) is not.
    pub fn is_change(self) -> bool {
        matches!(
            self,
            ProposalKind::Update | ProposalKind::Decommission | ProposalKind::Reprovision
        )
    }
}

impl FromStr for ProposalKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ProposalKind::Register,
            ProposalKind::Update,
            ProposalKind::Decommission,
            ProposalKind::Reprovision,
            ProposalKind::Replace,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown proposal kind {s:?}"))
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
    #[serde(default)]
    pub kind: ProposalKind,
    /// What its manifest was rendered from: once merged, what git holds for the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<super::Basis>,
    /// The machine a `replace` proposal takes over from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<Mac>,
}

/// The `once`-key recording that Registrar itself pushed `commit`.
pub fn pushed_key(commit: &str) -> String {
    format!("pushed:{commit}")
}

/// `registrar/aa-bb-cc-dd-ee-ff`: one branch per machine, since `:` is illegal in refs.
/// `gitops.branch_prefix`, set once at start: the branches of this Registrar (one site of
/// several sharing a repository). Another prefix is another Registrar's, never touched.
static BRANCH_PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub const DEFAULT_BRANCH_PREFIX: &str = "registrar/";

/// Sets this process's branch prefix; a second, different one is refused.
pub fn set_branch_prefix(prefix: &str) -> Result<(), String> {
    let set = BRANCH_PREFIX.get_or_init(|| prefix.to_string());
    if set != prefix {
        return Err(format!("the branch prefix is {set:?} already"));
    }
    Ok(())
}

/// `registrar/` unless `gitops.branch_prefix` says otherwise.
pub fn branch_prefix() -> &'static str {
    BRANCH_PREFIX.get().map(String::as_str).unwrap_or(DEFAULT_BRANCH_PREFIX)
}

/// Whether `prefix` can start branch names: lower-case letters, digits, `-`, `_`, `.` in
/// `/`-separated parts, ending with `/`.
pub fn is_branch_prefix(prefix: &str) -> bool {
    let Some(parts) = prefix.strip_suffix('/') else {
        return false;
    };
    !parts.is_empty()
        && parts.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && !part.ends_with(".lock")
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
                && !part.contains("..")
        })
}

pub fn branch_for(mac: &Mac) -> String {
    format!("{}{}", branch_prefix(), mac.dashed())
}

/// `registrar/aa-bb-cc-dd-ee-ff-update-7`: a change of a machine git holds gets a branch of
/// its own, named after the revision that asked for it, so a retry after a crash finds the
/// branch (and its pull request) it already made instead of opening a second one.
pub fn change_branch(mac: &Mac, kind: ProposalKind, rev: u64) -> String {
    format!("{}{}-{}-{rev}", branch_prefix(), mac.dashed(), kind.as_str())
}

/// The machine a Registrar branch is about: `registrar/<mac>` or a change branch.
pub fn mac_of_branch(branch: &str) -> Option<Mac> {
    let rest = branch.strip_prefix(branch_prefix())?;
    // A dashed MAC is 17 characters; a change branch adds `-<kind>-<rev>`.
    let (mac, suffix) = (rest.get(..17)?, &rest[17..]);
    let mac = Mac::parse(mac).ok()?;
    if suffix.is_empty() {
        return Some(mac);
    }
    let (kind, rev) = suffix.strip_prefix('-')?.rsplit_once('-')?;
    let kind: ProposalKind = kind.parse().ok()?;
    (kind.is_change() && !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit())).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_branches_name_their_machine() {
        let mac = Mac::parse("aa:bb:cc:dd:ee:0f").unwrap();
        assert_eq!(mac_of_branch(&branch_for(&mac)), Some(mac));
        let update = change_branch(&mac, ProposalKind::Update, 7);
        assert_eq!(update, "registrar/aa-bb-cc-dd-ee-0f-update-7");
        assert_eq!(mac_of_branch(&update), Some(mac));
        assert_eq!(mac_of_branch("registrar/aa-bb-cc-dd-ee-0f-register-7"), None);
        assert_eq!(mac_of_branch("registrar/aa-bb-cc-dd-ee-0f-update-"), None);
        assert_eq!(mac_of_branch("registrar/aa-bb-cc-dd-ee-0f-x"), None);
        assert_eq!(mac_of_branch("registrar/aa-bb"), None);
        assert_eq!(mac_of_branch("registrar-b/aa-bb-cc-dd-ee-0f"), None, "another site's");
        assert_eq!(mac_of_branch("main"), None);
    }
}
