//! What a discovery script reads besides lshw, each in the shape its tool prints:
//!
//! - `ip -j [-d] link` → link state of the NICs lshw listed, and the Ethernet NICs it missed;
//! - `dmidecode -s <keyword>` answers, as `{"system-serial-number": "…", …}` → the DMI
//!   identity (vendor, product, serial, UUID) where lshw saw none or a placeholder;
//! - `lldpctl -f json` (lldpd; `-f json0` too) → the switch ports the machine is cabled to.
//!
//! As untrusted as the rest of a report: every string goes through [`clean`], every list is
//! capped at [`MAX_ITEMS`], and a value of the wrong type is an error naming the field
//! (`ip_link[2].flags must be an array`), so a broken script is told what it sent wrong.

use serde_json::{Map, Value};

use super::{Facts, LldpNeighbor, MAX_ITEMS, Nic, clean};
use crate::domain::mac::Mac;

/// How an error message names a JSON value's type ("a string", "an array").
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string field of a tool's JSON object; absent or null is `None`.
fn string<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{at}.{key} must be a string, not {}", kind(other))),
    }
}

/// Names of virtual devices, for `ip -j link` without `-d` (which has no `linkinfo`): container
/// and VM plumbing, bridges, bonds, tunnels. None of these is a NIC to cable or boot from.
const VIRTUAL_PREFIXES: &[&str] = &[
    "docker",
    "veth",
    "br-",
    "virbr",
    "vnet",
    "cni",
    "flannel",
    "cali",
    "cilium",
    "vxlan",
    "tun",
    "tap",
    "bond",
    "team",
    "dummy",
    "kube-",
    "weave",
    "wg",
    "genev",
    "lxc",
    "lxd",
    "podman",
    "nodelocaldns",
];

fn is_virtual_name(name: &str) -> bool {
    name == "lo" || VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Merges `ip -j link` (the array it prints; `-d` adds `linkinfo`, which tells virtual devices
/// apart for sure) into the NICs:
///
/// - only Ethernet devices count (`link_type` `ether`): no loopback, no device with a
///   `linkinfo.info_kind` (veth, bridge, bond, vlan, vxlan, tun, dummy…) and none named like
///   one (docker0, veth…, br-…, virbr…, cni…; see `VIRTUAL_PREFIXES`);
/// - the MAC is `permaddr` when present (a bond's member shows the bond's MAC as its address);
/// - link: `operstate` `UP` is a link; an interface that is administratively down (no `UP`
///   flag) tells nothing about its cable, so it leaves the link as lshw saw it; otherwise
///   `DOWN`/`LOWERLAYERDOWN` or `NO-CARRIER` is no link, and `LOWER_UP` a link;
/// - a NIC lshw listed (same MAC and name, else same MAC, else same name, else lshw's MAC is
///   the current address) gets its link state updated (and its name if lshw had none); one
///   lshw missed is added, up to [`MAX_ITEMS`] NICs in all.
pub fn apply_ip_link(facts: &mut Facts, links: &Value) -> Result<(), String> {
    let Value::Array(items) = links else {
        return Err(format!(
            "ip_link must be the array that `ip -j link` prints, not {}",
            kind(links)
        ));
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("ip_link[{i}]");
        let Value::Object(link) = item else {
            return Err(format!("{at} must be an object, not {}", kind(item)));
        };
        let name = string(link, "ifname", &at)?.and_then(clean);
        let link_type = string(link, "link_type", &at)?;
        let operstate = string(link, "operstate", &at)?;
        let address = string(link, "address", &at)?.and_then(|a| Mac::parse(a).ok());
        let permaddr = string(link, "permaddr", &at)?.and_then(|a| Mac::parse(a).ok());
        let flags: Vec<&str> = match link.get("flags") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(f)) => f
                .iter()
                .enumerate()
                .map(|(j, x)| {
                    x.as_str()
                        .ok_or_else(|| format!("{at}.flags[{j}] must be a string, not {}", kind(x)))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("{at}.flags must be an array, not {}", kind(other))),
        };
        let info_kind = match link.get("linkinfo") {
            None | Some(Value::Null) => None,
            Some(Value::Object(info)) => string(info, "info_kind", &format!("{at}.linkinfo"))?,
            Some(other) => return Err(format!("{at}.linkinfo must be an object, not {}", kind(other))),
        };

        let physical = link_type == Some("ether")
            && !flags.contains(&"LOOPBACK")
            && info_kind.is_none()
            && !name.as_deref().is_some_and(is_virtual_name);
        let Some(mac) = permaddr.or(address).filter(|_| physical) else {
            continue;
        };
        let admin_up = flags.contains(&"UP");
        let state = match operstate {
            Some("UP") => Some(true),
            _ if !admin_up => None,
            Some("DOWN" | "LOWERLAYERDOWN") => Some(false),
            _ if flags.contains(&"NO-CARRIER") => Some(false),
            _ if flags.contains(&"LOWER_UP") => Some(true),
            _ => None,
        };

        // Bond members can share a MAC in lshw's eyes: the name decides between them.
        let pos = |want: &dyn Fn(&Nic) -> bool| facts.nics.iter().position(want);
        let same_name = |n: &Nic| name.is_some() && n.name == name;
        let known = pos(&|n| n.mac == mac && same_name(n))
            .or_else(|| pos(&|n| n.mac == mac))
            .or_else(|| pos(&same_name))
            .or_else(|| address.and_then(|a| pos(&|n| n.mac == a)));
        match known {
            Some(k) => {
                let nic = &mut facts.nics[k];
                if state.is_some() {
                    nic.link = state;
                }
                if nic.name.is_none() {
                    nic.name = name;
                }
            }
            None if facts.nics.len() < MAX_ITEMS => facts.nics.push(Nic {
                name,
                mac,
                speed_mbps: None,
                link: state,
                driver: None,
            }),
            None => {}
        }
    }
    Ok(())
}

/// The `dmidecode -s` keywords read, and which fact each fills (first answer wins).
pub const DMI_KEYWORDS: &[&str] = &[
    "system-manufacturer",
    "system-product-name",
    "system-serial-number",
    "system-uuid",
    "baseboard-manufacturer",
    "baseboard-product-name",
    "baseboard-serial-number",
    "chassis-manufacturer",
    "chassis-serial-number",
];

/// Fills vendor, product, serial and UUID from `dmidecode -s` answers where the facts have
/// none (lshw saw nothing, or a placeholder, which [`clean`] drops). The object maps keywords
/// to strings (or null); unknown keywords are ignored. Serial: the system's, else the
/// chassis', else the baseboard's, as Tink Agent reads them.
pub fn apply_dmidecode(facts: &mut Facts, dmi: &Value) -> Result<(), String> {
    let Value::Object(map) = dmi else {
        return Err(format!(
            "dmidecode must be an object of `dmidecode -s` keywords and their answers (such as {{\"system-serial-number\": \"…\"}}), not {}",
            kind(dmi)
        ));
    };
    let mut answers = std::collections::HashMap::new();
    for key in DMI_KEYWORDS {
        if let Some(v) = string(map, key, "dmidecode")?.and_then(clean) {
            answers.insert(*key, v);
        }
    }
    let first = |keys: &[&str]| keys.iter().find_map(|k| answers.get(k).cloned());
    if facts.vendor.is_none() {
        facts.vendor = first(&["system-manufacturer", "chassis-manufacturer", "baseboard-manufacturer"]);
    }
    if facts.product.is_none() {
        facts.product = first(&["system-product-name", "baseboard-product-name"]);
    }
    if facts.serial.is_none() {
        facts.serial = first(&[
            "system-serial-number",
            "chassis-serial-number",
            "baseboard-serial-number",
        ]);
    }
    if facts.uuid.is_none() {
        facts.uuid = first(&["system-uuid"]).map(|u| u.to_ascii_lowercase());
    }
    Ok(())
}

/// An object, or each object of an array (`json0` wraps everything in arrays); null is none.
fn objects<'a>(v: &'a Value, at: &str) -> Result<Vec<&'a Map<String, Value>>, String> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Object(m) => Ok(vec![m]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_object()
                    .ok_or_else(|| format!("{at}[{i}] must be an object, not {}", kind(x)))
            })
            .collect(),
        other => Err(format!("{at} must be an object, not {}", kind(other))),
    }
}

/// A text value: `"x"` (json), or `{"value": "x"}` / `[{"value": "x"}]` (json0).
fn text(v: Option<&Value>, at: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(clean(s)),
        Some(v @ (Value::Object(_) | Value::Array(_))) => match objects(v, at)?.first() {
            Some(o) => Ok(string(o, "value", at)?.and_then(clean)),
            None => Ok(None),
        },
        Some(other) => Err(format!("{at} must be a string, not {}", kind(other))),
    }
}

/// `id` of a chassis or port: `{"type": "ifname", "value": "Ethernet12"}` (or in an array).
fn id(obj: &Map<String, Value>, at: &str) -> Result<(Option<String>, Option<String>), String> {
    let at = format!("{at}.id");
    match obj.get("id") {
        None | Some(Value::Null) => Ok((None, None)),
        Some(Value::String(s)) => Ok((None, clean(s))),
        Some(v) => match objects(v, &at)?.first() {
            Some(o) => Ok((
                string(o, "type", &at)?.map(str::to_ascii_lowercase),
                string(o, "value", &at)?.and_then(clean),
            )),
            None => Ok((None, None)),
        },
    }
}

/// `{"eth0": <neighbor or neighbors>, …}` → (interface name, neighbor, where it is).
fn keyed<'a>(
    map: &'a Map<String, Value>,
    at: &str,
    bodies: &mut Vec<(String, &'a Map<String, Value>, String)>,
) -> Result<(), String> {
    for (name, body) in map {
        let at = format!("{at}.{}", clean(name).unwrap_or_default());
        for b in objects(body, &at)? {
            bodies.push((name.clone(), b, at.clone()));
        }
    }
    Ok(())
}

/// The neighbors `lldpctl -f json` (or `-f json0`) reports: which switch, and which port of
/// it, each interface is cabled to. The value is what lldpctl prints (`{"lldp": …}`), or
/// what is under its `lldp` key.
///
/// lldpctl's `json` format is irregular: `interface` is an object keyed by interface name when
/// there is one neighbor and an array of such objects when there are several; `chassis` is
/// keyed by the switch's system name when it has one, and holds `id` directly when it has
/// not. Both forms, and `json0`'s arrays with `name`/`value` keys, are read.
///
/// Switch: its system name, else its chassis ID. Port: its ID (`Ethernet12`, `Gi1/0/12`),
/// but its description when the ID is only a MAC address. Neighbors with neither are
/// dropped, duplicates too, and at most [`MAX_ITEMS`] are kept.
pub fn lldp_neighbors(v: &Value) -> Result<Vec<LldpNeighbor>, String> {
    let (root, at) = match v {
        Value::Object(m) if m.contains_key("lldp") => (&m["lldp"], "lldp.lldp"),
        Value::Object(_) => (v, "lldp"),
        other => {
            return Err(format!(
                "lldp must be the object that `lldpctl -f json` prints, not {}",
                kind(other)
            ));
        }
    };
    let mut out: Vec<LldpNeighbor> = Vec::new();
    for (i, section) in objects(root, at)?.into_iter().enumerate() {
        let at = if root.is_array() {
            format!("{at}[{i}].interface")
        } else {
            format!("{at}.interface")
        };
        let Some(interfaces) = section.get("interface") else {
            continue;
        };
        // (interface name, neighbor body, where it is).
        let mut bodies: Vec<(String, &Map<String, Value>, String)> = Vec::new();
        match interfaces {
            Value::Object(map) => keyed(map, &at, &mut bodies)?,
            Value::Array(_) => {
                for (j, entry) in objects(interfaces, &at)?.into_iter().enumerate() {
                    match entry.get("name") {
                        // json0: {"name": "eth0", "chassis": [...], ...}
                        Some(Value::String(name)) => bodies.push((name.clone(), entry, format!("{at}[{j}]"))),
                        _ => keyed(entry, &format!("{at}[{j}]"), &mut bodies)?,
                    }
                }
            }
            Value::Null => {}
            other => return Err(format!("{at} must be an object or an array, not {}", kind(other))),
        }

        for (name, body, at) in bodies {
            let Some(interface) = clean(&name) else { continue };
            let switch = match body.get("chassis") {
                None => None,
                Some(c) => {
                    let at = format!("{at}.chassis");
                    match objects(c, &at)?.first() {
                        None => None,
                        Some(chassis) if chassis.contains_key("id") || chassis.contains_key("name") => {
                            // Unnamed (json), or json0's {"id": [...], "name": [...]}.
                            text(chassis.get("name"), &format!("{at}.name"))?.or(id(chassis, &at)?.1)
                        }
                        Some(chassis) => match chassis.iter().next() {
                            // Keyed by the system name: {"sw1": {"id": ...}}.
                            Some((sysname, inner)) => {
                                let at = format!("{at}.{}", clean(sysname).unwrap_or_default());
                                let chassis_id = match objects(inner, &at)?.first() {
                                    Some(inner) => id(inner, &at)?.1,
                                    None => None,
                                };
                                clean(sysname).or(chassis_id)
                            }
                            None => None,
                        },
                    }
                }
            };
            let port = match body.get("port") {
                None => None,
                Some(p) => {
                    let at = format!("{at}.port");
                    match objects(p, &at)?.first() {
                        None => None,
                        Some(port) => {
                            let (id_type, port_id) = id(port, &at)?;
                            let descr = text(port.get("descr"), &format!("{at}.descr"))?;
                            if id_type.as_deref() == Some("mac") {
                                descr.or(port_id)
                            } else {
                                port_id.or(descr)
                            }
                        }
                    }
                }
            };
            if switch.is_none() && port.is_none() {
                continue;
            }
            let neighbor = LldpNeighbor {
                interface,
                switch,
                port,
            };
            if !out.contains(&neighbor) {
                out.push(neighbor);
            }
            if out.len() >= MAX_ITEMS {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nic(name: &str, mac: &str, link: Option<bool>) -> Nic {
        Nic {
            name: Some(name.into()),
            mac: Mac::parse(mac).unwrap(),
            speed_mbps: Some(1000),
            link,
            driver: Some("igb".into()),
        }
    }

    /// `ip -j -d link` on a server with a bond, a bridge, docker and a NIC lshw missed.
    fn ip_link_sample() -> Value {
        json!([
            {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "mtu": 65536, "operstate": "UNKNOWN", "link_type": "loopback", "address": "00:00:00:00:00:00"},
            {"ifindex": 2, "ifname": "eno1", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1500, "operstate": "UP", "link_type": "ether", "address": "ac:1f:6b:dc:19:c2", "parentbus": "pci"},
            {"ifindex": 3, "ifname": "eno2", "flags": ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"], "operstate": "DOWN", "link_type": "ether", "address": "ac:1f:6b:dc:19:c3"},
            {"ifindex": 4, "ifname": "enp216s0f0", "flags": ["BROADCAST", "MULTICAST"], "operstate": "DOWN", "link_type": "ether", "address": "ac:1f:6b:dc:19:c4"},
            {"ifindex": 5, "ifname": "enp216s0f1", "flags": ["BROADCAST", "MULTICAST", "SLAVE", "UP", "LOWER_UP"], "operstate": "UP", "link_type": "ether", "address": "02:11:22:33:44:55", "permaddr": "ac:1f:6b:dc:19:c5", "linkinfo": {"info_slave_kind": "bond"}},
            {"ifindex": 6, "ifname": "bond0", "flags": ["BROADCAST", "MASTER", "UP", "LOWER_UP"], "operstate": "UP", "link_type": "ether", "address": "02:11:22:33:44:55", "linkinfo": {"info_kind": "bond"}},
            {"ifindex": 7, "ifname": "docker0", "flags": ["NO-CARRIER", "UP"], "operstate": "DOWN", "link_type": "ether", "address": "02:42:ac:11:00:01"},
            {"ifindex": 8, "ifname": "veth12ab", "flags": ["UP", "LOWER_UP"], "operstate": "UP", "link_type": "ether", "address": "0a:58:0a:f4:00:01"},
            {"ifindex": 9, "ifname": "virbr0", "flags": ["UP"], "operstate": "DOWN", "link_type": "ether", "address": "52:54:00:aa:bb:cc", "linkinfo": {"info_kind": "bridge"}},
            {"ifindex": 10, "ifname": "ib0", "flags": ["UP", "LOWER_UP"], "operstate": "UP", "link_type": "infiniband", "address": "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:0b:0c"},
            {"ifindex": 11, "ifname": "eno3", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "operstate": "UP", "link_type": "ether", "address": "ac:1f:6b:dc:19:c6"}
        ])
    }

    #[test]
    fn ip_link_updates_link_state_and_adds_missed_physical_nics_only() {
        let mut f = Facts {
            nics: vec![
                nic("eno1", "ac:1f:6b:dc:19:c2", Some(false)),
                nic("eno2", "ac:1f:6b:dc:19:c3", None),
                nic("enp216s0f0", "ac:1f:6b:dc:19:c4", Some(true)),
                nic("enp216s0f1", "ac:1f:6b:dc:19:c5", None),
            ],
            ..Facts::default()
        };
        apply_ip_link(&mut f, &ip_link_sample()).unwrap();
        let link = |name: &str| f.nics.iter().find(|n| n.name.as_deref() == Some(name)).map(|n| n.link);
        assert_eq!(link("eno1"), Some(Some(true)), "operstate UP");
        assert_eq!(link("eno2"), Some(Some(false)), "up, no carrier");
        assert_eq!(
            link("enp216s0f0"),
            Some(Some(true)),
            "administratively down tells nothing: lshw's value stays"
        );
        assert_eq!(
            link("enp216s0f1"),
            Some(Some(true)),
            "a bond member, matched by its permanent address"
        );
        assert_eq!(link("eno3"), Some(Some(true)), "missed by lshw: added");
        let added = f.nics.iter().find(|n| n.name.as_deref() == Some("eno3")).unwrap();
        assert_eq!(
            (added.mac.to_string(), added.speed_mbps, added.driver.as_deref()),
            ("ac:1f:6b:dc:19:c6".into(), None, None)
        );
        assert_eq!(
            f.nics.len(),
            5,
            "no lo, bond0, docker0, veth, virbr0 or InfiniBand: {:?}",
            f.nics
        );
        // lshw's other facts about a NIC stay.
        assert_eq!(f.nics[0].speed_mbps, Some(1000));
        assert_eq!(f.nics[0].driver.as_deref(), Some("igb"));
    }

    #[test]
    fn bond_members_sharing_a_mac_in_lshw_are_told_apart_by_name() {
        let mut f = Facts {
            nics: vec![
                nic("enp216s0f0", "0c:42:a1:3d:bd:e0", None),
                nic("enp216s0f1", "0c:42:a1:3d:bd:e0", None),
            ],
            ..Facts::default()
        };
        apply_ip_link(&mut f, &json!([
            {"ifname": "enp216s0f0", "flags": ["UP", "LOWER_UP"], "operstate": "UP", "link_type": "ether", "address": "0c:42:a1:3d:bd:e0"},
            {"ifname": "enp216s0f1", "flags": ["UP", "NO-CARRIER"], "operstate": "DOWN", "link_type": "ether", "address": "0c:42:a1:3d:bd:e0", "permaddr": "0c:42:a1:3d:bd:e1"}
        ])).unwrap();
        assert_eq!(
            f.nics.iter().map(|n| n.link).collect::<Vec<_>>(),
            vec![Some(true), Some(false)]
        );
    }

    #[test]
    fn ip_link_without_details_and_with_no_lshw_nics() {
        let mut f = Facts::default();
        let plain = json!([
            {"ifname": "eth0", "flags": ["BROADCAST", "UP", "LOWER_UP"], "operstate": "UNKNOWN", "link_type": "ether", "address": "52:54:00:12:34:56"},
            {"ifname": "br-1a2b", "flags": ["UP"], "operstate": "UP", "link_type": "ether", "address": "52:54:00:12:34:57"},
            {"ifname": "eth1", "link_type": "ether", "address": "ff:ff:ff:ff:ff:ff"},
            {"ifname": "eth2", "link_type": "ether"}
        ]);
        apply_ip_link(&mut f, &plain).unwrap();
        assert_eq!(f.nics.len(), 1, "{:?}", f.nics);
        assert_eq!(
            f.nics[0].link,
            Some(true),
            "operstate UNKNOWN with LOWER_UP has a carrier"
        );
        assert!(apply_ip_link(&mut f, &json!([])).is_ok());
    }

    #[test]
    fn ip_link_is_bounded_and_cleaned() {
        let mut f = Facts::default();
        let many: Vec<Value> = (0..1000u32)
            .map(|i| json!({"ifname": format!("eth{i}<b>\u{202e}"), "flags": ["UP"], "operstate": "UP", "link_type": "ether", "address": format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256)}))
            .collect();
        apply_ip_link(&mut f, &Value::Array(many)).unwrap();
        assert_eq!(f.nics.len(), MAX_ITEMS);
        assert_eq!(
            f.nics[0].name.as_deref(),
            Some("eth0<b>"),
            "bidi controls stripped; escaping is the renderer's job"
        );
        let long = json!([{"ifname": "x".repeat(10_000), "link_type": "ether", "address": "02:00:00:00:ff:01"}]);
        let mut f = Facts::default();
        apply_ip_link(&mut f, &long).unwrap();
        assert_eq!(
            f.nics[0].name.as_ref().unwrap().chars().count(),
            super::super::MAX_FACT_CHARS
        );
    }

    #[test]
    fn ip_link_wrong_types_name_the_field() {
        for (v, needle) in [
            (
                json!({"ifname": "eth0"}),
                "ip_link must be the array that `ip -j link` prints, not an object",
            ),
            (json!("eth0 UP"), "ip_link must be the array"),
            (
                json!([{"ifname": "eth0"}, 7]),
                "ip_link[1] must be an object, not a number",
            ),
            (
                json!([{"ifname": 7}]),
                "ip_link[0].ifname must be a string, not a number",
            ),
            (
                json!([{"ifname": "e", "flags": "UP"}]),
                "ip_link[0].flags must be an array, not a string",
            ),
            (
                json!([{"ifname": "e", "flags": ["UP", 1]}]),
                "ip_link[0].flags[1] must be a string",
            ),
            (
                json!([{"ifname": "e", "operstate": true}]),
                "ip_link[0].operstate must be a string, not a boolean",
            ),
            (
                json!([{"ifname": "e", "linkinfo": "bond"}]),
                "ip_link[0].linkinfo must be an object",
            ),
            (
                json!([{"ifname": "e", "address": ["02:00:00:00:00:01"]}]),
                "ip_link[0].address must be a string, not an array",
            ),
        ] {
            let err = apply_ip_link(&mut Facts::default(), &v).unwrap_err();
            assert!(err.contains(needle), "{v} -> {err}");
        }
    }

    #[test]
    fn dmidecode_fills_only_what_lshw_left_open() {
        let dmi = json!({
            "system-manufacturer": "Supermicro", "system-product-name": "To Be Filled By O.E.M.",
            "system-serial-number": "Default string", "system-uuid": "969EBC00-FC71-11E9-8000-AC1F6BDC19C2",
            "baseboard-product-name": "X11DPH-T", "baseboard-serial-number": "VM194S600123",
            "chassis-serial-number": "C8160KL12A34567", "processor-family": ["ignored", "unknown keyword"]
        });
        let mut f = Facts {
            vendor: Some("Dell Inc.".into()),
            ..Facts::default()
        };
        apply_dmidecode(&mut f, &dmi).unwrap();
        assert_eq!(f.vendor.as_deref(), Some("Dell Inc."), "lshw's answer stays");
        assert_eq!(
            f.product.as_deref(),
            Some("X11DPH-T"),
            "placeholder skipped: the baseboard's"
        );
        assert_eq!(
            f.serial.as_deref(),
            Some("C8160KL12A34567"),
            "placeholder skipped: the chassis'"
        );
        assert_eq!(f.uuid.as_deref(), Some("969ebc00-fc71-11e9-8000-ac1f6bdc19c2"));
        let mut f = Facts::default();
        apply_dmidecode(
            &mut f,
            &json!({"system-serial-number": null, "system-uuid": "00000000-0000-0000-0000-000000000000"}),
        )
        .unwrap();
        assert_eq!(f, Facts::default());
    }

    #[test]
    fn dmidecode_hostile_strings_are_cleaned_and_wrong_types_named() {
        let mut f = Facts::default();
        let dmi = json!({"system-serial-number": "S1\"\\\n<script>alert(1)</script>\nspec: {}\u{202e}", "system-manufacturer": "z".repeat(5000)});
        apply_dmidecode(&mut f, &dmi).unwrap();
        assert_eq!(f.serial.as_deref(), Some("S1\"\\ <script>alert(1)</script> spec: {}"));
        assert_eq!(f.vendor.unwrap().chars().count(), super::super::MAX_FACT_CHARS);
        for (v, needle) in [
            (json!("S1"), "dmidecode must be an object of `dmidecode -s` keywords"),
            (json!(["S1"]), "not an array"),
            (
                json!({"system-serial-number": 12}),
                "dmidecode.system-serial-number must be a string, not a number",
            ),
            (
                json!({"system-uuid": {"x": 1}}),
                "dmidecode.system-uuid must be a string, not an object",
            ),
        ] {
            let err = apply_dmidecode(&mut Facts::default(), &v).unwrap_err();
            assert!(err.contains(needle), "{v} -> {err}");
        }
    }

    fn neighbor(interface: &str, switch: &str, port: &str) -> LldpNeighbor {
        LldpNeighbor {
            interface: interface.into(),
            switch: Some(switch.into()),
            port: Some(port.into()),
        }
    }

    #[test]
    fn lldpctl_json_with_one_interface_is_an_object() {
        let v = json!({"lldp": {"interface": {"eno1": {
            "via": "LLDP", "rid": "1", "age": "0 day, 00:01:02",
            "chassis": {"leaf-01.dc1": {"id": {"type": "mac", "value": "44:4c:a8:00:00:01"}, "descr": "Arista Networks EOS", "mgmt-ip": "10.0.0.1",
                        "capability": [{"type": "Bridge", "enabled": true}]}},
            "port": {"id": {"type": "ifname", "value": "Ethernet12"}, "descr": "server-01 eno1", "ttl": "120"},
            "vlan": {"vlan-id": "100", "pvid": true}
        }}}});
        assert_eq!(
            lldp_neighbors(&v).unwrap(),
            vec![neighbor("eno1", "leaf-01.dc1", "Ethernet12")]
        );
        // What is under "lldp" works as well.
        assert_eq!(lldp_neighbors(&v["lldp"]).unwrap().len(), 1);
    }

    #[test]
    fn lldpctl_json_with_several_interfaces_is_an_array_and_unnamed_switches_give_their_id() {
        let v = json!({"lldp": {"interface": [
            {"eno1": {"via": "LLDP", "chassis": {"leaf-01": {"id": {"type": "mac", "value": "44:4c:a8:00:00:01"}}}, "port": {"id": {"type": "ifname", "value": "Ethernet12"}}}},
            {"eno2": {"via": "LLDP", "chassis": {"id": {"type": "mac", "value": "44:4c:a8:00:00:02"}, "descr": "no system name"},
                      "port": {"id": {"type": "mac", "value": "44:4c:a8:00:00:99"}, "descr": "GigabitEthernet1/0/7"}}},
            {"eno2": {"via": "CDPv2", "chassis": {"leaf-02": {"id": {"type": "local", "value": "FOC123"}}}, "port": {"id": {"type": "local", "value": "Gi1/0/7"}}}},
            {"eno1": {"via": "LLDP", "chassis": {"leaf-01": {"id": {"type": "mac", "value": "44:4c:a8:00:00:01"}}}, "port": {"id": {"type": "ifname", "value": "Ethernet12"}}}},
            {"eno3": {"via": "LLDP", "rid": "3"}}
        ]}});
        assert_eq!(
            lldp_neighbors(&v).unwrap(),
            vec![
                neighbor("eno1", "leaf-01", "Ethernet12"),
                neighbor("eno2", "44:4c:a8:00:00:02", "GigabitEthernet1/0/7"),
                neighbor("eno2", "leaf-02", "Gi1/0/7"),
            ],
            "a MAC as port ID gives way to the description; duplicates and empty neighbors are dropped"
        );
    }

    #[test]
    fn lldpctl_json0_and_no_neighbors() {
        let v = json!({"lldp": [{"interface": [{"name": "eno1", "via": "LLDP",
            "chassis": [{"id": [{"type": "mac", "value": "44:4c:a8:00:00:01"}], "name": [{"value": "spine-1"}]}],
            "port": [{"id": [{"type": "ifname", "value": "swp7"}], "descr": [{"value": "to server"}]}]}]}]});
        assert_eq!(lldp_neighbors(&v).unwrap(), vec![neighbor("eno1", "spine-1", "swp7")]);
        for empty in [
            json!({"lldp": {}}),
            json!({"lldp": []}),
            json!({"lldp": [{}]}),
            json!({"lldp": null}),
            json!({}),
        ] {
            assert_eq!(lldp_neighbors(&empty).unwrap(), vec![], "{empty}");
        }
    }

    #[test]
    fn lldp_hostile_input_is_cleaned_capped_and_wrong_types_named() {
        let hostile = json!({"lldp": {"interface": {"eno1\u{202e}": {
            "chassis": {"<img src=x onerror=alert(1)>\n@admin #1": {"id": {"type": "mac", "value": "x"}}},
            "port": {"id": {"type": "ifname", "value": "Eth1\nspec: {hostile: true}"}}
        }}}});
        let n = lldp_neighbors(&hostile).unwrap();
        assert_eq!(
            n,
            vec![neighbor(
                "eno1",
                "<img src=x onerror=alert(1)> @admin #1",
                "Eth1 spec: {hostile: true}"
            )]
        );

        let many: Vec<Value> = (0..500).map(|i| json!({format!("eth{i}"): {"chassis": {"sw": {}}, "port": {"id": {"type": "ifname", "value": format!("p{i}")}}}})).collect();
        assert_eq!(
            lldp_neighbors(&json!({"lldp": {"interface": many}})).unwrap().len(),
            MAX_ITEMS
        );
        let long =
            json!({"lldp": {"interface": {"eno1": {"chassis": {"s".repeat(10_000): {}}, "port": {"descr": "p"}}}}});
        assert_eq!(
            lldp_neighbors(&long).unwrap()[0]
                .switch
                .as_ref()
                .unwrap()
                .chars()
                .count(),
            super::super::MAX_FACT_CHARS
        );

        for (v, needle) in [
            (
                json!("eno1 sw1 Ethernet12"),
                "lldp must be the object that `lldpctl -f json` prints, not a string",
            ),
            (json!([]), "lldp must be the object"),
            (json!({"lldp": "x"}), "lldp.lldp must be an object, not a string"),
            (
                json!({"lldp": {"interface": 3}}),
                "lldp.lldp.interface must be an object or an array, not a number",
            ),
            (
                json!({"lldp": {"interface": {"eno1": "sw1"}}}),
                "lldp.lldp.interface.eno1 must be an object, not a string",
            ),
            (
                json!({"lldp": {"interface": [5]}}),
                "lldp.lldp.interface[0] must be an object, not a number",
            ),
            (
                json!({"lldp": {"interface": {"eno1": {"port": "Ethernet12"}}}}),
                "lldp.lldp.interface.eno1.port must be an object, not a string",
            ),
            (
                json!({"lldp": {"interface": {"eno1": {"port": {"id": {"value": 12}}}}}}),
                "lldp.lldp.interface.eno1.port.id.value must be a string, not a number",
            ),
            (
                json!({"lldp": {"interface": {"eno1": {"port": {"descr": 1}}}}}),
                "lldp.lldp.interface.eno1.port.descr must be a string, not a number",
            ),
            (
                json!({"lldp": {"interface": {"eno1": {"chassis": {"sw1": 1}}}}}),
                "lldp.lldp.interface.eno1.chassis.sw1 must be an object, not a number",
            ),
        ] {
            let err = lldp_neighbors(&v).unwrap_err();
            assert!(err.contains(needle), "{v} -> {err}");
        }
    }
}
