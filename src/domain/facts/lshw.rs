//! `lshw -json` → Facts. Shapes and pitfalls: `../shared/docs/tinkerbell-reference.md` §7.

use serde_json::Value;

use super::{Bmc, Cpu, Disk, Facts, Gpu, Nic, capped, clean, is_gpu, parse_speed_mbps};
use crate::domain::mac::Mac;

/// Reads lshw's JSON, whose top level is an object (plain `lshw -json`) or an array
/// (`-class`, and newer lshw for everything). Unknown or missing keys are ignored.
pub fn from_lshw(root: &Value) -> Facts {
    let mut nodes = Vec::new();
    match root {
        Value::Array(items) => items.iter().for_each(|n| collect(n, &mut nodes, 0)),
        other => collect(other, &mut nodes, 0),
    }
    let mut facts = Facts::default();

    if let Some(system) = nodes.iter().find(|n| class(n) == Some("system")) {
        facts.vendor = str_of(system, "vendor");
        let sku = system
            .get("configuration")
            .and_then(|c| c.get("sku"))
            .and_then(Value::as_str);
        facts.product = str_of(system, "product")
            .map(|p| strip_sku(&p, sku))
            .and_then(|p| clean(&p));
        facts.serial = str_of(system, "serial");
        facts.uuid = conf(system, "uuid").map(|u| u.to_ascii_lowercase());
    }

    let mut x86 = false;
    let mut arm = false;
    for cpu in nodes.iter().filter(|n| class(n) == Some("processor")) {
        if cpu.get("disabled").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(caps) = cpu.get("capabilities").and_then(Value::as_object) {
            x86 |= ["x86-64", "lm", "apic", "sse2", "cx8"]
                .iter()
                .any(|k| caps.contains_key(*k));
            arm |= ["asimd", "evtstrm", "aarch64", "cpuid"]
                .iter()
                .any(|k| caps.contains_key(*k))
                && caps.contains_key("fp");
        }
        let cores = conf(cpu, "enabledcores")
            .or_else(|| conf(cpu, "cores"))
            .and_then(|c| c.parse().ok());
        facts.cpus.push(Cpu {
            model: str_of(cpu, "product"),
            vendor: str_of(cpu, "vendor"),
            cores,
            threads: conf(cpu, "threads").and_then(|t| t.parse().ok()),
        });
    }
    facts.cpus = capped(facts.cpus);
    facts.cpu_cores = facts
        .cpus
        .iter()
        .map(|c| c.cores.unwrap_or(0))
        .fold(0u32, u32::saturating_add);
    facts.arch = if x86 {
        Some("x86_64".into())
    } else if arm {
        Some("aarch64".into())
    } else {
        None
    };

    // Total RAM is the `memory` child of `core`; caches and the BIOS are memory-class too.
    facts.memory_bytes = nodes
        .iter()
        .find(|n| {
            class(n) == Some("memory")
                && id(n).is_some_and(|i| i == "memory" || i.starts_with("memory:"))
                && bytes(n, "size").is_some()
        })
        .and_then(|n| bytes(n, "size"));

    for disk in nodes.iter().filter(|n| class(n) == Some("disk")) {
        let Some(device) = dev_name(disk) else { continue };
        let product = str_of(disk, "product");
        let description = str_of(disk, "description").unwrap_or_default().to_lowercase();
        let is_optical = id(disk).is_some_and(|i| i.starts_with("cdrom"))
            || description.contains("cd-rom")
            || description.contains("dvd");
        // A BMC's virtual media (AMI: "Virtual CDROM0", "Virtual Floppy0") is not a disk to install on.
        let is_virtual_media = product.as_deref().is_some_and(|p| {
            p.starts_with("Virtual CDROM") || p.starts_with("Virtual Floppy") || p.starts_with("Virtual HDisk")
        });
        if is_optical
            || is_virtual_media
            || id(disk) == Some("medium")
            || facts.disks.iter().any(|d: &Disk| d.device == device)
        {
            continue;
        }
        facts.disks.push(Disk {
            device,
            size_bytes: bytes(disk, "size"),
            model: product,
            serial: str_of(disk, "serial"),
        });
    }
    facts.disks = capped(facts.disks);

    for nic in nodes.iter().filter(|n| class(n) == Some("network")) {
        let Some(mac) = nic
            .get("serial")
            .and_then(Value::as_str)
            .and_then(|s| Mac::parse(s).ok())
        else {
            continue;
        };
        let driver = conf(nic, "driver");
        let logical = nic.get("capabilities").and_then(|c| c.get("logical")).is_some()
            || driver
                .as_deref()
                .is_some_and(|d| ["bonding", "bridge", "8021q", "veth", "tun", "macvlan", "vxlan"].contains(&d));
        if logical {
            continue;
        }
        let speed_mbps = conf(nic, "speed").and_then(|s| parse_speed_mbps(&s)).or_else(|| {
            (nic.get("units").and_then(Value::as_str) == Some("bit/s"))
                .then(|| nic.get("size").and_then(Value::as_u64).map(|b| b / 1_000_000))
                .flatten()
        });
        facts.nics.push(Nic {
            name: dev_or_plain_name(nic),
            mac,
            speed_mbps,
            link: conf(nic, "link").map(|l| l == "yes"),
            driver,
        });
    }
    facts.nics = capped(facts.nics);

    for display in nodes.iter().filter(|n| class(n) == Some("display")) {
        let (vendor, product) = (str_of(display, "vendor"), str_of(display, "product"));
        if is_gpu(
            vendor.as_deref(),
            product.as_deref(),
            str_of(display, "description").as_deref(),
        ) {
            facts.gpus.push(Gpu { vendor, product });
        }
    }
    facts.gpus = capped(facts.gpus);

    // lshw rarely sees a BMC's address, but an IPMI interface's configuration may carry it.
    if let Some(ip) = nodes
        .iter()
        .filter(|n| id(n).is_some_and(|i| i.contains("ipmi") || i.contains("bmc")))
        .find_map(|n| conf(n, "ip"))
    {
        facts.bmc = Some(Bmc { address: ip });
    }
    facts
}

/// Depth-first walk, bounded: a report is untrusted and serde already caps nesting at 128.
fn collect<'a>(node: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
    if depth > 64 || !node.is_object() || out.len() > 100_000 {
        return;
    }
    out.push(node);
    if let Some(children) = node.get("children").and_then(Value::as_array) {
        for child in children {
            collect(child, out, depth + 1);
        }
    }
}

fn class(n: &Value) -> Option<&str> {
    n.get("class").and_then(Value::as_str)
}

fn id(n: &Value) -> Option<&str> {
    n.get("id").and_then(Value::as_str)
}

fn str_of(n: &Value, key: &str) -> Option<String> {
    n.get(key).and_then(Value::as_str).and_then(clean)
}

/// `configuration` values are strings in lshw even when they look like numbers.
fn conf(n: &Value, key: &str) -> Option<String> {
    let v = n.get("configuration")?.get(key)?;
    match v {
        Value::String(s) => clean(s),
        Value::Number(num) => Some(num.to_string()),
        _ => None,
    }
}

/// `size` is bytes only when `units` says so (a NIC's size is its speed, a CPU's its clock).
fn bytes(n: &Value, key: &str) -> Option<u64> {
    (n.get("units").and_then(Value::as_str) == Some("bytes"))
        .then(|| n.get(key).and_then(Value::as_u64))
        .flatten()
}

/// `logicalname` is a string or an array that may include mount points: take `/dev/…`.
fn dev_name(n: &Value) -> Option<String> {
    let names: Vec<&str> = match n.get("logicalname")? {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    names
        .into_iter()
        .find(|s| s.starts_with("/dev/") && s.len() <= 64 && !s.contains(char::is_whitespace))
        .map(str::to_string)
}

fn dev_or_plain_name(n: &Value) -> Option<String> {
    match n.get("logicalname")? {
        Value::String(s) => clean(s),
        Value::Array(a) => a.iter().filter_map(Value::as_str).next().and_then(clean),
        _ => None,
    }
}

/// lshw appends ` (<sku>)` to the product when DMI has a SKU; the SKU is a separate fact.
fn strip_sku(product: &str, sku: Option<&str>) -> String {
    if let Some(sku) = sku
        && let Some(stripped) = product.strip_suffix(&format!(" ({sku})"))
    {
        return stripped.to_string();
    }
    product.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../shared/fixtures/lshw/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn supermicro_object_top_level() {
        let f = from_lshw(&fixture("supermicro-ssg-6029p-x11dph-t.json"));
        assert_eq!(f.vendor.as_deref(), Some("Supermicro"));
        assert_eq!(f.product.as_deref(), Some("SSG-6029P-E1CR12L-PH004"));
        assert_eq!(f.serial.as_deref(), Some("A401031X0502795"));
        assert_eq!(f.uuid.as_deref(), Some("969ebc00-fc71-11e9-8000-ac1f6bdc19c2"));
        assert_eq!(f.arch.as_deref(), Some("x86_64"));
        assert_eq!(f.cpus.len(), 2);
        assert_eq!(f.cpu_cores, 24);
        assert_eq!(f.memory_bytes, Some(205_084_688_384));
        assert!(
            f.disks
                .iter()
                .any(|d| d.device == "/dev/nvme0n1" && d.size_bytes == Some(256_060_514_304))
        );
        assert!(f.disks.len() >= 16, "{:?}", f.disks.len());
        let eno1 = f.nics.iter().find(|n| n.name.as_deref() == Some("eno1")).unwrap();
        assert_eq!(eno1.mac.to_string(), "ac:1f:6b:dc:19:c2");
        assert_eq!(eno1.link, Some(false));
        let mlx = f.nics.iter().find(|n| n.name.as_deref() == Some("enp216s0f0")).unwrap();
        assert_eq!(mlx.speed_mbps, Some(10_000));
        assert!(f.gpus.is_empty(), "an ASPEED VGA is no GPU");
    }

    #[test]
    fn asrock_array_top_level_skips_placeholders_bonds_and_virtual_media() {
        let f = from_lshw(&fixture("packet-c3small-asrockrack-e3c246d4i-nl.json"));
        assert_eq!(f.vendor.as_deref(), Some("Packet"));
        assert_eq!(f.product.as_deref(), Some("c3.small.x86"));
        assert_eq!(f.serial.as_deref(), Some("D5S0R8000105"));
        assert_eq!(f.cpu_cores, 8);
        assert_eq!(f.memory_bytes, Some(34_359_738_368));
        assert!(!f.nics.iter().any(|n| n.name.as_deref() == Some("bond0")));
        assert!(f.nics.iter().any(|n| n.name.as_deref() == Some("eno1")));
        assert!(
            f.disks
                .iter()
                .all(|d| d.device != "/dev/cdrom" && d.device != "/dev/sr0" && d.device != "/dev/sdc"),
            "{:?}",
            f.disks
        );
        assert_eq!(f.disks.len(), 2);
    }

    #[test]
    fn arm_board_without_dmi() {
        let f = from_lshw(&fixture("globalscale-espressobin-arm64.json"));
        assert_eq!(f.vendor, None);
        assert_eq!(f.serial, None);
        assert_eq!(f.arch.as_deref(), Some("aarch64"));
        assert!(f.disks.is_empty());
        assert!(f.nics.iter().any(|n| n.mac.to_string() == "f0:ad:4e:03:64:7f"));
    }

    #[test]
    fn firecracker_vm_mounted_disk() {
        let f = from_lshw(&fixture("firecracker-vm-debian12.json"));
        assert_eq!(f.serial, None);
        assert_eq!(f.disks.len(), 1);
        assert_eq!(f.disks[0].device, "/dev/vda");
        assert_eq!(f.disks[0].size_bytes, None);
        assert_eq!(f.nics[0].mac.to_string(), "02:fc:00:00:00:01");
        assert_eq!(f.memory_bytes, Some(25_769_803_776));
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        for v in [
            serde_json::json!(null),
            serde_json::json!(42),
            serde_json::json!([1, "x", {}]),
            serde_json::json!({"children": "no"}),
            serde_json::json!({"class": "network", "serial": "AA:BB:CC:DD:EE:FF", "logicalname": ["eth0", 3]}),
        ] {
            let _ = from_lshw(&v);
        }
    }
}
