//! The `local` forge: no GitHub needed. A proposal is its branch in the GitOps repository
//! plus Registrar's record of it; approving merges the branch into the base branch.

use std::sync::Arc;

use async_trait::async_trait;
use git2::Oid;

use super::{Draft, Forge, ForgeError, ForgeRef, Review};
use crate::domain::{Proposal, ProposalKind, ProposalState};
use crate::propose::git::{GitRepo, Merged};

pub struct LocalForge {
    git: Arc<GitRepo>,
}

impl LocalForge {
    pub fn new(git: Arc<GitRepo>) -> Self {
        LocalForge { git }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ForgeError> + Send + 'static,
) -> Result<T, ForgeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ForgeError::Other(format!("git task failed: {e}")))?
}

#[async_trait]
impl Forge for LocalForge {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn open(&self, _draft: &Draft<'_>, existing: Option<&Proposal>) -> Result<ForgeRef, ForgeError> {
        // The store numbers local proposals; the branch is the proposal.
        Ok(ForgeRef {
            number: existing.and_then(|p| p.number),
            url: None,
        })
    }

    async fn approve(&self, proposal: &Proposal, actor: &str) -> Result<(), ForgeError> {
        let git = self.git.clone();
        let branch = proposal.branch.clone();
        let message = format!(
            "Merge {branch}: {}\n\nApproved-by: {actor}\nRegistrar-Mac: {}\n",
            proposal.title, proposal.mac
        );
        blocking(move || match git.merge(&branch, &message)? {
            Merged::Merged(oid) => {
                tracing::info!(%branch, commit = %oid, "merged proposal");
                Ok(())
            }
            Merged::AlreadyMerged => Ok(()),
        })
        .await
    }

    async fn reject(&self, proposal: &Proposal, _actor: &str) -> Result<(), ForgeError> {
        let git = self.git.clone();
        let branch = proposal.branch.clone();
        blocking(move || Ok(git.delete_branch(&branch)?)).await
    }

    /// The local forge keeps no description or labels: what it shows is the branch.
    async fn review(&self, proposal: &Proposal) -> Result<Review, ForgeError> {
        Ok(Review {
            state: self.state_in_git(proposal).await?,
            head: proposal.head.clone(),
            description: None,
            labels: vec![],
        })
    }
}

impl LocalForge {
    /// Merged when the base holds what was reviewed (however it got there), open while the
    /// branch is there, closed once it is gone without that.
    async fn state_in_git(&self, proposal: &Proposal) -> Result<ProposalState, ForgeError> {
        let git = self.git.clone();
        let (branch, path) = (proposal.branch.clone(), proposal.path.clone());
        let head = Oid::from_str(&proposal.head).ok();
        let removes = proposal.kind == ProposalKind::Decommission;
        blocking(move || {
            git.fetch()?;
            if let Some(head) = head {
                if git.is_in_base(head)? {
                    return Ok(ProposalState::Merged);
                }
                // A decommission removes the file: merged (squashed or not, the branch gone
                // or not) once the base no longer has it; closed if the branch went and the
                // file stayed.
                if removes {
                    let gone = git.read_at(git.base_head()?, &path)?.is_none();
                    return Ok(match (gone, git.branch_head(&branch).is_some()) {
                        (true, _) => ProposalState::Merged,
                        (false, true) => ProposalState::Open,
                        (false, false) => ProposalState::Closed,
                    });
                }
                // A squash or rebase merge puts other commits on the base, and often deletes
                // the branch: what was reviewed is merged when the base holds the proposal's
                // file as its reviewed head has it.
                let reviewed = git.read_at(head, &path).ok().flatten();
                if let Some(reviewed) = reviewed
                    && git.read_at(git.base_head()?, &path)?.as_deref() == Some(reviewed.as_slice())
                {
                    return Ok(ProposalState::Merged);
                }
            }
            if git.branch_head(&branch).is_some() {
                return Ok(ProposalState::Open);
            }
            // The branch is gone and the base holds the proposal's file, changed since
            // Registrar's commit (a person amended the branch, then squash-merged): merged.
            // Only a branch gone with no such file on the base is a rejection.
            let on_base = git.read_at(git.base_head()?, &path)?;
            Ok(if on_base.is_some() {
                ProposalState::Merged
            } else {
                ProposalState::Closed
            })
        })
        .await
    }
}
