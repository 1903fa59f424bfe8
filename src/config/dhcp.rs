//! Passive DHCP snooping.

use std::net::SocketAddr;

use serde::Deserialize;

/// Passive DHCP snooping: notices machines by their DHCP requests; never answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpConfig {
    pub enabled: bool,
    /// Where to listen; 0.0.0.0:67 receives broadcast DISCOVERs on every interface.
    pub listen: SocketAddr,
    /// Only this interface (SO_BINDTODEVICE; needs CAP_NET_RAW).
    pub interface: Option<String>,
    /// Capture IPv4 packets to UDP port 67 (AF_PACKET, needs CAP_NET_RAW) instead of binding
    /// the port: also sees requests relayed or unicast to another DHCP server, e.g. on a
    /// mirror port, and needs no free port 67.
    pub capture: bool,
    /// A machine is passed on at most once per window while it keeps asking.
    pub debounce_seconds: u64,
    /// Bounds the debounce memory under a DHCP storm.
    pub max_tracked_macs: usize,
    /// Only PXE, UEFI HTTP boot and iPXE clients.
    pub only_netboot: bool,
    /// OUIs (`3c:ec:ef`) to accept exclusively, and to ignore.
    pub oui_allow: Vec<String>,
    pub oui_deny: Vec<String>,
    /// Only requests relayed from these subnets (by giaddr), e.g. `10.1.0.0/16`.
    pub relay_subnets: Vec<String>,
    /// For `registrar snoop`: the Registrar API the sightings go to (e.g.
    /// `http://registrar.tinkerbell.svc:8080`), with `auth.snoop_token`.
    pub forward_to: String,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        DhcpConfig {
            enabled: false,
            listen: "0.0.0.0:67".parse().expect("valid"),
            interface: None,
            capture: false,
            debounce_seconds: 60,
            max_tracked_macs: 65_536,
            only_netboot: false,
            oui_allow: vec![],
            oui_deny: vec![],
            relay_subnets: vec![],
            forward_to: String::new(),
        }
    }
}

impl DhcpConfig {
    pub fn filters(&self) -> anyhow::Result<crate::sources::dhcp::Filters> {
        use crate::sources::dhcp::parse_oui;
        let ouis = |list: &[String]| list.iter().map(|o| parse_oui(o)).collect::<Result<Vec<_>, _>>();
        Ok(crate::sources::dhcp::Filters {
            only_netboot: self.only_netboot,
            oui_allow: ouis(&self.oui_allow).map_err(|e| anyhow::anyhow!("dhcp.oui_allow: {e}"))?,
            oui_deny: ouis(&self.oui_deny).map_err(|e| anyhow::anyhow!("dhcp.oui_deny: {e}"))?,
            relay_subnets: self
                .relay_subnets
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("dhcp.relay_subnets: {e}"))?,
        })
    }
}
