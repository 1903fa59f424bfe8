//! Approval by policy (`discovery.auto_approve: expected`): a registration whose machine
//! reported exactly what its import row says (its MAC, and its serial where the row gives
//! one), with nothing the reviewer would have been warned of, needs no person. On GitHub,
//! auto-merge is enabled, so GitHub merges once the required checks pass — never around
//! branch protection — and the merge is observed like any other; where nothing stands in
//! the way (the local forge, or a GitHub repository without required checks), it is
//! approved at once.

use chrono::Utc;

use super::forge::AutoMerge;
use super::{MachineGuard, ProposeError, Proposer, blocking};
use crate::domain::{Facts, Machine, Proposal, ProposalKind, ProposalState};
use crate::render::Rendered;

/// Who approved, on the timeline and the forge.
pub const POLICY_ACTOR: &str = "policy:auto_approve";

impl Proposer {
    /// Approves `proposal` by policy if `machine` matches its import row exactly. A refusal
    /// of the forge is shown on the machine, and the proposal waits for a person.
    pub(super) async fn approve_if_expected(
        &self,
        held: &MachineGuard<'_>,
        machine: &Machine,
        facts: &Facts,
        proposal: &Proposal,
        rendered: &Rendered,
    ) -> Result<(), ProposeError> {
        let Some(expected) = machine.expected.as_ref().filter(|_| self.auto_approve) else {
            return Ok(());
        };
        if proposal.kind != ProposalKind::Register || proposal.state != ProposalState::Open {
            return Ok(());
        }
        if proposal.hands_off || !rendered.warnings.is_empty() || !expected.matches(facts) {
            // An earlier revision may have qualified: what changed is a person's to review.
            if let Err(e) = self.forge.cancel_auto_merge(proposal).await {
                let (store, mac) = (self.store.clone(), machine.mac);
                let msg = format!(
                    "its proposal no longer matches its import row, but auto-merge could not be taken back: {e}"
                );
                blocking(move || store.set_error(mac, Some(&msg))).await?;
            }
            return Ok(());
        }
        let why = format!("it matches {} exactly", expected.provenance());
        let mac = machine.mac;
        let outcome = match self.forge.auto_merge(proposal).await {
            Ok(AutoMerge::Enabled) => {
                let store = self.store.clone();
                let note = format!(
                    "approved by policy ({why}): auto-merge enabled, the forge merges once the required checks pass"
                );
                tracing::info!(%mac, "auto-merge enabled for an expected machine");
                blocking(move || store.note(mac, &note, POLICY_ACTOR, Utc::now())).await
            }
            Ok(AutoMerge::Merged) => {
                let cause = format!("{} merged: approved by policy ({why})", proposal.branch);
                self.record_approval(held, &cause, POLICY_ACTOR).await.map(drop)
            }
            Ok(AutoMerge::MergeNow) => self
                .approve_held(held, mac, &format!("{POLICY_ACTOR} ({why})"))
                .await
                .map(drop),
            Err(e) => Err(e.into()),
        };
        // The proposal stands either way: a person reviews it, told why.
        if let Err(e) = outcome {
            let (store, msg) = (
                self.store.clone(),
                format!("not approved by policy ({why}): {e}; a person reviews it"),
            );
            tracing::warn!(%mac, error = %e, "could not approve an expected machine by policy");
            blocking(move || store.set_error(mac, Some(&msg))).await?;
        }
        Ok(())
    }
}
