//! How a group's pull request ended, as the forge says: merged registers the members
//! whose file the base holds, closed rejects the members the reviewers were shown, open
//! leaves out the machines its description shows unchecked.

use chrono::Utc;

use super::GroupEnd;
use crate::domain::{Mac, Proposal, ProposalState};
use crate::propose::{Observation, ProposeError, Proposer, blocking, git};

impl Proposer {
    /// Reads group `id`'s pull request from the forge and records what it says: for forges
    /// whose deliveries only name a branch, and for the reconcile of forges that list no
    /// changes. A group finished already, or not on the forge yet, is nothing to look at.
    pub async fn look_at_group(&self, id: i64, actor: &str) -> Result<(), ProposeError> {
        let store = self.store.clone();
        let Some(group) = blocking(move || store.group(id)).await? else {
            return Ok(());
        };
        let Some(number) = group.number else { return Ok(()) };
        let review = self.forge.review(&self.shown(&group, super::no_machine())).await?;
        let end = match review.state {
            ProposalState::Merged => GroupEnd::Merged,
            ProposalState::Closed => GroupEnd::Closed,
            _ => GroupEnd::Open,
        };
        let description = review.description.unwrap_or_default();
        // A forge that no longer shows the head (its branch deleted) showed what Registrar
        // last pushed.
        let head = if review.head.is_empty() {
            group.head.clone()
        } else {
            review.head
        };
        self.observe_group(id, number, end, &description, &head, actor).await
    }

    /// What the forge says about group `id`'s pull request `number` now: merged, it
    /// registers the members whose file the base holds (one that joined after the reviewed
    /// head goes back to its queue); closed, it rejects the members the reviewed head held
    /// (the others go back to their queue) and deletes the branch, so the pull request
    /// cannot be reopened behind Registrar's back; open, the machines its description shows
    /// unchecked are left out.
    pub(crate) async fn observe_group(
        &self,
        id: i64,
        number: u64,
        end: GroupEnd,
        description: &str,
        head: &str,
        actor: &str,
    ) -> Result<(), ProposeError> {
        let gate = self.group_gate.lock().await;
        let store = self.store.clone();
        let Some(group) = blocking(move || store.group(id))
            .await?
            .filter(|g| g.number == Some(number))
        else {
            return Ok(());
        };
        if end == GroupEnd::Open {
            let store = self.store.clone();
            let members = blocking(move || store.group_members(id)).await?;
            if !group.hands_off && self.is_foreign_group_head(&group, head).await? {
                self.hand_over_group(&group, head, &members).await?;
            }
            let left_out: Vec<Mac> = crate::domain::group::unchecked_members(description)
                .into_iter()
                .filter(|mac| members.iter().any(|m| m.mac == *mac))
                .collect();
            drop(gate);
            for mac in left_out {
                let why = format!("left out of pull request #{number} (unchecked in its description)");
                self.reject(mac, actor, &why).await?;
            }
            self.wake();
            return Ok(());
        }
        // Ended: it takes no member from now on, so the members read next are all it has.
        let state = if end == GroupEnd::Merged { "merged" } else { "closed" };
        let store = self.store.clone();
        let members = blocking(move || {
            store.set_group_state(id, state)?;
            store.group_members(id)
        })
        .await?;
        let git = self.git.clone();
        blocking(move || git.fetch()).await?;
        // Merged: what the base holds now; closed: what the reviewers were shown.
        let commit = if end == GroupEnd::Merged {
            let git = self.git.clone();
            blocking(move || git.base_head()).await?
        } else {
            git2::Oid::from_str(head).map_err(|e| ProposeError::Conflict(format!("head {head}: {e}")))?
        };
        for m in members {
            // Recorded already (a crash cut the last look short): nothing to do again.
            let (store, mac) = (self.store.clone(), m.mac);
            let recorded = blocking(move || store.proposal(mac)).await?;
            if recorded.is_none_or(|p| !matches!(p.state, ProposalState::Open | ProposalState::Approving)) {
                continue;
            }
            // Any file at its path counts (a person may have edited it on the branch): git
            // holds the machine, and what differs comes back as an update.
            // (A head that can no longer be read counts as holding it: shown, then closed.)
            let (git, path) = (self.git.clone(), m.path.clone());
            let held = blocking(move || {
                Ok::<_, git::GitError>(git.read_at(commit, &path).map(|f| f.is_some()).unwrap_or(true))
            })
            .await?;
            match (end, held) {
                (GroupEnd::Merged, true) => self.observe(m.mac, Observation::Merged { number }, actor).await?,
                (_, true) => self.observe(m.mac, Observation::Closed { number }, actor).await?,
                (_, false) => {
                    let (store, mac) = (self.store.clone(), m.mac);
                    blocking(move || {
                        store.leave_group(mac)?;
                        store.requeue(mac, Utc::now()).map(|_| ())
                    })
                    .await?;
                }
            }
        }
        if end == GroupEnd::Closed {
            let (git, branch) = (self.git.clone(), group.branch.clone());
            if let Err(e) = blocking(move || git.delete_branch(&branch)).await {
                tracing::warn!(group = %group.branch, error = %e, "could not delete the closed group's branch");
            }
        }
        let store = self.store.clone();
        blocking(move || store.finish_group(id)).await?;
        tracing::info!(group = %group.branch, ?end, "group proposal ended");
        self.wake();
        Ok(())
    }

    /// A member's rejection is recorded (the store took it out of its group): the group
    /// is rewritten without it at the next pass, so nothing is closed on the forge.
    pub(in crate::propose) async fn record_left_group(&self, p: &Proposal) -> Result<(), ProposeError> {
        let (store, mac) = (self.store.clone(), p.mac);
        blocking(move || {
            store.leave_group(mac)?;
            store.set_proposal_state(mac, ProposalState::Closed, Utc::now())
        })
        .await?;
        self.wake();
        Ok(())
    }
}
