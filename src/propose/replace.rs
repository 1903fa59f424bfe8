//! A new board of a machine git holds: a report whose serial or system UUID is exactly one
//! registered machine's, from MACs none of which that machine ever had (a motherboard swap). It is proposed as
//! that machine's change — its file, name and address, with the new MAC — never as a
//! stranger, and the pull request says so in words a reviewer cannot miss: the same claim
//! is what a machine stealing another's identity would make.

use chrono::Utc;

use super::{MachineGuard, ProposeError, Proposer, blocking, sync::commit_message};
use crate::domain::{Basis, Facts, Machine, Proposal, ProposalKind, ProposalState, branch_for};
use crate::render::{RenderInput, markdown};
use crate::store::{Pending, StoreError};

/// The registered machine a newcomer replaces: the machine, its current proposal (where
/// its file lives, its name), and which identity they share.
pub(super) struct Replaced {
    machine: Machine,
    home: Proposal,
    shared: String,
}

impl Proposer {
    /// The machine git holds whose new board `machine` would be, if any.
    pub(super) async fn replaced_machine(
        &self,
        machine: &Machine,
        facts: &Facts,
    ) -> Result<Option<Replaced>, ProposeError> {
        let (store, mac) = (self.store.clone(), machine.mac);
        let claimed = facts.clone();
        let mut own_macs: Vec<_> = facts.nics.iter().map(|n| n.mac).collect();
        own_macs.push(mac);
        blocking(move || {
            let mut found: Option<Replaced> = None;
            for (other, shared) in store.sharing_identity(mac, &claimed)? {
                if found.as_ref().is_some_and(|f| f.machine.mac == other) {
                    continue; // the same machine, by its serial and by its UUID or asset tag
                }
                let Some(old) = store.machine(other)?.filter(|m| m.state.is_settled()) else {
                    continue;
                };
                // A new board brings new MACs. Any MAC in common means the same board (booted
                // from another port) or a clone reporting the same inventory: not a swap,
                // and the collision stays a warning in its own proposal.
                let old_macs = old.facts.iter().flat_map(|f| f.nics.iter().map(|n| n.mac));
                if old_macs.chain([other]).any(|m| own_macs.contains(&m)) {
                    continue;
                }
                let Some(home) = store.proposal(other)? else { continue };
                if found.is_some() {
                    // Two registered machines share this identity: which one would it replace?
                    return Ok(None);
                }
                found = Some(Replaced {
                    machine: old,
                    home,
                    shared,
                });
            }
            Ok::<_, StoreError>(found)
        })
        .await
    }

    /// Proposes `machine` as the new board of `old`: `old`'s file rewritten for the new MAC,
    /// under `old`'s name and address, on the newcomer's own branch.
    pub(super) async fn publish_replacement(
        &self,
        held: &MachineGuard<'_>,
        work: Pending,
        machine: &Machine,
        facts: &Facts,
        old: Replaced,
        existing: Option<Proposal>,
    ) -> Result<bool, ProposeError> {
        let open = existing
            .as_ref()
            .filter(|p| matches!(p.state, ProposalState::Open | ProposalState::Approving));
        if let Some(p) = open
            && self.branch_taken_over(held, work, p).await?
        {
            return Ok(false);
        }
        let Replaced {
            machine: was,
            home,
            shared,
        } = old;
        // It keeps the old board's address: the one the old machine holds in its pool.
        let address = self.production_address(&was).await?;
        let (checked, warnings) = self.check_identity(machine, facts).await?;
        // Its Workflow needs a name the old board's finished one does not have: Tinkerbell
        // never runs a finished Workflow again.
        let round = was.settled.as_ref().map_or(0, |b| b.round) + 1;
        let mut rendered = self.renderer.render(&RenderInput {
            address: address.as_ref(),
            warnings: &warnings,
            name: Some(&home.name),
            round,
            ..RenderInput::for_machine(machine, &checked)
        })?;
        let name = markdown::escape(&home.name);
        rendered.title = format!("Replace {}'s board: {} → {}", home.name, was.mac, machine.mac);
        rendered.summary = format!(
            "> **⚠ Replacement: this machine ({new}) reports the {shared} of {name} ({old}), which the base branch holds, from MACs that are not {name}'s.**\n>\n> Merging moves {name} to the new board: {path} is rewritten for {new} with {name}'s name and address, and {old} is decommissioned (its history stays). If {name} still runs on its old board, another machine is claiming its identity: close this pull request, and the newcomer is rejected.\n\n---\n\n{summary}",
            new = markdown::code(&machine.mac.to_string()),
            old = markdown::code(&was.mac.to_string()),
            shared = markdown::escape(&shared),
            path = markdown::code(&home.path),
            summary = rendered.summary,
        );
        let branch = branch_for(&machine.mac);
        let git = self.git.clone();
        let base_head = blocking(move || git.base_head()).await?;
        let files = self.files_for(&home.path, &rendered, base_head).await?;
        let message = commit_message(&rendered, &machine.mac, facts);
        let (published, forge_ref) = self
            .publish_and_open(&branch, files, base_head, message, &rendered, existing.as_ref())
            .await?;
        let now = Utc::now();
        let proposal = Proposal {
            name: home.name.clone(),
            created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(now),
            kind: ProposalKind::Replace,
            basis: Some(Basis {
                facts: facts.clone(),
                provisioned: false,
                round,
            }),
            replaces: Some(was.mac),
            ..self.opened(
                machine.mac,
                forge_ref,
                branch,
                home.path.clone(),
                &rendered,
                published.commit.to_string(),
            )
        };
        let (store, name) = (self.store.clone(), home.name.clone());
        blocking(move || store.mark_synced(work, Some(&proposal), Some(&name), now)).await?;
        if published.changed {
            tracing::info!(mac = %machine.mac, replaces = %was.mac, "replacement proposed");
        }
        Ok(published.changed)
    }
}
