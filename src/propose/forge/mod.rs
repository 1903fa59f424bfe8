//! Where proposals are reviewed. The `local` forge is the embedded default: proposals are
//! reviewed through Registrar's own API, approval is a real git merge. The GitHub, Forgejo/
//! Gitea and GitLab forges map the same calls onto pull (merge) requests.

pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod hooks;
pub mod local;
mod rest;

use async_trait::async_trait;

use crate::domain::{Proposal, ProposalState};
use crate::render::Rendered;

pub use local::LocalForge;

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error(transparent)]
    Git(#[from] super::git::GitError),
    /// The forge refused because what it holds changed since it was looked at (a merge
    /// pinned to a head that moved): look again, nothing was done.
    #[error("{0}")]
    Conflict(String),
    /// Closing was asked of a pull request that is merged already: git holds the machine.
    #[error("pull request #{0} is merged already")]
    Merged(u64),
    #[error("{0}")]
    Other(String),
}

/// How long a merge asked of Forgejo/Gitea or GitLab waits for the forge to be ready: after
/// a push they check mergeability (and update the head they compare with) in the background,
/// and refuse a merge until then.
pub(crate) const MERGE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits between tries, longer each time, until a time limit.
pub(crate) struct Patience {
    deadline: tokio::time::Instant,
    pause: std::time::Duration,
}

impl Patience {
    pub(crate) fn new(limit: std::time::Duration) -> Self {
        Patience {
            deadline: tokio::time::Instant::now() + limit,
            pause: std::time::Duration::from_millis(250),
        }
    }

    /// Waits before the next try; false once the time is up.
    pub(crate) async fn wait(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause.min(self.deadline - now)).await;
        self.pause = (self.pause * 2).min(std::time::Duration::from_secs(5));
        true
    }
}

/// The forge's handle on a proposal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgeRef {
    pub number: Option<u64>,
    pub url: Option<String>,
}

/// What a proposal says, for the forge to show.
pub struct Draft<'a> {
    pub branch: &'a str,
    pub title: &'a str,
    /// The description (Markdown, its facts escaped).
    pub body: &'a str,
    /// The provisioning workflow its label names, if any.
    pub workflow: Option<&'a str>,
}

impl<'a> Draft<'a> {
    /// One machine's proposal, as rendered.
    pub fn of(branch: &'a str, rendered: &'a Rendered) -> Self {
        Draft {
            branch,
            title: &rendered.title,
            body: &rendered.summary,
            workflow: rendered.decision.workflow.as_deref(),
        }
    }
}

/// A proposal as the forge shows it now.
#[derive(Debug, Clone)]
pub struct Review {
    pub state: ProposalState,
    /// The commit its branch is at, as the forge shows it ("" where unknown).
    pub head: String,
    /// None where the forge keeps no description people edit.
    pub description: Option<String>,
    /// A reviewer's `workflow/<name>` label chooses that workflow.
    pub labels: Vec<String>,
}

impl Review {
    /// A proposal the forge has not been asked to show yet: nothing was decided.
    pub fn unopened() -> Self {
        Review {
            state: ProposalState::Open,
            head: String::new(),
            description: None,
            labels: vec![],
        }
    }
}

/// What a forge does with a proposal approved by policy (`discovery.auto_approve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoMerge {
    /// The forge merges it itself once its required checks pass (GitHub's auto-merge).
    Enabled,
    /// Nothing stood in the way: the forge merged it already.
    Merged,
    /// The forge has no merge-when-ready: Registrar approves it now.
    MergeNow,
}

#[async_trait]
pub trait Forge: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    /// Called after the branch was pushed: makes sure one proposal exists for it, showing
    /// `draft`. Must be idempotent: `existing` is what Registrar recorded, if anything.
    async fn open(&self, draft: &Draft<'_>, existing: Option<&Proposal>) -> Result<ForgeRef, ForgeError>;
    /// Approves (merges) a proposal on behalf of `actor`.
    async fn approve(&self, proposal: &Proposal, actor: &str) -> Result<(), ForgeError>;
    /// Hands a proposal approved by policy to the forge's own merge-when-ready, if it has
    /// one (the local forge has no checks to wait for: merge now).
    async fn auto_merge(&self, _proposal: &Proposal) -> Result<AutoMerge, ForgeError> {
        Ok(AutoMerge::MergeNow)
    }
    /// Takes back what `auto_merge` handed over, if it still waits: the proposal changed and
    /// no longer qualifies, so a person must review it.
    async fn cancel_auto_merge(&self, _proposal: &Proposal) -> Result<(), ForgeError> {
        Ok(())
    }
    /// Rejects a proposal: closes it and removes its branch.
    async fn reject(&self, proposal: &Proposal, actor: &str) -> Result<(), ForgeError>;
    /// A proposal as the forge shows it now — its state, head, description and labels, read
    /// at once — for the reconcile and for a look a delivery asked for.
    async fn review(&self, proposal: &Proposal) -> Result<Review, ForgeError>;
    /// Says `text` (Markdown) on the proposal's pull request for its reviewers; nothing
    /// where the forge has no such place (the local forge). Callers say each thing once.
    async fn say(&self, _proposal: &Proposal, _text: &str) -> Result<(), ForgeError> {
        Ok(())
    }
    /// What became of the proposal whose branch is `branch`, found by the branch alone (the
    /// store lost its record): open, merged, closed, or no proposal at all. The local forge
    /// deletes branches it merges or rejects, so a branch it still has is open.
    async fn branch_state(&self, _branch: &str) -> Result<Option<(ProposalState, ForgeRef)>, ForgeError> {
        Ok(Some((ProposalState::Open, ForgeRef::default())))
    }
    /// True when the forge reports changes in bulk (a listing, webhooks), so the reconcile
    /// need not ask about every open proposal one by one.
    fn lists_changes(&self) -> bool {
        false
    }
    /// Why a proposal may not be approved through Registrar (the forge is where reviews
    /// happen), if that is so.
    fn approval_elsewhere(&self, _proposal: &Proposal) -> Option<String> {
        None
    }
}
