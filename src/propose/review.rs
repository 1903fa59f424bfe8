//! Reviews: approving, rejecting and forgetting a machine, each recorded as an intent first,
//! and the reconcile that carries unfinished ones through.

use chrono::Utc;

use super::forge::ForgeError;
use super::git;
use super::{MachineGuard, ProposeError, Proposer, blocking};
use crate::domain::{Mac, Machine, Proposal, ProposalState, State};
use crate::store::StoreError;

impl Proposer {
    /// Approves a machine's open proposal: record the intent, merge, record the result.
    pub(super) async fn approve(&self, mac: Mac, actor: &str) -> Result<Machine, ProposeError> {
        let machine = self.machines.lock(mac).await;
        self.approve_held(&machine, mac, actor).await
    }

    /// Approves `mac`'s open proposal, the machine being held by the caller.
    pub(super) async fn approve_held(
        &self,
        machine: &MachineGuard<'_>,
        mac: Mac,
        actor: &str,
    ) -> Result<Machine, ProposeError> {
        let mut proposal = self.open_proposal(mac).await?;
        if let Some(why) = self.forge.approval_elsewhere(&proposal) {
            return Err(ProposeError::Conflict(why));
        }
        if crate::domain::group_of_branch(&proposal.branch).is_some() {
            return Err(ProposeError::Conflict(format!(
                "{mac} is proposed in a group: merge {} on the forge to register it with the others, or leave it out there",
                proposal.url.as_deref().unwrap_or("the group's pull request")
            )));
        }
        // Another replica works git and the forge: the approval is recorded as an intent
        // (`approving`, with who asked), and the leader's reconcile merges it.
        if self.standing_by() {
            let (store, who) = (self.store.clone(), actor.to_string());
            return blocking(move || {
                store.set_proposal_state(mac, ProposalState::Approving, Utc::now())?;
                let cause = "approval asked; the leading replica merges it";
                store.note(mac, cause, &who, Utc::now())?;
                store.machine(mac)?.ok_or(StoreError::NotFound(mac))
            })
            .await;
        }
        // A proposal behind the base (another one merged meanwhile) is rebuilt first, so a
        // shared kustomization never conflicts.
        let (git, branch) = (self.git.clone(), proposal.branch.clone());
        if !proposal.hands_off && !blocking(move || Ok::<_, git::GitError>(git.is_on_base(&branch))).await? {
            let store = self.store.clone();
            let work = blocking(move || store.requeue(mac, Utc::now())).await?;
            // Boxed: publishing may approve by policy, which comes back here.
            Box::pin(self.publish_revision(machine, work)).await?;
            proposal = self.open_proposal(mac).await?;
        }
        let store = self.store.clone();
        blocking(move || store.set_proposal_state(mac, ProposalState::Approving, Utc::now())).await?;
        if let Err(e) = self.forge.approve(&proposal, actor).await {
            let store = self.store.clone();
            blocking(move || store.set_proposal_state(mac, ProposalState::Open, Utc::now())).await?;
            return Err(match e {
                ForgeError::Git(g @ git::GitError::Conflict { .. }) => ProposeError::Conflict(g.to_string()),
                ForgeError::Conflict(why) => ProposeError::Conflict(why),
                other => other.into(),
            });
        }
        self.record_approval(machine, &format!("{} merged", proposal.branch), actor)
            .await
    }

    /// Records an approval that happened on the forge (a merge).
    pub(super) async fn finish_approval(&self, mac: Mac, cause: &str, actor: &str) -> Result<Machine, ProposeError> {
        let machine = self.machines.lock(mac).await;
        self.record_approval(&machine, cause, actor).await
    }

    /// Records the held machine's proposal as merged and the machine as approved.
    pub(super) async fn record_approval(
        &self,
        held: &MachineGuard<'_>,
        cause: &str,
        actor: &str,
    ) -> Result<Machine, ProposeError> {
        let (store, mac) = (self.store.clone(), held.mac());
        let (cause_s, actor) = (cause.to_string(), actor.to_string());
        let (mut machine, superseded) = blocking(move || {
            let machine = store.record_merge(mac, &cause_s, &actor, Utc::now())?;
            // A merged replacement: the old board's change still open is closed below.
            let old = store.proposal(mac)?.and_then(|p| p.replaces);
            let superseded = match old {
                Some(old) => store
                    .proposal(old)?
                    .filter(|p| p.kind.is_change() && p.state == ProposalState::Rejecting),
                None => None,
            };
            Ok::<_, StoreError>((machine, superseded))
        })
        .await?;
        if let Some(change) = superseded {
            let old = self.machines.lock(change.mac).await;
            let why = format!("superseded: its board was replaced by {mac}");
            // Boxed: closing it may find it merged meanwhile, which records an approval.
            if let Err(e) = Box::pin(self.close_rejected_as(&old, &change, "registrar", &why)).await {
                tracing::warn!(mac = %change.mac, error = %e, "could not close the replaced board's change; retried at the next reconcile");
            }
        }
        // Without a cluster to watch, the merge is all Registrar can see of a decommission.
        if machine.state == State::Decommissioning && !self.watches_cluster() {
            machine = self
                .record_decommissioned(
                    held,
                    &format!("{cause}; no cluster is watched, so the merge finishes it"),
                )
                .await?;
        }
        // The discovery objects stay until the approved Hardware is in the cluster (the
        // hand-off, app/handoff.rs): until then they are the only Hardware Smee has for it.
        // The base moved: proposals sharing a kustomization are rebuilt on it.
        let git = self.git.clone();
        blocking(move || git.fetch()).await?;
        if let Err(e) = self.rebuild_stale().await {
            tracing::warn!(error = %e, "could not rebuild proposals on the new base");
        }
        Ok(machine)
    }

    /// Rejects a machine: suppress it first (so nothing re-proposes it), then close the proposal.
    pub(super) async fn reject(&self, mac: Mac, actor: &str, reason: &str) -> Result<Machine, ProposeError> {
        let held = self.machines.lock(mac).await;
        let store = self.store.clone();
        if let Some(change) = blocking(move || store.proposal(mac))
            .await?
            .filter(|p| p.kind.is_change())
        {
            return self.close_change(&held, change, actor, reason).await;
        }
        let store = self.store.clone();
        let (actor_s, reason) = (
            actor.to_string(),
            if reason.is_empty() {
                "rejected".to_string()
            } else {
                reason.to_string()
            },
        );
        let (machine, proposal) = blocking(move || {
            let m = store.reject(mac, &reason, &actor_s, Utc::now())?;
            Ok::<_, StoreError>((m, store.proposal(mac)?))
        })
        .await?;
        // Recorded closed, but a reviewer may have reopened it since and its delivery is not
        // handled yet: a rejection leaves the forge closed, so it looks rather than trusts.
        let proposal = match proposal {
            Some(p) if p.state == ProposalState::Closed && p.number.is_some() => {
                if self.forge.review(&p).await?.state == ProposalState::Open {
                    let store = self.store.clone();
                    blocking(move || store.set_proposal_state(mac, ProposalState::Rejecting, Utc::now())).await?;
                    Some(Proposal {
                        state: ProposalState::Rejecting,
                        ..p
                    })
                } else {
                    Some(p)
                }
            }
            other => other,
        };
        if let Some(p) = proposal.filter(|p| p.state == ProposalState::Rejecting)
            && !self.close_rejected(&held, &p, actor).await?
        {
            return Err(ProposeError::Conflict(format!(
                "{mac}'s pull request was merged before the rejection reached the forge: it is approved, and removing it is now a change to git"
            )));
        }
        self.remove_discovery_objects(mac).await;
        self.release_addresses(mac).await?;
        Ok(machine)
    }

    /// Refuses a proposed change of a machine git holds: the change is closed (intent
    /// first, as a rejection), the machine keeps its state and is not suppressed.
    async fn close_change(
        &self,
        held: &MachineGuard<'_>,
        change: Proposal,
        actor: &str,
        reason: &str,
    ) -> Result<Machine, ProposeError> {
        let mac = change.mac;
        if !matches!(
            change.state,
            ProposalState::Open | ProposalState::Approving | ProposalState::Rejecting
        ) {
            return Err(ProposeError::Conflict(format!(
                "{mac} has no open change to close (its {} is {}); a machine git holds is removed by decommissioning it",
                change.kind.as_str(),
                change.state
            )));
        }
        let store = self.store.clone();
        blocking(move || store.set_proposal_state(mac, ProposalState::Rejecting, Utc::now())).await?;
        let change = Proposal {
            state: ProposalState::Rejecting,
            ..change
        };
        let reason = if reason.is_empty() { "closed" } else { reason };
        if !self.close_rejected_as(held, &change, actor, reason).await? {
            return Err(ProposeError::Conflict(format!(
                "{mac}'s {} was merged before it could be closed",
                change.kind.as_str()
            )));
        }
        let store = self.store.clone();
        blocking(move || store.machine(mac)?.ok_or(StoreError::NotFound(mac))).await
    }

    /// Carries a recorded rejection to the forge, then records it done: a closed proposal
    /// is terminal, and costs nothing at rest (a reopen comes as a webhook, or in the
    /// forge's list of recently updated pull requests).
    /// False when the forge had merged it already: then the machine is recorded approved,
    /// since git holds it, and the rejection did not happen.
    async fn close_rejected(&self, held: &MachineGuard<'_>, p: &Proposal, actor: &str) -> Result<bool, ProposeError> {
        self.close_rejected_as(held, p, actor, "closed (resumed)").await
    }

    async fn close_rejected_as(
        &self,
        held: &MachineGuard<'_>,
        p: &Proposal,
        actor: &str,
        reason: &str,
    ) -> Result<bool, ProposeError> {
        // A group's member: its group is rewritten without it; the pull request stays.
        if crate::domain::group_of_branch(&p.branch).is_some() && !p.kind.is_change() {
            self.record_left_group(p).await?;
            return Ok(true);
        }
        // Another replica works the forge: the rejection is recorded (`rejecting`), and
        // the leader's reconcile closes it.
        if self.standing_by() {
            return Ok(true);
        }
        match self.forge.reject(p, actor).await {
            Err(ForgeError::Merged(number)) => {
                let cause = format!("pull request #{number} was merged before the rejection reached the forge");
                self.record_approval(held, &cause, "registrar").await?;
                return Ok(false);
            }
            other => other?,
        }
        let (store, mac, kind) = (self.store.clone(), p.mac, p.kind);
        let (actor, reason) = (actor.to_string(), reason.to_string());
        blocking(move || {
            if kind.is_change() {
                store.record_change_closed(mac, &reason, &actor, Utc::now()).map(|_| ())
            } else {
                store.set_proposal_state(mac, ProposalState::Closed, Utc::now())
            }
        })
        .await?;
        Ok(true)
    }

    /// Forgets a machine no proposal of which is open or merged, so that it is noticed
    /// afresh; in the lane, so no sync of it is half done, and its discovery objects go too.
    pub(super) async fn forget(&self, mac: Mac, actor: &str) -> Result<(), ProposeError> {
        let _machine = self.machines.lock(mac).await;
        let (store, who) = (self.store.clone(), actor.to_string());
        blocking(move || store.forget(mac, &who, Utc::now())).await?;
        self.remove_discovery_objects(mac).await;
        self.release_addresses(mac).await?;
        Ok(())
    }

    /// Records a rejection that happened on the forge (a pull request closed unmerged).
    pub(super) async fn record_rejection(&self, mac: Mac, cause: &str, actor: &str) -> Result<Machine, ProposeError> {
        let _machine = self.machines.lock(mac).await;
        let store = self.store.clone();
        let (cause, actor) = (cause.to_string(), actor.to_string());
        let store2 = self.store.clone();
        if blocking(move || store2.proposal(mac))
            .await?
            .is_some_and(|p| p.kind.is_change())
        {
            return blocking(move || store.record_change_closed(mac, &cause, &actor, Utc::now())).await;
        }
        let machine = blocking(move || {
            let m = store.reject(mac, &cause, &actor, Utc::now())?;
            // The forge closed it: nothing is left to carry there.
            if store
                .proposal(mac)?
                .is_some_and(|p| p.state == ProposalState::Rejecting)
            {
                store.set_proposal_state(mac, ProposalState::Closed, Utc::now())?;
            }
            Ok::<_, StoreError>(m)
        })
        .await?;
        self.remove_discovery_objects(mac).await;
        self.release_addresses(mac).await?;
        Ok(machine)
    }

    /// A reviewer reopened the machine's pull request `number` after a rejection: it is
    /// proposed again on that pull request, recorded open (it is, so a rejection from now on
    /// must close it on the forge). The forge is asked again while the machine is held: a
    /// rejection that closed it between the first look and now is not undone by a stale one.
    pub(super) async fn record_reopening(&self, mac: Mac, number: u64, actor: &str) -> Result<(), ProposeError> {
        let _held = self.machines.lock(mac).await;
        let store = self.store.clone();
        let (machine, recorded) =
            blocking(move || Ok::<_, StoreError>((store.machine(mac)?, store.proposal(mac)?))).await?;
        let (Some(machine), Some(recorded)) = (machine, recorded.filter(|p| p.number == Some(number))) else {
            return Ok(());
        };
        let rejected = machine.state == State::Rejected;
        if !(rejected || recorded.state == ProposalState::Closed)
            || self.forge.review(&recorded).await?.state != ProposalState::Open
        {
            return Ok(());
        }
        let (store, who) = (self.store.clone(), actor.to_string());
        blocking(move || {
            if rejected {
                store.unsuppress(mac, &who, Utc::now())?;
            }
            store.set_proposal_state(mac, ProposalState::Open, Utc::now())
        })
        .await?;
        self.wake();
        Ok(())
    }

    async fn open_proposal(&self, mac: Mac) -> Result<Proposal, ProposeError> {
        let store = self.store.clone();
        let p = blocking(move || store.proposal(mac))
            .await?
            .ok_or(ProposeError::NotFound(mac))?;
        match p.state {
            ProposalState::Open | ProposalState::Approving => Ok(p),
            s => Err(ProposeError::Conflict(format!(
                "the proposal for {mac} is {s}, not open"
            ))),
        }
    }

    /// `mac`'s proposal, if it is (still) in `state`.
    async fn proposal_in(&self, mac: Mac, state: ProposalState) -> Result<Option<Proposal>, ProposeError> {
        let store = self.store.clone();
        Ok(blocking(move || store.proposal(mac))
            .await?
            .filter(|p| p.state == state))
    }

    /// Converges Registrar's records with what the forge and the repository say, so a crash
    /// in the middle of a review, or a merge done outside Registrar, leaves nothing behind.
    pub async fn reconcile(&self) -> Result<(), ProposeError> {
        let started = std::time::Instant::now();
        let store = self.store.clone();
        let proposals = blocking(move || store.proposals(None)).await?;
        let mut groups_looked_at = std::collections::HashSet::new();
        for p in proposals {
            let result: Result<(), ProposeError> = async {
                match p.state {
                    ProposalState::Merged | ProposalState::Closed => {}
                    ProposalState::Rejecting => {
                        // Rejected, but a crash may have come before the forge heard of it.
                        // Read again in the lane: the rejection may have been lifted since.
                        let held = self.machines.lock(p.mac).await;
                        if let Some(p) = self.proposal_in(p.mac, ProposalState::Rejecting).await? {
                            self.close_rejected(&held, &p, "registrar").await?;
                        }
                    }
                    ProposalState::Approving => {
                        // In the lane, so no background sync pushes the branch mid-merge.
                        let machine = self.machines.lock(p.mac).await;
                        let Some(p) = self.proposal_in(p.mac, ProposalState::Approving).await? else {
                            return Ok(());
                        };
                        if self.forge.review(&p).await?.state != ProposalState::Merged
                            && let Err(e) = self.forge.approve(&p, "registrar").await
                        {
                            // Not merged (the head moved, branch protection): back to review,
                            // never merged unattended on a later pass.
                            let (store, mac, why) = (self.store.clone(), p.mac, e.to_string());
                            blocking(move || {
                                store.set_proposal_state(mac, ProposalState::Open, Utc::now())?;
                                store.set_error(mac, Some(&format!("the interrupted approval did not merge: {why}")))
                            })
                            .await?;
                            return Ok(());
                        }
                        self.record_approval(&machine, &format!("{} merged (resumed)", p.branch), "registrar")
                            .await?;
                    }
                    ProposalState::Open if self.forge.lists_changes() => {}
                    ProposalState::Open => {
                        // A group's pull request is read once, for all its members.
                        if let Some(group) = crate::domain::group_of_branch(&p.branch) {
                            if groups_looked_at.insert(group) {
                                self.look_at_group(group, "registrar").await?;
                            }
                            return Ok(());
                        }
                        let review = self.forge.review(&p).await?;
                        match review.state {
                            ProposalState::Merged => {
                                self.finish_approval(p.mac, &format!("{} found merged", p.branch), "registrar")
                                    .await?;
                            }
                            ProposalState::Closed => {
                                self.reject(
                                    p.mac,
                                    "registrar",
                                    &format!("{} was closed outside Registrar", p.branch),
                                )
                                .await?;
                            }
                            // A reviewer's label whose delivery was lost is followed here.
                            _ => self.follow_workflow_labels(&p, &review.labels, "registrar").await?,
                        }
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(mac = %p.mac, error = %e, "reconcile of proposal failed");
            }
        }
        self.rebuild_stale().await?;
        self.metrics.reconcile_passes.inc();
        self.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}
