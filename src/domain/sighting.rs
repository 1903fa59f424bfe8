//! What the network revealed about a machine before it reported anything: a DHCP request
//! tells its architecture and firmware, often its UUID, and — through a relay — the switch
//! port it is cabled to.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// `x86_64` or `aarch64`, from the PXE client architecture.
    pub arch: Option<String>,
    pub uefi: Option<bool>,
    /// The machine's UUID (DHCP option 97).
    pub uuid: Option<String>,
    /// What the client called itself (option 12); untrusted, display only.
    pub hostname: Option<String>,
    /// Option 60, e.g. `PXEClient:Arch:00007:UNDI:003016`.
    pub vendor_class: Option<String>,
    /// Option 77, e.g. `iPXE`.
    pub user_class: Option<String>,
    /// Whether it was network-booting (PXE, UEFI HTTP boot, iPXE).
    pub netboot: bool,
    pub relay: Option<Relay>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    /// The relay agent's address (giaddr).
    pub address: String,
    /// Option 82 circuit id: usually the switch port.
    pub circuit_id: Option<String>,
    /// Option 82 remote id: usually the switch.
    pub remote_id: Option<String>,
}

impl Sighting {
    /// Where the machine was seen, for a reviewer: `relay 10.0.0.1, port Ethernet1/12`.
    pub fn location(&self) -> Option<String> {
        let r = self.relay.as_ref()?;
        let mut s = format!("relay {}", r.address);
        if let Some(c) = &r.circuit_id {
            s.push_str(&format!(", port {c}"));
        }
        if let Some(id) = &r.remote_id {
            s.push_str(&format!(", switch {id}"));
        }
        Some(s)
    }
}
