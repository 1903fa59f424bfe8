//! `lldpctl -f json` (or `-f json0`): the switch ports the machine is cabled to.

use serde_json::{Map, Value};

use super::{kind, string};
use crate::domain::facts::{LldpNeighbor, MAX_ITEMS, clean};

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
            crate::domain::facts::MAX_FACT_CHARS
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
