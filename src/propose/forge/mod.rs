//! Where proposals are reviewed. The `local` forge is the embedded default: proposals are
//! reviewed through Registrar's own API, approval is a real git merge. The GitHub, Forgejo/
//! Gitea and GitLab forges map the same calls onto pull (merge) requests.

pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod hooks;
pub mod local;

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
    pub description: Option<String>,
    /// A reviewer's `workflow/<name>` label chooses that workflow.
    pub labels: Vec<String>,
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
    /// What the forge says about a proposal now, for the reconcile loop.
    async fn state(&self, proposal: &Proposal) -> Result<ProposalState, ForgeError>;
    /// Tells reviewers, once, that Registrar stopped updating a branch someone pushed to.
    async fn note_hands_off(&self, _proposal: &Proposal, _head: &str) -> Result<(), ForgeError> {
        Ok(())
    }
    /// What became of the proposal whose branch is `branch`, found by the branch alone (the
    /// store lost its record): open, merged, closed, or no proposal at all. The local forge
    /// deletes branches it merges or rejects, so a branch it still has is open.
    async fn branch_state(&self, _branch: &str) -> Result<Option<(ProposalState, ForgeRef)>, ForgeError> {
        Ok(Some((ProposalState::Open, ForgeRef::default())))
    }
    /// A proposal's description as it is on the forge now (None: the forge keeps none that
    /// people edit).
    async fn description(&self, _proposal: &Proposal) -> Result<Option<String>, ForgeError> {
        Ok(None)
    }
    /// Everything a look at a proposal on the forge needs, read at once: its state, head,
    /// description and labels. Forges whose deliveries only name a branch implement it
    /// with one request; the default reads the state and the description.
    async fn review(&self, proposal: &Proposal) -> Result<Review, ForgeError> {
        Ok(Review {
            state: self.state(proposal).await?,
            head: String::new(),
            description: self.description(proposal).await?,
            labels: vec![],
        })
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
