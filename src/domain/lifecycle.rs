//! A machine's life after its first merge: what its manifests in git were rendered from
//! (`Basis`), and how new facts differ from that, in words a reviewer reads.

use serde::{Deserialize, Serialize};

use super::facts::Facts;

/// What a manifest was rendered from: compare two of these, not two manifests, to tell
/// whether a machine changed (a template edit alone is not the machine's doing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Basis {
    pub facts: Facts,
    /// Rendered for a provisioned machine: netboot off, unless its rule keeps it on.
    #[serde(default)]
    pub provisioned: bool,
    /// How many times it was re-provisioned: each round's Workflow has a name of its own
    /// (`render::workflow_name`), since Tinkerbell never runs a finished Workflow again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round: u32,
}

impl Basis {
    /// What a first registration is rendered from: its facts, netboot on, round 0.
    pub fn registered(facts: Facts) -> Basis {
        Basis {
            facts,
            provisioned: false,
            round: 0,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Sizes as disk vendors print them (decimal), so "3.84 TB" reads like the label.
pub fn decimal_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{} {}", trim_zeros(&format!("{v:.2}")), UNITS[i])
    }
}

/// Memory as the OS prints it (binary units).
fn binary_bytes(b: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    format!("{} GiB", trim_zeros(&format!("{:.1}", b as f64 / GIB)))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

fn or_unknown(s: Option<&str>) -> &str {
    s.unwrap_or("unknown")
}

/// How `new` differs from `old`, one line per change, plain text (escape it for Markdown).
/// Empty when nothing a reviewer would care about changed.
pub fn hardware_changes(old: &Facts, new: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    for (what, a, b) in [
        ("vendor", &old.vendor, &new.vendor),
        ("product", &old.product, &new.product),
        ("serial", &old.serial, &new.serial),
        ("system UUID", &old.uuid, &new.uuid),
        ("architecture", &old.arch, &new.arch),
    ] {
        if a != b {
            out.push(format!(
                "{what} changed: {} → {}",
                or_unknown(a.as_deref()),
                or_unknown(b.as_deref())
            ));
        }
    }
    if old.uefi != new.uefi {
        let mode = |u: Option<bool>| match u {
            Some(true) => "UEFI",
            Some(false) => "BIOS",
            None => "unknown",
        };
        out.push(format!("firmware changed: {} → {}", mode(old.uefi), mode(new.uefi)));
    }
    if old.memory_bytes != new.memory_bytes {
        let m = |b: Option<u64>| b.map(binary_bytes).unwrap_or_else(|| "unknown".into());
        out.push(format!(
            "memory changed: {} → {}",
            m(old.memory_bytes),
            m(new.memory_bytes)
        ));
    }
    if old.cpu_cores != new.cpu_cores || old.cpus.len() != new.cpus.len() {
        out.push(format!(
            "CPUs changed: {} socket(s), {} cores → {} socket(s), {} cores",
            old.cpus.len(),
            old.cpu_cores,
            new.cpus.len(),
            new.cpu_cores
        ));
    }
    let disk = |d: &super::facts::Disk| {
        let size = d.size_bytes.map(decimal_bytes).unwrap_or_else(|| "size unknown".into());
        match &d.model {
            Some(model) => format!("{} {size} ({model})", d.device),
            None => format!("{} {size}", d.device),
        }
    };
    for d in &new.disks {
        match old.disks.iter().find(|o| o.device == d.device) {
            None => out.push(format!("disk added: {}", disk(d))),
            Some(o) if o.size_bytes != d.size_bytes || o.serial != d.serial || o.model != d.model => {
                out.push(format!("disk replaced: {} → {}", disk(o), disk(d)))
            }
            Some(_) => {}
        }
    }
    for o in old
        .disks
        .iter()
        .filter(|o| !new.disks.iter().any(|d| d.device == o.device))
    {
        out.push(format!("disk removed: {}", disk(o)));
    }
    let nic = |n: &super::facts::Nic| match &n.name {
        Some(name) => format!("{name} {}", n.mac),
        None => n.mac.to_string(),
    };
    for n in new.nics.iter().filter(|n| !old.nics.iter().any(|o| o.mac == n.mac)) {
        out.push(format!("network interface added: {}", nic(n)));
    }
    for o in old.nics.iter().filter(|o| !new.nics.iter().any(|n| n.mac == o.mac)) {
        out.push(format!("network interface removed: {}", nic(o)));
    }
    let gpu = |g: &super::facts::Gpu| {
        format!(
            "{} {}",
            or_unknown(g.vendor.as_deref()),
            or_unknown(g.product.as_deref())
        )
    };
    for g in new.gpus.iter().filter(|g| !old.gpus.contains(g)) {
        out.push(format!("GPU added: {}", gpu(g)));
    }
    for g in old.gpus.iter().filter(|g| !new.gpus.contains(g)) {
        out.push(format!("GPU removed: {}", gpu(g)));
    }
    let bmc = |f: &Facts| f.bmc.as_ref().map(|b| b.address.clone());
    if bmc(old) != bmc(new) {
        out.push(format!(
            "BMC address changed: {} → {} (Rufio sends this machine's BMC credentials to the new address once merged)",
            bmc(old).as_deref().unwrap_or("none"),
            bmc(new).as_deref().unwrap_or("none")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::facts::Disk;

    #[test]
    fn a_new_disk_is_named_with_its_size_as_vendors_print_it() {
        let old = Facts {
            disks: vec![Disk {
                device: "/dev/nvme0n1".into(),
                size_bytes: Some(960_000_000_000),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut new = old.clone();
        new.disks.push(Disk {
            device: "/dev/nvme2n1".into(),
            size_bytes: Some(3_840_000_000_000),
            ..Default::default()
        });
        assert_eq!(hardware_changes(&old, &new), vec!["disk added: /dev/nvme2n1 3.84 TB"]);
        assert_eq!(hardware_changes(&new, &old), vec!["disk removed: /dev/nvme2n1 3.84 TB"]);
        assert!(hardware_changes(&old, &old).is_empty());
    }

    #[test]
    fn sizes_read_like_labels() {
        assert_eq!(decimal_bytes(960_000_000_000), "960 GB");
        assert_eq!(decimal_bytes(1_920_000_000_000), "1.92 TB");
        assert_eq!(decimal_bytes(512), "512 B");
    }
}
