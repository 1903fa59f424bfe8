//! Hardware reports posted by a discovery OS, in the shapes real scripts send:
//!
//! - `{"mac": "...", "specs": <lshw -json>, "timestamp": "..."}`: the simplest discovery
//!   script (also `"lshw"` instead of `"specs"`);
//! - `{"mac": "...", "attributes": <Tink Agent attributes>}`;
//! - a bare `lshw -json` or attributes document, with the MAC in `X-Registrar-Mac` or `?mac=`.
//!
//! Optional fields `hostname`, `arch`, `uefi` and `bmc_address` state what lshw cannot see.
//!
//! Optional fields with what a discovery script probed besides (each in its tool's own
//! shape, absent or `null` when the tool is missing; `deploy/discovery/registrar-discover.sh`
//! sends them all; see `domain::facts::probes` for how each is read):
//!
//! - `ip_link`: the array `ip -j link` (or `ip -j -d link`) prints → the NICs' link state, and
//!   Ethernet NICs lshw missed (loopback and virtual devices are skipped);
//! - `dmidecode`: an object of `dmidecode -s <keyword>` answers, e.g.
//!   `{"system-manufacturer": "…", "system-product-name": "…", "system-serial-number": "…",
//!   "system-uuid": "…", "baseboard-serial-number": "…", "chassis-serial-number": "…"}` →
//!   vendor, product, serial and UUID where lshw saw none or a placeholder;
//! - `lldp`: what `lldpctl -f json` (or `-f json0`) prints → `facts.lldp`, the switch and port
//!   each interface is cabled to.
//!
//! They are applied in that order, after lshw or the attributes and before the stated fields
//! above. A value of the wrong type is refused (422) with the field named.

use serde_json::Value;

use crate::domain::facts::probes::kind;
use crate::domain::facts::{self, Bmc, Facts};
use crate::domain::{Mac, MacError};

#[derive(Debug, Clone)]
pub struct Report {
    pub mac: Mac,
    pub facts: Facts,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReportError {
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<MacError> for ReportError {
    fn from(e: MacError) -> Self {
        ReportError::Invalid(format!("mac: {e}"))
    }
}

fn invalid(msg: impl Into<String>) -> ReportError {
    ReportError::Invalid(msg.into())
}

fn looks_like_lshw(v: &Value) -> bool {
    v.is_array() || v.get("class").is_some() || v.get("children").is_some()
}

fn looks_like_attributes(v: &Value) -> bool {
    [
        "cpu",
        "memory",
        "blockDevices",
        "networkInterfaces",
        "pciDevices",
        "product",
        "baseboard",
        "chassis",
    ]
    .iter()
    .any(|k| v.get(*k).is_some())
}

/// Parses and normalises a report. `header_mac` is `X-Registrar-Mac` or `?mac=`.
pub fn parse(body: &[u8], header_mac: Option<&str>) -> Result<Report, ReportError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| ReportError::Malformed(e.to_string()))?;
    let header_mac = header_mac.map(Mac::parse).transpose()?;

    let (body_mac, mut facts, extras) = match &doc {
        Value::Object(map)
            if map.contains_key("mac")
                || map.contains_key("specs")
                || map.contains_key("lshw")
                || map.contains_key("attributes") =>
        {
            let mac = match map.get("mac") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Mac::parse(s)?),
                Some(other) => return Err(invalid(format!("mac must be a string, not {}", kind(other)))),
            };
            let facts = match (map.get("specs").or_else(|| map.get("lshw")), map.get("attributes")) {
                (Some(_), Some(_)) => return Err(invalid("send either specs (lshw -json) or attributes, not both")),
                (Some(v @ (Value::Object(_) | Value::Array(_))), None) => facts::from_lshw(v),
                (Some(other), None) => {
                    return Err(invalid(format!(
                        "specs must be the object or array that lshw -json prints, not {}",
                        kind(other)
                    )));
                }
                (None, Some(v @ Value::Object(_))) => facts::from_agent_attributes(v),
                (None, Some(other)) => {
                    return Err(invalid(format!("attributes must be an object, not {}", kind(other))));
                }
                (None, None) => {
                    return Err(invalid(
                        "the report has no facts: send specs (lshw -json) or attributes",
                    ));
                }
            };
            if let Some(t) = map.get("timestamp")
                && !t.is_string()
                && !t.is_null()
            {
                return Err(invalid(format!("timestamp must be a string, not {}", kind(t))));
            }
            (mac, facts, Some(map))
        }
        v if looks_like_lshw(v) => (None, facts::from_lshw(v), None),
        v @ Value::Object(_) if looks_like_attributes(v) => (None, facts::from_agent_attributes(v), None),
        other => {
            return Err(invalid(format!(
                "expected a report object ({{\"mac\": ..., \"specs\": <lshw -json>}}), lshw -json output or Tink Agent attributes, not {}",
                kind(other)
            )));
        }
    };

    let mac = match (body_mac, header_mac) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(format!("the body says MAC {a} but X-Registrar-Mac says {b}")));
        }
        (Some(m), _) | (None, Some(m)) => m,
        (None, None) => {
            return Err(invalid(
                "no MAC: put it in the body's \"mac\" field or the X-Registrar-Mac header",
            ));
        }
    };

    if let Some(map) = extras {
        probed_facts(map, &mut facts)?;
        facts.overlay(stated_facts(map)?);
    }
    Ok(Report { mac, facts })
}

/// What the script probed besides lshw: `ip_link`, `dmidecode`, `lldp` (see the module doc).
fn probed_facts(map: &serde_json::Map<String, Value>, f: &mut Facts) -> Result<(), ReportError> {
    let present = |k: &str| map.get(k).filter(|v| !v.is_null());
    if let Some(v) = present("ip_link") {
        facts::apply_ip_link(f, v).map_err(invalid)?;
    }
    if let Some(v) = present("dmidecode") {
        facts::apply_dmidecode(f, v).map_err(invalid)?;
    }
    if let Some(v) = present("lldp") {
        f.lldp = facts::lldp_neighbors(v).map_err(invalid)?;
    }
    Ok(())
}

/// Facts the report states outright, which override what was read from lshw.
fn stated_facts(map: &serde_json::Map<String, Value>) -> Result<Facts, ReportError> {
    let mut f = Facts::default();
    let text = |k: &str| -> Result<Option<String>, ReportError> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(facts::clean(s)),
            Some(other) => Err(invalid(format!("{k} must be a string, not {}", kind(other)))),
        }
    };
    f.hostname = text("hostname")?;
    f.arch = match text("arch")?.as_deref() {
        None => None,
        Some("x86_64" | "amd64" | "x86-64") => Some("x86_64".into()),
        Some("aarch64" | "arm64") => Some("aarch64".into()),
        Some(other) => return Err(invalid(format!("arch {other:?} is not x86_64 or aarch64"))),
    };
    f.uefi = match map.get("uefi") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(invalid(format!("uefi must be true or false, not {}", kind(other)))),
    };
    f.bmc = match text("bmc_address")? {
        None => None,
        Some(a) if a.parse::<std::net::IpAddr>().is_ok() || is_hostname(&a) => Some(Bmc { address: a }),
        Some(a) => {
            return Err(invalid(format!(
                "bmc_address {a:?} is neither an IP address nor a host name"
            )));
        }
    };
    Ok(f)
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.split('.')
            .all(|p| !p.is_empty() && p.len() <= 63 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simplest_discovery_script() {
        let body = br#"{"mac": "AA:BB:CC:DD:EE:01", "specs": {"id": "x", "class": "system", "serial": "S1"}, "timestamp": "2026-11-25T10:00:00+00:00"}"#;
        let r = parse(body, None).unwrap();
        assert_eq!(r.mac.to_string(), "aa:bb:cc:dd:ee:01");
        assert_eq!(r.facts.serial.as_deref(), Some("S1"));
    }

    #[test]
    fn bare_lshw_with_header_mac_and_agent_attributes() {
        let r = parse(
            br#"[{"class": "system", "vendor": "Dell Inc."}]"#,
            Some("aa-bb-cc-dd-ee-02"),
        )
        .unwrap();
        assert_eq!(r.facts.vendor.as_deref(), Some("Dell Inc."));
        let r = parse(
            br#"{"mac": "aa:bb:cc:dd:ee:03", "attributes": {"memory": {"total": "64GB"}}}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.facts.memory_bytes, Some(64_000_000_000));
    }

    #[test]
    fn stated_facts_override_and_are_checked() {
        let r = parse(
            br#"{"mac": "aa:bb:cc:dd:ee:04", "specs": {}, "arch": "arm64", "uefi": false, "bmc_address": "10.0.0.9"}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.facts.arch.as_deref(), Some("aarch64"));
        assert_eq!(r.facts.uefi, Some(false));
        assert_eq!(r.facts.bmc.unwrap().address, "10.0.0.9");
        assert!(
            parse(
                br#"{"mac": "aa:bb:cc:dd:ee:04", "specs": {}, "bmc_address": "x\ny"}"#,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn probed_facts_fill_what_lshw_missed() {
        let body = serde_json::json!({
            "mac": "ac:1f:6b:dc:19:c2",
            "specs": {"class": "system", "serial": "To Be Filled By O.E.M.", "children": [
                {"class": "network", "logicalname": "eno1", "serial": "ac:1f:6b:dc:19:c2", "configuration": {"link": "no"}}]},
            "ip_link": [
                {"ifname": "eno1", "flags": ["UP", "LOWER_UP"], "operstate": "UP", "link_type": "ether", "address": "ac:1f:6b:dc:19:c2"},
                {"ifname": "eno2", "flags": ["UP", "NO-CARRIER"], "operstate": "DOWN", "link_type": "ether", "address": "ac:1f:6b:dc:19:c3"},
                {"ifname": "docker0", "flags": ["UP"], "operstate": "DOWN", "link_type": "ether", "address": "02:42:ac:11:00:01"}],
            "dmidecode": {"system-serial-number": "A401031X0502795", "system-uuid": null},
            "lldp": {"lldp": {"interface": {"eno1": {"chassis": {"leaf-01": {"id": {"type": "mac", "value": "44:4c:a8:00:00:01"}}}, "port": {"id": {"type": "ifname", "value": "Ethernet12"}}}}}},
            "hostname": "stated-wins"
        });
        let r = parse(body.to_string().as_bytes(), None).unwrap();
        assert_eq!(r.facts.serial.as_deref(), Some("A401031X0502795"));
        assert_eq!(
            r.facts
                .nics
                .iter()
                .map(|n| (n.name.as_deref().unwrap(), n.link))
                .collect::<Vec<_>>(),
            vec![("eno1", Some(true)), ("eno2", Some(false))]
        );
        assert_eq!(r.facts.lldp.len(), 1);
        assert_eq!(
            (r.facts.lldp[0].switch.as_deref(), r.facts.lldp[0].port.as_deref()),
            (Some("leaf-01"), Some("Ethernet12"))
        );
        assert_eq!(r.facts.hostname.as_deref(), Some("stated-wins"));
        // Null is absent; the old report shape is unchanged.
        let r = parse(
            br#"{"mac": "aa:bb:cc:dd:ee:07", "specs": {}, "ip_link": null, "dmidecode": null, "lldp": null}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.facts, Facts::default());
        // They add to agent attributes too.
        let r = parse(br#"{"mac": "aa:bb:cc:dd:ee:08", "attributes": {"product": {}}, "dmidecode": {"system-serial-number": "AG1"}}"#, None).unwrap();
        assert_eq!(r.facts.serial.as_deref(), Some("AG1"));
    }

    #[test]
    fn probed_facts_of_the_wrong_type_are_refused_by_name() {
        for (extra, needle) in [
            (r#""ip_link": {"eno1": "UP"}"#, "ip_link must be the array"),
            (
                r#""ip_link": [{"ifname": ["eno1"]}]"#,
                "ip_link[0].ifname must be a string",
            ),
            (r#""dmidecode": "A401031X0502795""#, "dmidecode must be an object"),
            (
                r#""dmidecode": {"system-serial-number": 42}"#,
                "dmidecode.system-serial-number must be a string",
            ),
            (
                r#""lldp": [1]"#,
                "lldp must be the object that `lldpctl -f json` prints",
            ),
            (
                r#""lldp": {"lldp": {"interface": {"eno1": {"port": 7}}}}"#,
                "lldp.lldp.interface.eno1.port must be an object",
            ),
        ] {
            let body = format!(r#"{{"mac": "aa:bb:cc:dd:ee:09", "specs": {{}}, {extra}}}"#);
            match parse(body.as_bytes(), None) {
                Err(ReportError::Invalid(msg)) => assert!(msg.contains(needle), "{extra} -> {msg}"),
                other => panic!("{extra} -> {other:?}"),
            }
        }
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(parse(b"{not json", None), Err(ReportError::Malformed(_))));
        let cases: &[(&[u8], &str)] = &[
            (br#"{"mac": 12, "specs": {}}"#, "mac must be a string"),
            (br#"{"mac": "nope", "specs": {}}"#, "not a MAC"),
            (br#"{"mac": "ff:ff:ff:ff:ff:ff", "specs": {}}"#, "broadcast"),
            (br#"{"mac": "aa:bb:cc:dd:ee:05", "specs": "lshw"}"#, "specs must be"),
            (br#"{"mac": "aa:bb:cc:dd:ee:05"}"#, "no facts"),
            (br#"{"specs": {}}"#, "no MAC"),
            (br#""hello""#, "expected a report object"),
            (
                br#"{"mac": "aa:bb:cc:dd:ee:05", "specs": {}, "uefi": "yes"}"#,
                "uefi must be",
            ),
        ];
        for (body, needle) in cases {
            let err = parse(body, None).unwrap_err().to_string();
            assert!(err.contains(needle), "{} -> {err}", String::from_utf8_lossy(body));
        }
        assert!(
            parse(
                br#"{"mac": "aa:bb:cc:dd:ee:05", "specs": {}}"#,
                Some("aa:bb:cc:dd:ee:06")
            )
            .unwrap_err()
            .to_string()
            .contains("X-Registrar-Mac")
        );
    }
}
