//! The mutation gate. Mutations go one at a time, because GitHub's secondary limits count
//! them per installation. A reviewer's merge goes first in line: an approval click must not
//! wait behind a backlog of proposals being opened (issue 15: approval latency during a
//! burst). The gate also holds when each mutation was sent, for the pacing budgets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{Mutex, MutexGuard, Notify};

#[derive(Default)]
pub struct MutationGate {
    sent: Mutex<VecDeque<Instant>>,
    /// Urgent callers waiting for the gate: while there are any, others step aside.
    urgent: AtomicUsize,
    /// Rung when the last urgent caller got through.
    clear: Notify,
}

impl MutationGate {
    /// Waits for the gate. An urgent caller is let in before every ordinary one that has
    /// not got it yet; among themselves, callers keep their order (the lock is fair).
    pub async fn enter(&self, urgent: bool) -> MutexGuard<'_, VecDeque<Instant>> {
        if urgent {
            self.urgent.fetch_add(1, Ordering::SeqCst);
            let held = self.sent.lock().await;
            if self.urgent.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.clear.notify_waiters();
            }
            return held;
        }
        loop {
            loop {
                let clear = self.clear.notified();
                tokio::pin!(clear);
                // Registered before the check, so a notification in between is not missed.
                clear.as_mut().enable();
                if self.urgent.load(Ordering::SeqCst) == 0 {
                    break;
                }
                clear.await;
            }
            let held = self.sent.lock().await;
            if self.urgent.load(Ordering::SeqCst) == 0 {
                return held;
            }
            // An urgent caller arrived while this one queued: let it pass.
            drop(held);
        }
    }
}

/// Whether a mutation is a reviewer's decision that someone is waiting for (a merge).
pub fn is_urgent(method: &http::Method, path: &str) -> bool {
    method == http::Method::PUT && path.ends_with("/merge")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_merge_passes_every_mutation_still_waiting() {
        let gate = Arc::new(MutationGate::default());
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = gate.enter(false).await;
        let mut waiting = Vec::new();
        for (name, urgent) in [("open 1", false), ("open 2", false), ("open 3", false), ("merge", true)] {
            let (gate, order) = (gate.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _held = gate.enter(urgent).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            // Queued in this order.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(first);
        for w in waiting {
            w.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order[0], "merge", "{order:?}");
        assert_eq!(&order[1..], ["open 1", "open 2", "open 3"]);
    }

    #[test]
    fn only_merges_are_urgent() {
        assert!(is_urgent(&http::Method::PUT, "/repos/a/b/pulls/7/merge"));
        assert!(!is_urgent(&http::Method::POST, "/repos/a/b/pulls"));
        assert!(!is_urgent(&http::Method::PATCH, "/repos/a/b/pulls/7"));
    }
}
