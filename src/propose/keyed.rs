//! Per-machine serialisation and retry pacing for the proposal queue.
//!
//! Every step that writes a machine's branch or record (sync, approve, reject, forge
//! events) holds that machine's lock, and only that one: a merge that waits on GitHub's
//! rate limit holds up its own machine, never the others. Entries live only while held,
//! so the cost at rest does not grow with the machines in history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::OwnedMutexGuard;

use crate::domain::Mac;

#[derive(Default)]
pub struct MachineLocks {
    held: Mutex<HashMap<Mac, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds one machine's lock; dropping it releases the lock and, when nobody else waits for
/// it, forgets the machine's entry.
pub struct MachineGuard<'a> {
    locks: &'a MachineLocks,
    mac: Mac,
    guard: Option<OwnedMutexGuard<()>>,
}

impl MachineLocks {
    pub async fn lock(&self, mac: Mac) -> MachineGuard<'_> {
        let entry = self.map().entry(mac).or_default().clone();
        let guard = entry.lock_owned().await;
        MachineGuard {
            locks: self,
            mac,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Mac, Arc<tokio::sync::Mutex<()>>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MachineGuard<'_> {
    /// The machine held: steps that need the lock take the guard, so they cannot be called
    /// without it.
    pub fn mac(&self) -> Mac {
        self.mac
    }
}

impl Drop for MachineGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        self.guard.take();
        // Under the map's lock nobody can take a new handle, and every waiter holds one:
        // the map's own reference alone means nobody waits.
        if map.get(&self.mac).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.mac);
        }
    }
}

/// When each failing machine may be tried again: exponential backoff with jitter per
/// machine, so one machine the forge keeps refusing is not retried on every pass while
/// the others go on. A success forgets the machine.
pub struct Retries {
    policy: ExponentialBuilder,
    failing: Mutex<HashMap<Mac, Failing>>,
}

struct Failing {
    delays: ExponentialBackoff,
    tries: u32,
    next: Instant,
}

/// A failed try and when the next one is.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub tries: u32,
    pub next: Instant,
}

impl Retries {
    pub fn new(first: Duration, max: Duration) -> Self {
        Retries {
            policy: ExponentialBuilder::default()
                .with_min_delay(first)
                .with_max_delay(max.max(first))
                .with_jitter()
                .without_max_times(),
            failing: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `mac` may be tried at `now`.
    pub fn due(&self, mac: Mac, now: Instant) -> bool {
        self.map().get(&mac).is_none_or(|f| f.next <= now)
    }

    /// Records a failure: how many tries failed in a row, and when `mac` is tried next.
    pub fn failed(&self, mac: Mac, now: Instant) -> Retry {
        let mut map = self.map();
        let f = map.entry(mac).or_insert_with(|| Failing {
            delays: self.policy.build(),
            tries: 0,
            next: now,
        });
        f.tries += 1;
        f.next = now + f.delays.next().unwrap_or(Duration::from_secs(60));
        Retry {
            tries: f.tries,
            next: f.next,
        }
    }

    pub fn succeeded(&self, mac: Mac) {
        self.map().remove(&mac);
    }

    /// How many machines wait for a retry.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Mac, Failing>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac::parse(&format!("02:00:00:00:00:{n:02x}")).unwrap()
    }

    #[tokio::test]
    async fn one_machine_at_a_time_and_others_unhindered() {
        let locks = Arc::new(MachineLocks::default());
        let a = locks.lock(mac(1)).await;
        // Another machine's lock is free while the first is held.
        let b = tokio::time::timeout(Duration::from_secs(5), locks.lock(mac(2)))
            .await
            .expect("a second machine is not held up by the first");
        drop(b);
        // The same machine waits until the holder lets go.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock(mac(1)).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "a second step on one machine waits for the first"
        );
        drop(a);
        waiter.await.unwrap();
        assert!(locks.is_empty(), "nothing is kept for machines nobody holds");
    }

    #[test]
    fn retries_back_off_per_machine_and_forget_on_success() {
        let r = Retries::new(Duration::from_secs(10), Duration::from_secs(600));
        let now = Instant::now();
        assert!(r.due(mac(1), now));
        let first = r.failed(mac(1), now);
        assert_eq!(first.tries, 1);
        assert!(first.next - now >= Duration::from_secs(10) && first.next - now < Duration::from_secs(20));
        assert!(!r.due(mac(1), now), "a failed machine waits");
        assert!(r.due(mac(2), now), "others do not");
        let second = r.failed(mac(1), now);
        assert!(
            second.next - now >= Duration::from_secs(20),
            "the wait doubles: {:?}",
            second.next - now
        );
        let mut last = second;
        for _ in 0..12 {
            last = r.failed(mac(1), now);
        }
        assert_eq!(last.tries, 14);
        assert!(last.next - now >= Duration::from_secs(600));
        assert!(
            last.next - now <= Duration::from_secs(1200),
            "capped (jitter at most doubles)"
        );
        r.succeeded(mac(1));
        assert!(r.due(mac(1), now));
        assert!(r.is_empty());
    }
}
