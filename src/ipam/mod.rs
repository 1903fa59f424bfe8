//! Address pools, checked once at start: which addresses a pool may hand out, which pool a
//! machine's address comes from, and what a template is told about it. The choice of a free
//! address and its record are the store's (one transaction, a unique constraint), so no
//! address is handed out twice whatever runs at once.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::config::ipam::{IpamConfig, PoolConfig, PoolMatch};

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub net: Ipv4Net,
    ranges: Vec<RangeInclusive<u32>>,
    exclude: Vec<RangeInclusive<u32>>,
    pub gateway: Option<Ipv4Addr>,
    nameservers: Vec<String>,
    ntp: Vec<String>,
    vlan: Option<u16>,
    lease_seconds: u64,
    selector: Option<PoolMatch>,
}

/// What a template is told about a machine's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub pool: String,
    pub ip: String,
    pub netmask: String,
    pub prefix: u8,
    pub gateway: Option<String>,
    pub nameservers: Vec<String>,
    pub ntp: Vec<String>,
    pub vlan: Option<u16>,
    pub lease_seconds: u64,
}

fn range(key: &str, text: &str, net: &Ipv4Net) -> Result<RangeInclusive<u32>, String> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let parse = |s: &str| {
        s.trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("{key}: {s:?} is not an IPv4 address"))
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first > last {
        return Err(format!("{key}: {text:?} runs backwards"));
    }
    for ip in [first, last] {
        if !net.contains(&ip) {
            return Err(format!("{key}: {ip} is outside the pool's cidr {net}"));
        }
    }
    Ok(u32::from(first)..=u32::from(last))
}

impl Pool {
    /// Checks a pool as configured; an error names the key (`key` is where the pool is).
    pub fn from_config(key: &str, c: &PoolConfig) -> Result<Pool, String> {
        if c.name.trim().is_empty() {
            return Err(format!("{key}.name: a pool needs a name"));
        }
        let net = c.cidr.trunc();
        if net.prefix_len() > 30 {
            return Err(format!("{key}.cidr: {} leaves no addresses to hand out", c.cidr));
        }
        let ranges = if c.ranges.is_empty() {
            vec![u32::from(net.network()) + 1..=u32::from(net.broadcast()) - 1]
        } else {
            c.ranges
                .iter()
                .enumerate()
                .map(|(i, r)| range(&format!("{key}.ranges[{i}]"), r, &net))
                .collect::<Result<_, _>>()?
        };
        let exclude = c
            .exclude
            .iter()
            .enumerate()
            .map(|(i, r)| range(&format!("{key}.exclude[{i}]"), r, &net))
            .collect::<Result<_, _>>()?;
        if let Some(gw) = c.gateway
            && !net.contains(&gw)
        {
            return Err(format!("{key}.gateway: {gw} is outside the pool's cidr {net}"));
        }
        Ok(Pool {
            name: c.name.clone(),
            net,
            ranges,
            exclude,
            gateway: c.gateway,
            nameservers: c.nameservers.iter().map(|n| n.to_string()).collect(),
            ntp: c.ntp.clone(),
            vlan: c.vlan,
            lease_seconds: c.lease_seconds,
            selector: c.selector.clone(),
        })
    }

    /// Whether the pool may hand out `ip`: in a range, not excluded, and not the network,
    /// broadcast or gateway address.
    pub fn may_hand_out(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        self.ranges.iter().any(|r| r.contains(&n))
            && !self.exclude.iter().any(|r| r.contains(&n))
            && ip != self.net.network()
            && ip != self.net.broadcast()
            && Some(ip) != self.gateway
    }

    /// Every address the pool may hand out, lowest first.
    pub fn candidates(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges
            .iter()
            .flat_map(|r| r.clone())
            .map(Ipv4Addr::from)
            .filter(|ip| self.may_hand_out(*ip))
    }

    /// Every address the pool may hand out, starting after `after` and wrapping around
    /// (next fit: after the last one handed out, the next is usually free at once, so the
    /// cost of a choice does not grow with the addresses already held).
    pub fn candidates_after(&self, after: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let cut = after.map_or(0, |a| u32::from(a).saturating_add(1));
        let tail = self.ranges.iter().filter_map(move |r| {
            let start = (*r.start()).max(cut);
            (start <= *r.end()).then(|| start..=*r.end())
        });
        let head = self.ranges.iter().filter_map(move |r| {
            let end = (*r.end()).min(cut.saturating_sub(1));
            (cut > 0 && *r.start() <= end).then(|| *r.start()..=end)
        });
        tail.chain(head)
            .flatten()
            .map(Ipv4Addr::from)
            .filter(|ip| self.may_hand_out(*ip))
    }

    /// How many addresses the pool may hand out.
    pub fn size(&self) -> u64 {
        self.candidates().count() as u64
    }

    /// Whether the machine `at` fits this pool; `holds` evaluates a `when` condition.
    fn fits(&self, at: &Placement, holds: &dyn Fn(&str) -> bool) -> bool {
        let Some(m) = &self.selector else { return true };
        let is = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
        m.relay.is_none_or(|r| Some(r) == at.relay)
            && is(&m.circuit_id, at.circuit_id)
            && is(&m.remote_id, at.remote_id)
            && m.switch.as_deref().is_none_or(|s| at.switches.contains(&s))
            && is(&m.location, at.location)
            && is(&m.rack, at.rack)
            && m.when.as_deref().is_none_or(holds)
    }

    pub fn address(&self, ip: Ipv4Addr) -> Address {
        Address {
            pool: self.name.clone(),
            ip: ip.to_string(),
            netmask: self.net.netmask().to_string(),
            prefix: self.net.prefix_len(),
            gateway: self.gateway.map(|g| g.to_string()),
            nameservers: self.nameservers.clone(),
            ntp: self.ntp.clone(),
            vlan: self.vlan,
            lease_seconds: self.lease_seconds,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Pools {
    pub discovery: Option<Pool>,
    pub production: Vec<Pool>,
    pub quarantine_seconds: u64,
}

impl Pools {
    /// The configured pools, checked: names unique, ranges inside their cidr, gateways
    /// inside theirs, and no address in two pools.
    pub fn from_config(c: &IpamConfig) -> Result<Pools, String> {
        let discovery = c
            .discovery
            .as_ref()
            .map(|p| Pool::from_config("ipam.discovery", p))
            .transpose()?;
        let production = c
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| Pool::from_config(&format!("ipam.pools[{i}]"), p))
            .collect::<Result<Vec<_>, _>>()?;
        let all: Vec<&Pool> = discovery.iter().chain(&production).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.name == b.name {
                    return Err(format!("ipam: two pools are named {:?}", a.name));
                }
                let clash = a.ranges.iter().find_map(|ra| {
                    b.ranges
                        .iter()
                        .find(|rb| ra.start() <= rb.end() && rb.start() <= ra.end())
                        .map(|rb| Ipv4Addr::from(*ra.start().max(rb.start())))
                });
                if let Some(ip) = clash {
                    return Err(format!(
                        "ipam: pools {:?} and {:?} overlap (both may hand out {ip})",
                        a.name, b.name
                    ));
                }
            }
        }
        Ok(Pools {
            discovery,
            production,
            quarantine_seconds: c.quarantine_seconds,
        })
    }

    /// The pool a machine's permanent address comes from: the first that fits. `holds`
    /// evaluates a pool's `when` condition over the machine (false when it cannot).
    pub fn for_machine(&self, at: &Placement, holds: &dyn Fn(&str) -> bool) -> Option<&Pool> {
        self.production.iter().find(|p| p.fits(at, holds))
    }

    /// Every pool with the key it is configured under (`ipam.discovery`, `ipam.pools[1]`).
    pub fn keyed(&self) -> impl Iterator<Item = (String, &Pool)> {
        let discovery = self.discovery.iter().map(|p| ("ipam.discovery".to_string(), p));
        discovery.chain(
            self.production
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("ipam.pools[{i}]"), p)),
        )
    }

    /// Every pool's `when` condition, with the key it is configured under.
    pub fn conditions(&self) -> impl Iterator<Item = (String, &str)> {
        self.production.iter().enumerate().filter_map(|(i, p)| {
            let when = p.selector.as_ref()?.when.as_deref()?;
            Some((format!("ipam.pools[{i}].match.when"), when))
        })
    }

    pub fn named(&self, name: &str) -> Option<&Pool> {
        self.discovery.iter().chain(&self.production).find(|p| p.name == name)
    }
}

/// Where a machine stands, as far as choosing its pool goes: how its DHCP requests reached
/// Registrar, the switches it reported, and its import row.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Placement<'a> {
    pub relay: Option<Ipv4Addr>,
    pub circuit_id: Option<&'a str>,
    pub remote_id: Option<&'a str>,
    pub switches: Vec<&'a str>,
    pub location: Option<&'a str>,
    pub rack: Option<&'a str>,
}

impl<'a> Placement<'a> {
    pub fn of(machine: &'a crate::domain::Machine) -> Self {
        let relay = machine.sighting.as_ref().and_then(|s| s.relay.as_ref());
        let expected = machine.expected.as_ref();
        Placement {
            relay: relay.and_then(|r| r.address.parse().ok()),
            circuit_id: relay.and_then(|r| r.circuit_id.as_deref()),
            remote_id: relay.and_then(|r| r.remote_id.as_deref()),
            switches: machine
                .facts
                .iter()
                .flat_map(|f| &f.lldp)
                .filter_map(|n| n.switch.as_deref())
                .collect(),
            location: expected.and_then(|e| e.location.as_deref()),
            rack: expected.and_then(|e| e.rack.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests;
