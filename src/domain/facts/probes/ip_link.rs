//! `ip -j [-d] link`: link state of the NICs lshw listed, and the Ethernet NICs it missed.

use serde_json::Value;

use super::{kind, string};
use crate::domain::facts::{Facts, MAX_ITEMS, Nic, clean};
use crate::domain::mac::Mac;

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
            crate::domain::facts::MAX_FACT_CHARS
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
}
