//! Review slots: with `discovery.max_open_proposals` set, at most that many proposals are
//! open on the forge at once. A machine whose first proposal finds them all taken waits in
//! the store's slot queue (its reason on the machine); each pass of the queue lets the ones
//! that waited longest through as proposals are merged or closed. Reviewers see a bounded
//! list, and a delivery of thousands does not spend the forge's limits on pull requests
//! nobody can read yet.

use chrono::Utc;
use tokio::sync::MutexGuard;

use super::{ProposeError, Proposer, blocking};
use crate::store::{Pending, StoreError};

pub(super) enum Slot<'a> {
    /// Go ahead; hold the gate (if any) until the proposal is recorded.
    Taken(Option<MutexGuard<'a, ()>>),
    /// Every slot is taken: the machine waits in the slot queue.
    Full,
}

impl Proposer {
    /// A slot for `work`'s first proposal, or its place in the slot queue.
    pub(super) async fn take_slot(&self, work: Pending) -> Result<Slot<'_>, ProposeError> {
        if self.max_open == 0 {
            return Ok(Slot::Taken(None));
        }
        let gate = self.slot_gate.lock().await;
        let (store, mac) = (self.store.clone(), work.mac);
        let (open, ahead) =
            blocking(move || Ok::<_, StoreError>((store.open_proposals()?, store.slot_position(mac)?))).await?;
        // First come, first served: a free slot goes to the machines that waited longest.
        if ahead < self.max_open.saturating_sub(open) {
            let store = self.store.clone();
            blocking(move || store.leave_slot_queue(mac)).await?;
            return Ok(Slot::Taken(Some(gate)));
        }
        let (store, max) = (self.store.clone(), self.max_open);
        let why = format!(
            "waiting for a review slot: {open} proposals are open (discovery.max_open_proposals: {max}); it is proposed as soon as one is merged or closed"
        );
        blocking(move || store.wait_for_slot(work, &why, Utc::now())).await?;
        tracing::debug!(mac = %work.mac, open, "waiting for a review slot");
        Ok(Slot::Full)
    }

    /// A proposal ended: with slots bounded, the queue looks at once rather than at its
    /// next pass.
    pub(super) fn wake_if_slots(&self) {
        if self.max_open > 0 {
            self.wake();
        }
    }

    /// Queues again as many waiting machines as there are free slots.
    pub(super) async fn release_slots(&self) -> Result<(), ProposeError> {
        if self.max_open == 0 {
            return Ok(());
        }
        let (store, max) = (self.store.clone(), self.max_open);
        let (released, waiting) = blocking(move || {
            let open = store.open_proposals()?;
            let released = match max.saturating_sub(open) {
                0 => Vec::new(),
                free => store.release_slots(free, Utc::now())?,
            };
            Ok::<_, StoreError>((released, store.slot_queue(0)?.count))
        })
        .await?;
        self.metrics.review_slot_waiting.set(waiting as i64);
        if !released.is_empty() {
            tracing::info!(released = released.len(), "review slots free: machines proposed next");
        }
        Ok(())
    }
}
