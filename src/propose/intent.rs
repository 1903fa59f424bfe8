//! The Proposer's surface: intents in, observations in, the machine's record out.
//!
//! An intent is what an operator or reviewer wants for a machine (through the API, the
//! console or the command line); an observation is what the forge says happened to the
//! machine's proposal, read from the forge itself (a webhook only says where to look). Each
//! is recorded in the store before any side effect, then carried out under the machine's
//! lock; whatever a crash interrupts, the reconcile (`review.rs`) and the sync queue
//! (`sync.rs`) finish from the record.

use std::sync::Arc;

use chrono::Utc;

use super::{ProposeError, Proposer, blocking};
use crate::domain::{Mac, Machine, ProposalKind, State};
use crate::store::StoreError;

/// What a person wants for a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Merge the open proposal, at the head that was reviewed.
    Approve,
    /// Close the proposal and suppress the machine, so nothing proposes it again.
    Reject { reason: String },
    /// Lift a rejection: the machine is proposed again (its pull request reopened, or a
    /// fresh one where the forge refuses).
    Unsuppress,
    /// Propose again from the recorded facts (after a template change, say).
    Rerender,
    /// Provision with this workflow: the proposal is re-rendered with it.
    Workflow(String),
    /// Drop every record of a machine that is not in git's hands, so it is noticed afresh.
    Forget,
    /// Propose removing the files of a machine git holds; merged and applied, it is
    /// decommissioned (its addresses freed, its history kept).
    Decommission,
    /// Provision a machine git holds once more (a provisioned one, or one whose Workflow
    /// failed): proposed as a change that switches netboot on with a Workflow of a new name.
    Reprovision,
    /// Boot a provisioned machine into discovery again, so it reports its hardware once
    /// more (opt-in by its rule); what changed is then proposed as an update.
    Reinventory,
}

/// What the forge says about a machine's proposal, read from the forge (not from a delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Pull request `number` is merged: the machine is approved.
    Merged { number: u64 },
    /// Pull request `number` is closed unmerged: the machine is rejected.
    Closed { number: u64 },
    /// Pull request `number` is open again after a rejection.
    Reopened { number: u64 },
    /// The proposal's branch is at `sha`: if that is not Registrar's commit, someone
    /// pushed, and Registrar hands the branch over.
    Head { sha: String },
}

impl Proposer {
    /// Records `intent` for `mac` and carries it out on a task of its own: a caller that
    /// gives up (a browser, a script) never cuts a review off half-way. The machine as
    /// recorded afterwards; `None` once it is forgotten.
    pub async fn intend(
        self: &Arc<Self>,
        mac: Mac,
        intent: Intent,
        actor: &str,
    ) -> Result<Option<Machine>, ProposeError> {
        let actor = actor.to_string();
        tokio::spawn({
            let proposer = self.clone();
            async move { proposer.carry_out(mac, intent, &actor).await }
        })
        .await
        .map_err(|e| ProposeError::Join(e.to_string()))?
    }

    async fn carry_out(&self, mac: Mac, intent: Intent, actor: &str) -> Result<Option<Machine>, ProposeError> {
        let store = self.store.clone();
        let who = actor.to_string();
        let machine = match intent {
            Intent::Approve => self.approve(mac, actor).await?,
            Intent::Reject { reason } => self.reject(mac, actor, &reason).await?,
            Intent::Forget => {
                self.forget(mac, actor).await?;
                return Ok(None);
            }
            Intent::Unsuppress => blocking(move || store.unsuppress(mac, &who, Utc::now())).await?,
            Intent::Decommission => {
                blocking(move || store.want(mac, ProposalKind::Decommission, &who, Utc::now())).await?
            }
            Intent::Reprovision => {
                let (check, mac_) = (self.store.clone(), mac);
                let machine = blocking(move || check.machine(mac_))
                    .await?
                    .ok_or(ProposeError::NotFound(mac))?;
                // Refused now, with the reason, rather than retried by the sync forever.
                if let (Some(name), Some(settled)) = (machine.name.as_deref(), machine.settled.as_ref()) {
                    self.reprovision_render(&machine, name, settled).await?;
                }
                blocking(move || {
                    if let Some(m) = store.machine(mac)?
                        && m.wanted.is_some_and(|k| k != ProposalKind::Reprovision)
                    {
                        let wanted = m.wanted.map(ProposalKind::as_str).unwrap_or_default();
                        return Err(ProposeError::Conflict(format!(
                            "{mac} has a {wanted} asked for: merge or close it first"
                        )));
                    }
                    Ok(store.want(mac, ProposalKind::Reprovision, &who, Utc::now())?)
                })
                .await?
            }
            Intent::Reinventory => {
                let machine = blocking(move || store.machine(mac))
                    .await?
                    .ok_or(ProposeError::NotFound(mac))?;
                self.inventory_target(&machine).await?;
                let store = self.store.clone();
                // The Workflow comes from the hand-off, which follows the cluster.
                return blocking(move || {
                    store.transition(mac, State::Inventorying, "re-inventory asked for", &who, Utc::now())
                })
                .await
                .map(Some);
            }
            Intent::Rerender => {
                blocking(move || {
                    store.requeue(mac, Utc::now())?;
                    store.machine(mac)?.ok_or(StoreError::NotFound(mac))
                })
                .await?
            }
            Intent::Workflow(workflow) => {
                if !self.renderer.has_workflow(&workflow) {
                    let known: Vec<&str> = self.renderer.workflows().collect();
                    return Err(ProposeError::Invalid(format!(
                        "no workflow template named {workflow:?}; known: {}",
                        known.join(", ")
                    )));
                }
                blocking(move || store.set_workflow(mac, &workflow, &who, Utc::now())).await?
            }
        };
        // The sync queue carries the recorded change to git and the forge.
        self.wake();
        Ok(Some(machine))
    }

    /// Brings `mac`'s record in line with what the forge says. Stale news changes nothing:
    /// each observation is checked against the record (and, for a reopening, against the
    /// forge once more) while the machine is held.
    pub async fn observe(&self, mac: Mac, observation: Observation, actor: &str) -> Result<(), ProposeError> {
        match observation {
            Observation::Merged { number } => {
                self.finish_approval(mac, &format!("pull request #{number} merged"), actor)
                    .await?;
                // A review slot is free: the queue lets the next machine through now.
                self.wake_if_slots();
            }
            Observation::Closed { number } => {
                self.record_rejection(mac, &format!("pull request #{number} closed"), actor)
                    .await?;
                self.wake_if_slots();
            }
            Observation::Reopened { number } => self.record_reopening(mac, number, actor).await?,
            Observation::Head { sha } => {
                // hands_off takes the machine's lock itself.
                let store = self.store.clone();
                let recorded = blocking(move || store.proposal(mac)).await?;
                if let Some(p) = recorded.filter(|p| !p.hands_off)
                    && self.is_foreign_head(&p, &sha).await?
                {
                    self.hands_off(&p, &sha).await?;
                }
            }
        }
        Ok(())
    }
    /// Someone moved the base branch: fetch it, let the base's index look again, and
    /// rebuild the proposals that share a kustomization with it.
    pub async fn observe_base_moved(&self) -> Result<(), ProposeError> {
        let git = self.git.clone();
        blocking(move || git.fetch()).await?;
        self.base_moved();
        self.rebuild_stale().await?;
        Ok(())
    }
}
