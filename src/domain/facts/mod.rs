//! Facts: what a machine says about itself, normalised from any report format.
//!
//! Everything here came from a machine anyone can boot, so normalisation also bounds it:
//! strings are trimmed, stripped of control and bidi characters and capped; lists are capped;
//! placeholders such as `To Be Filled By O.E.M.` become `None` so they never name a machine.
//!
//! Sources: `lshw -json` ([`from_lshw`]) or Tink Agent attributes ([`from_agent_attributes`]),
//! then what a discovery script probed besides ([`probes`]): `ip -j link` (link state, NICs
//! lshw missed), `dmidecode -s` answers (DMI identity lshw left open) and `lldpctl -f json`
//! (the switch ports the machine is cabled to, in [`Facts::lldp`]).

mod agent;
mod lshw;
pub mod probes;

pub use agent::from_agent_attributes;
pub use lshw::from_lshw;
pub use probes::{apply_dmidecode, apply_ip_link, lldp_neighbors};

use serde::{Deserialize, Serialize};

use super::mac::Mac;

/// Longest string kept from a fact; DMI strings are 64 bytes, model names rarely 100.
pub const MAX_FACT_CHARS: usize = 128;
/// Most items kept per list (NICs, disks, CPUs, GPUs); real servers stay far below.
pub const MAX_ITEMS: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    /// The chassis asset tag (`dmidecode -s chassis-asset-tag`), an identity some sites
    /// write on every machine. Omitted when unknown, so older facts keep their fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    /// Tinkerbell's spelling: `x86_64` or `aarch64`.
    pub arch: Option<String>,
    pub uefi: Option<bool>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub cpus: Vec<Cpu>,
    /// Sum of enabled cores over all sockets (0 when unknown).
    #[serde(default)]
    pub cpu_cores: u32,
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    pub bmc: Option<Bmc>,
    /// Where the machine is cabled, as its switches advertise it over LLDP. Omitted when
    /// empty, so the facts (and fingerprints) of machines reported without LLDP stay as
    /// they were; rows stored before the field existed read as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lldp: Vec<LldpNeighbor>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// `/dev/…`, as Tinkerbell's `spec.disks[].device` wants it.
    pub device: String,
    pub size_bytes: Option<u64>,
    pub model: Option<String>,
    pub serial: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: Option<String>,
    pub mac: Mac,
    pub speed_mbps: Option<u64>,
    pub link: Option<bool>,
    pub driver: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub vendor: Option<String>,
    pub product: Option<String>,
}

/// One LLDP neighbor: this machine's `interface` hears `switch` on its `port`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LldpNeighbor {
    /// This machine's interface (`eno1`).
    pub interface: String,
    /// The switch's system name, else its chassis ID (often a MAC address).
    pub switch: Option<String>,
    /// The switch's port ID (`Ethernet12`, `Gi1/0/12`), or its description when the ID is
    /// only a MAC address.
    pub port: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bmc {
    pub address: String,
}

impl Facts {
    /// Nothing reported (a machine known only from an import row).
    pub fn is_empty(&self) -> bool {
        *self == Facts::default()
    }

    pub fn disk_total_bytes(&self) -> u64 {
        self.disks.iter().filter_map(|d| d.size_bytes).sum()
    }

    /// Stable content hash: two reports with the same facts must not cause new work.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).expect("facts always serialise");
        hex::encode(&Sha256::digest(&json)[..16])
    }

    /// The same bounds a report's facts get, applied to facts read back from elsewhere (a
    /// commit's trailer after a lost store): every string cleaned and capped, every list
    /// capped. Values that no longer pass are dropped.
    pub fn bounded(self) -> Facts {
        let c = |o: Option<String>| o.as_deref().and_then(clean);
        let mut f = Facts {
            vendor: c(self.vendor),
            product: c(self.product),
            serial: c(self.serial),
            uuid: c(self.uuid),
            asset_tag: c(self.asset_tag),
            arch: self.arch.filter(|a| a == "x86_64" || a == "aarch64"),
            uefi: self.uefi,
            hostname: c(self.hostname),
            cpus: self
                .cpus
                .into_iter()
                .map(|x| Cpu {
                    model: c(x.model),
                    vendor: c(x.vendor),
                    ..x
                })
                .collect(),
            cpu_cores: self.cpu_cores,
            memory_bytes: self.memory_bytes,
            disks: self
                .disks
                .into_iter()
                .filter_map(|d| {
                    clean(&d.device)
                        .filter(|dev| dev.starts_with("/dev/"))
                        .map(|device| Disk {
                            device,
                            model: c(d.model),
                            serial: c(d.serial),
                            ..d
                        })
                })
                .collect(),
            nics: self
                .nics
                .into_iter()
                .map(|n| Nic {
                    name: c(n.name),
                    driver: c(n.driver),
                    ..n
                })
                .collect(),
            gpus: self
                .gpus
                .into_iter()
                .map(|g| Gpu {
                    vendor: c(g.vendor),
                    product: c(g.product),
                })
                .collect(),
            bmc: self.bmc.and_then(|b| clean(&b.address)).map(|address| Bmc { address }),
            lldp: self
                .lldp
                .into_iter()
                .filter_map(|l| {
                    clean(&l.interface).map(|interface| LldpNeighbor {
                        interface,
                        switch: c(l.switch),
                        port: c(l.port),
                    })
                })
                .collect(),
        };
        f.cpus.truncate(MAX_ITEMS);
        f.disks.truncate(MAX_ITEMS);
        f.nics.truncate(MAX_ITEMS);
        f.gpus.truncate(MAX_ITEMS);
        f.lldp.truncate(MAX_ITEMS);
        f
    }

    /// Values a report states outright (arch, hostname…) win over what was inferred.
    pub fn overlay(&mut self, other: Facts) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(vendor, product, serial, uuid, arch, uefi, hostname, memory_bytes, bmc);
    }
}

/// Cleans one untrusted string: control and bidi characters out, whitespace folded, capped.
/// Returns `None` for nothing or for a DMI placeholder.
pub fn clean(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(MAX_FACT_CHARS));
    let mut count = 0;
    let mut pending_space = false;
    for c in raw.chars() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            if count + 1 >= MAX_FACT_CHARS {
                break;
            }
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        if count >= MAX_FACT_CHARS {
            break;
        }
        out.push(c);
        count += 1;
    }
    if out.is_empty() || is_placeholder(&out) {
        None
    } else {
        Some(out)
    }
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Firmware fills unset DMI fields with these; they identify nothing.
pub fn is_placeholder(s: &str) -> bool {
    let lower = s.trim().to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] = &[
        "to be filled by o.e.m.",
        "to be filled by oem",
        "not specified",
        "not applicable",
        "none",
        "default string",
        "system serial number",
        "system product name",
        "system manufacturer",
        "chassis serial number",
        "base board serial number",
        "0123456789",
        "n/a",
        "na",
        "unknown",
        "invalid",
        "not available",
        "oem",
        "o.e.m.",
        "empty",
        "null",
        "xxxxxxxxxx",
        "no asset tag",
        "asset tag",
        "no asset information",
        "asset-1234567890",
    ];
    if PLACEHOLDERS.contains(&lower.as_str()) {
        return true;
    }
    // All zeros, all Fs, all dashes/spaces: an unprogrammed field or UUID.
    let significant: Vec<char> = lower.chars().filter(|c| !matches!(c, '-' | ' ' | ':' | '.')).collect();
    significant.is_empty() || significant.iter().all(|&c| c == '0') || significant.iter().all(|&c| c == 'f')
}

/// Parses sizes such as `239GB`, `64 GiB`, `512B`, `1.5TB`. Decimal units are powers of
/// 1000 and binary ones of 1024, as the tools that print them mean.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "pb" | "p" => 1e15,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        "pib" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = value * factor;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Parses link speeds such as `1Gbit/s`, `10000Mb/s`, `25G` into Mbit/s.
pub fn parse_speed_mbps(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let unit = unit.trim();
    let mbps = if unit.starts_with('g') {
        value * 1000.0
    } else if unit.starts_with('m') || unit.is_empty() {
        value
    } else if unit.starts_with('k') {
        value / 1000.0
    } else if unit.starts_with('t') {
        value * 1_000_000.0
    } else {
        return None;
    };
    (mbps.is_finite() && (0.0..1e12).contains(&mbps)).then_some(mbps.round() as u64)
}

/// Known GPU makers. A BMC's VGA (ASPEED, Matrox) is a display, not a GPU.
pub fn is_gpu(vendor: Option<&str>, product: Option<&str>, description: Option<&str>) -> bool {
    let text = format!(
        "{} {} {}",
        vendor.unwrap_or(""),
        product.unwrap_or(""),
        description.unwrap_or("")
    )
    .to_lowercase();
    if text.contains("aspeed") || text.contains("matrox") {
        return false;
    }
    text.contains("nvidia")
        || text.contains("3d controller")
        || text.contains("radeon")
        || text.contains("instinct")
        || text.contains("[amd/ati]")
        || text.contains("habana")
        || text.contains("data center gpu")
}

/// Caps a list at `MAX_ITEMS`; a machine with more is lying or not worth listing in full.
pub(crate) fn capped<T>(mut items: Vec<T>) -> Vec<T> {
    items.truncate(MAX_ITEMS);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_identify_nothing() {
        for p in [
            "",
            "   ",
            "To Be Filled By O.E.M.",
            "Not Specified",
            "00000000-0000-0000-0000-000000000000",
            "0",
            "Default string",
            "FFFFFFFF",
        ] {
            assert_eq!(clean(p), None, "{p:?}");
        }
        assert_eq!(clean("A401031X0502795").as_deref(), Some("A401031X0502795"));
        assert_eq!(
            clean("00000000-0000-0000-0000-D05099F030C4").as_deref(),
            Some("00000000-0000-0000-0000-D05099F030C4")
        );
    }

    #[test]
    fn clean_folds_control_characters_and_caps_length() {
        assert_eq!(clean("x\nspec: {}").as_deref(), Some("x spec: {}"));
        assert_eq!(clean("a\u{202e}b\u{200b}c").as_deref(), Some("abc"));
        assert_eq!(clean(&"z".repeat(10_000)).unwrap().chars().count(), MAX_FACT_CHARS);
    }

    #[test]
    fn facts_without_lldp_serialise_and_fingerprint_as_before() {
        let f = Facts {
            serial: Some("S1".into()),
            ..Facts::default()
        };
        let json = serde_json::to_value(&f).unwrap();
        assert!(json.get("lldp").is_none(), "an empty list is left out: {json}");
        // A row stored before the field existed reads back.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("lldp");
        assert_eq!(serde_json::from_value::<Facts>(old).unwrap(), f);
        let with = Facts {
            lldp: vec![LldpNeighbor {
                interface: "eno1".into(),
                switch: Some("sw1".into()),
                port: Some("Ethernet1".into()),
            }],
            ..f.clone()
        };
        assert_ne!(with.fingerprint(), f.fingerprint());
        assert_eq!(
            serde_json::from_value::<Facts>(serde_json::to_value(&with).unwrap()).unwrap(),
            with
        );
    }

    #[test]
    fn sizes_and_speeds() {
        assert_eq!(parse_size("239GB"), Some(239_000_000_000));
        assert_eq!(parse_size("64 GiB"), Some(64 << 30));
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size("1.5TB"), Some(1_500_000_000_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_speed_mbps("1Gbit/s"), Some(1000));
        assert_eq!(parse_speed_mbps("1000Mb/s"), Some(1000));
        assert_eq!(parse_speed_mbps("25G"), Some(25_000));
        assert_eq!(parse_speed_mbps("fast"), None);
    }
}
