//! MACs that already have a home — a Hardware in the cluster, a manifest on the GitOps
//! base branch — and so must never be noticed as new. Each source replaces its own set.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use super::mac::Mac;

#[derive(Default)]
pub struct KnownMacs {
    by_source: RwLock<HashMap<&'static str, HashSet<Mac>>>,
}

impl KnownMacs {
    pub fn replace(&self, source: &'static str, macs: HashSet<Mac>) {
        self.by_source
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source, macs);
    }

    pub fn contains(&self, mac: &Mac) -> bool {
        self.by_source
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|s| s.contains(mac))
    }

    /// Whether `source`'s own set holds `mac` (e.g. "cluster": a registered Hardware has it).
    pub fn contains_in(&self, source: &str, mac: &Mac) -> bool {
        self.by_source
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(source)
            .is_some_and(|s| s.contains(mac))
    }

    pub fn len(&self) -> usize {
        self.by_source
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(HashSet::len)
            .sum()
    }

    /// How many MACs each source holds, for the status page.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut out: Vec<_> = self
            .by_source
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.len()))
            .collect();
        out.sort();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
