//! MACs that already have a home — a Hardware in the cluster, a manifest on the GitOps
//! base branch — and so must never be noticed as new. Each source replaces its own set.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use super::mac::Mac;

#[derive(Default)]
pub struct KnownMacs {
    by_source: RwLock<HashMap<&'static str, HashSet<Mac>>>,
    /// The IPv4 addresses those Hardware objects carry (`dhcp.ip.address`): an address
    /// pool never hands one of them out.
    addresses: RwLock<HashMap<&'static str, HashSet<std::net::Ipv4Addr>>>,
    /// Those Hardware objects' names, each with the MACs it carries: a new machine is never
    /// given a name another machine's Hardware has.
    names: RwLock<HashMap<&'static str, HashMap<String, Vec<Mac>>>>,
    /// The BMCs declared there (Rufio Machines) by address, per source: a new machine never
    /// gets a BMC object for another machine's BMC, which would send it that BMC's credentials.
    bmcs: RwLock<HashMap<&'static str, HashMap<String, crate::propose::index::Bmc>>>,
}

impl KnownMacs {
    pub fn replace_names(&self, source: &'static str, names: HashMap<String, Vec<Mac>>) {
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source, names);
    }

    pub fn replace_bmcs(&self, source: &'static str, bmcs: HashMap<String, crate::propose::index::Bmc>) {
        self.bmcs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source, bmcs);
    }

    /// The BMC object another machine has at `host`, if any: its name, and where it is
    /// declared ("gitops", "cluster").
    pub fn bmc_of_another(&self, host: &str, mac: &Mac) -> Option<(String, &'static str)> {
        let bmcs = self.bmcs.read().unwrap_or_else(|p| p.into_inner());
        let host = host.trim().to_ascii_lowercase();
        let mut sources: Vec<_> = bmcs.iter().collect();
        sources.sort_by_key(|(source, _)| **source);
        sources.into_iter().find_map(|(source, held)| {
            held.get(&host)
                .filter(|b| b.mac != Some(*mac))
                .map(|b| (b.name.clone(), *source))
        })
    }

    /// Where a Hardware named `name` that does not carry `mac` is registered ("gitops",
    /// "cluster"): the name is another machine's there.
    pub fn name_holder(&self, name: &str, mac: &Mac) -> Option<&'static str> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        let mut sources: Vec<_> = names.iter().collect();
        sources.sort_by_key(|(source, _)| **source);
        sources
            .into_iter()
            .find(|(_, held)| held.get(name).is_some_and(|macs| !macs.contains(mac)))
            .map(|(source, _)| *source)
    }

    pub fn replace_addresses(&self, source: &'static str, addresses: HashSet<std::net::Ipv4Addr>) {
        self.addresses
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source, addresses);
    }

    /// Whether a Hardware already registered elsewhere (the base branch, the cluster) holds
    /// `ip`.
    pub fn address_taken(&self, ip: std::net::Ipv4Addr) -> bool {
        self.addresses
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|s| s.contains(&ip))
    }

    /// Every address a registered Hardware holds, with where it is registered.
    pub fn addresses(&self) -> Vec<(&'static str, std::net::Ipv4Addr)> {
        let held = self.addresses.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = held
            .iter()
            .flat_map(|(source, ips)| ips.iter().map(move |ip| (*source, *ip)))
            .collect();
        out.sort();
        out
    }

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
    /// Whether `source` has given its set at least once (a watch that has not listed yet
    /// knows nothing, which is not the same as knowing there is nothing).
    pub fn has_source(&self, source: &str) -> bool {
        self.by_source
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(source)
    }

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
