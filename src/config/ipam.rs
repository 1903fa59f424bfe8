//! Address pools: where the temporary discovery Hardware and the permanent Hardware get
//! the IP addresses Smee (in its default reservation mode) serves.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpamConfig {
    /// The pool for temporary discovery Hardware (short leases). Without it, temporary
    /// Hardware carries no address and needs Smee in a proxy mode beside a DHCP server.
    pub discovery: Option<PoolConfig>,
    /// Pools for the permanent Hardware; the first whose `match` fits the machine is used,
    /// and a pool without `match` fits every machine (the default).
    pub pools: Vec<PoolConfig>,
    /// How long a released address (a rejected or forgotten machine) stays unused before
    /// it is handed out again, so a machine that still holds its lease never meets a twin.
    pub quarantine_seconds: u64,
    /// A file on the GitOps base branch holding `discovery`, `pools` and
    /// `quarantine_seconds` instead of this config, so a pool change is reviewed and merged
    /// like any other; re-read whenever the base branch moves.
    pub file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    pub cidr: Ipv4Net,
    /// `first-last` ranges inside `cidr` to hand out; empty: the whole subnet.
    #[serde(default)]
    pub ranges: Vec<String>,
    /// Addresses (or `first-last` ranges) never handed out.
    #[serde(default)]
    pub exclude: Vec<String>,
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
    #[serde(default)]
    pub ntp: Vec<String>,
    pub vlan: Option<u16>,
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    /// Which machines this pool is for; absent: every machine (the default pool).
    #[serde(default, rename = "match")]
    pub selector: Option<PoolMatch>,
}

/// A machine fits when every given field does.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolMatch {
    /// The DHCP relay's address (giaddr) its requests came through.
    pub relay: Option<Ipv4Addr>,
    /// The relay agent's option 82 circuit id (the switch port) and remote id (the switch).
    pub circuit_id: Option<String>,
    pub remote_id: Option<String>,
    /// A switch the machine reported as an LLDP neighbour (`lldpctl`, in its facts).
    pub switch: Option<String>,
    /// The location an import row gave it (its `location` column).
    pub location: Option<String>,
    /// The rack an import row gave it (its `rack` column).
    pub rack: Option<String>,
    /// A condition over the machine, as the rules' `when` in rules.yaml (`facts.gpus |
    /// length > 0`).
    pub when: Option<String>,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            discovery: None,
            pools: vec![],
            quarantine_seconds: 3600,
            file: None,
        }
    }
}

fn default_lease() -> u64 {
    86_400
}
