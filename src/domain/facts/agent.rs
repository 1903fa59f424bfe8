//! Tink Agent attributes (the `tinkerbell.org/agent-attributes` annotation) → Facts.
//! Every field is optional, sizes are human-readable strings, empty objects occur.

use serde_json::Value;

use super::{Cpu, Disk, Facts, Gpu, Nic, capped, clean, is_gpu, parse_size, parse_speed_mbps};
use crate::domain::mac::Mac;

pub fn from_agent_attributes(attrs: &Value) -> Facts {
    let mut facts = Facts::default();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).and_then(clean);

    let product = attrs.get("product").cloned().unwrap_or(Value::Null);
    let chassis = attrs.get("chassis").cloned().unwrap_or(Value::Null);
    let board = attrs.get("baseboard").cloned().unwrap_or(Value::Null);
    facts.vendor = s(&product, "vendor")
        .or_else(|| s(&chassis, "vendor"))
        .or_else(|| s(&board, "vendor"));
    facts.product = s(&product, "name").or_else(|| s(&board, "product"));
    facts.serial = s(&product, "serialNumber")
        .or_else(|| s(&chassis, "serial"))
        .or_else(|| s(&board, "serialNumber"));
    facts.uuid = s(&product, "uuid").map(|u| u.to_ascii_lowercase());

    if let Some(cpu) = attrs.get("cpu") {
        for p in cpu.get("processors").and_then(Value::as_array).into_iter().flatten() {
            facts.cpus.push(Cpu {
                model: s(p, "model"),
                vendor: s(p, "vendor"),
                cores: p
                    .get("cores")
                    .and_then(Value::as_u64)
                    .map(|c| c.min(u32::MAX as u64) as u32),
                threads: p
                    .get("threads")
                    .and_then(Value::as_u64)
                    .map(|c| c.min(u32::MAX as u64) as u32),
            });
            if let Some(caps) = p.get("capabilities").and_then(Value::as_array) {
                let has = |name: &str| caps.iter().any(|c| c.as_str() == Some(name));
                if has("lm") || has("x86-64") || has("sse2") {
                    facts.arch = Some("x86_64".into());
                } else if has("asimd") {
                    facts.arch = Some("aarch64".into());
                }
            }
        }
        facts.cpus = capped(facts.cpus);
        facts.cpu_cores = cpu
            .get("totalCores")
            .and_then(Value::as_u64)
            .map(|c| c.min(u32::MAX as u64) as u32)
            .unwrap_or_else(|| {
                facts
                    .cpus
                    .iter()
                    .map(|c| c.cores.unwrap_or(0))
                    .fold(0u32, u32::saturating_add)
            });
    }

    facts.memory_bytes = attrs
        .get("memory")
        .and_then(|m| m.get("total"))
        .and_then(Value::as_str)
        .and_then(parse_size);

    for d in attrs
        .get("blockDevices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = s(d, "name").filter(|n| !n.contains(['/', ' '])) else {
            continue;
        };
        facts.disks.push(Disk {
            device: format!("/dev/{name}"),
            size_bytes: d.get("size").and_then(Value::as_str).and_then(parse_size),
            model: s(d, "model"),
            serial: s(d, "serialNumber"),
        });
    }
    facts.disks = capped(facts.disks);

    for n in attrs
        .get("networkInterfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // NICs with an empty MAC (docker0) and anything not unicast are no boot candidates.
        let Some(mac) = n.get("mac").and_then(Value::as_str).and_then(|m| Mac::parse(m).ok()) else {
            continue;
        };
        facts.nics.push(Nic {
            name: s(n, "name"),
            mac,
            speed_mbps: n.get("speed").and_then(Value::as_str).and_then(parse_speed_mbps),
            link: None,
            driver: s(n, "driver"),
        });
    }
    facts.nics = capped(facts.nics);

    for p in attrs.get("pciDevices").and_then(Value::as_array).into_iter().flatten() {
        let class = s(p, "class").unwrap_or_default().to_lowercase();
        if !(class.contains("display")
            || class.contains("3d")
            || class.contains("vga")
            || class.contains("processing accelerator"))
        {
            continue;
        }
        let (vendor, product) = (s(p, "vendor"), s(p, "product"));
        if is_gpu(vendor.as_deref(), product.as_deref(), Some(&class)) {
            facts.gpus.push(Gpu { vendor, product });
        }
    }
    for g in attrs.get("gpuDevices").and_then(Value::as_array).into_iter().flatten() {
        facts.gpus.push(Gpu {
            vendor: s(g, "vendor"),
            product: s(g, "product"),
        });
    }
    facts.gpus = capped(facts.gpus);
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example() {
        let attrs = serde_json::json!({
          "cpu": {"totalCores": 16, "totalThreads": 32, "processors": [{"id": 0, "cores": 16, "threads": 32,
                  "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz", "capabilities": ["fpu", "avx2", "lm"]}]},
          "memory": {"total": "64GB", "usable": "62GB"},
          "blockDevices": [{"name": "nvme0n1", "controllerType": "NVMe", "driveType": "SSD", "size": "239GB",
                            "physicalBlockSize": "512B", "model": "SAMSUNG MZ1LB240HAJQ-00007", "serialNumber": "S4ATNX0N812345"}],
          "networkInterfaces": [{"name": "eno1", "mac": "3c:ec:ef:4c:4f:54", "speed": "1000Mb/s"}, {"name": "docker0", "mac": ""}],
          "pciDevices": [{"vendor": "NVIDIA Corporation", "product": "GA100 [A100 PCIe 40GB]", "class": "3D controller"}],
          "chassis": {"serial": "C8160KL12A34567", "vendor": "Supermicro"},
          "baseboard": {"vendor": "Supermicro", "product": "X12STH-SYS", "version": "1.02", "serialNumber": "OM22AS012345"},
          "product": {"name": "SYS-510T-MR", "vendor": "Supermicro", "serialNumber": "S123456X2A01234"}
        });
        let f = from_agent_attributes(&attrs);
        assert_eq!(f.vendor.as_deref(), Some("Supermicro"));
        assert_eq!(f.product.as_deref(), Some("SYS-510T-MR"));
        assert_eq!(f.serial.as_deref(), Some("S123456X2A01234"));
        assert_eq!(f.cpu_cores, 16);
        assert_eq!(f.arch.as_deref(), Some("x86_64"));
        assert_eq!(f.memory_bytes, Some(64_000_000_000));
        assert_eq!(
            f.disks,
            vec![Disk {
                device: "/dev/nvme0n1".into(),
                size_bytes: Some(239_000_000_000),
                model: Some("SAMSUNG MZ1LB240HAJQ-00007".into()),
                serial: Some("S4ATNX0N812345".into())
            }]
        );
        assert_eq!(f.nics.len(), 1, "docker0 has no MAC");
        assert_eq!(f.nics[0].speed_mbps, Some(1000));
        assert_eq!(f.gpus.len(), 1);
    }

    #[test]
    fn empty_objects_and_wrong_types() {
        let f = from_agent_attributes(
            &serde_json::json!({"chassis": {}, "cpu": {"processors": "x"}, "memory": {"total": 5}, "blockDevices": [{"name": "../etc"}]}),
        );
        assert_eq!(f, Facts::default());
    }
}
