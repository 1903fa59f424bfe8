//! Hardware reports posted by a discovery OS, in the shapes real scripts send:
//!
//! - `{"mac": "...", "specs": <lshw -json>, "timestamp": "..."}`: the simplest discovery
//!   script (also `"lshw"` instead of `"specs"`);
//! - `{"mac": "...", "attributes": <Tink Agent attributes>}`;
//! - a bare `lshw -json` or attributes document, with the MAC in `X-Registrar-Mac` or `?mac=`.
//!
//! Optional fields `hostname`, `arch`, `uefi` and `bmc_address` state what lshw cannot see.

use serde_json::Value;

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
    ["cpu", "memory", "blockDevices", "networkInterfaces", "pciDevices", "product", "baseboard", "chassis"]
        .iter()
        .any(|k| v.get(*k).is_some())
}

/// Parses and normalises a report. `header_mac` is `X-Registrar-Mac` or `?mac=`.
pub fn parse(body: &[u8], header_mac: Option<&str>) -> Result<Report, ReportError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| ReportError::Malformed(e.to_string()))?;
    let header_mac = header_mac.map(Mac::parse).transpose()?;

    let (body_mac, mut facts, extras) = match &doc {
        Value::Object(map) if map.contains_key("mac") || map.contains_key("specs") || map.contains_key("lshw") || map.contains_key("attributes") => {
            let mac = match map.get("mac") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Mac::parse(s)?),
                Some(other) => return Err(invalid(format!("mac must be a string, not {}", kind(other)))),
            };
            let facts = match (map.get("specs").or_else(|| map.get("lshw")), map.get("attributes")) {
                (Some(_), Some(_)) => return Err(invalid("send either specs (lshw -json) or attributes, not both")),
                (Some(v @ (Value::Object(_) | Value::Array(_))), None) => facts::from_lshw(v),
                (Some(other), None) => return Err(invalid(format!("specs must be the object or array that lshw -json prints, not {}", kind(other)))),
                (None, Some(v @ Value::Object(_))) => facts::from_agent_attributes(v),
                (None, Some(other)) => return Err(invalid(format!("attributes must be an object, not {}", kind(other)))),
                (None, None) => return Err(invalid("the report has no facts: send specs (lshw -json) or attributes")),
            };
            if let Some(t) = map.get("timestamp") {
                if !t.is_string() && !t.is_null() {
                    return Err(invalid(format!("timestamp must be a string, not {}", kind(t))));
                }
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
        (Some(a), Some(b)) if a != b => return Err(invalid(format!("the body says MAC {a} but X-Registrar-Mac says {b}"))),
        (Some(m), _) | (None, Some(m)) => m,
        (None, None) => return Err(invalid("no MAC: put it in the body's \"mac\" field or the X-Registrar-Mac header")),
    };

    if let Some(map) = extras {
        facts.overlay(stated_facts(map)?);
    }
    Ok(Report { mac, facts })
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
        Some(a) => return Err(invalid(format!("bmc_address {a:?} is neither an IP address nor a host name"))),
    };
    Ok(f)
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|p| !p.is_empty() && p.len() <= 63 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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
        let r = parse(br#"[{"class": "system", "vendor": "Dell Inc."}]"#, Some("aa-bb-cc-dd-ee-02")).unwrap();
        assert_eq!(r.facts.vendor.as_deref(), Some("Dell Inc."));
        let r = parse(br#"{"mac": "aa:bb:cc:dd:ee:03", "attributes": {"memory": {"total": "64GB"}}}"#, None).unwrap();
        assert_eq!(r.facts.memory_bytes, Some(64_000_000_000));
    }

    #[test]
    fn stated_facts_override_and_are_checked() {
        let r = parse(br#"{"mac": "aa:bb:cc:dd:ee:04", "specs": {}, "arch": "arm64", "uefi": false, "bmc_address": "10.0.0.9"}"#, None).unwrap();
        assert_eq!(r.facts.arch.as_deref(), Some("aarch64"));
        assert_eq!(r.facts.uefi, Some(false));
        assert_eq!(r.facts.bmc.unwrap().address, "10.0.0.9");
        assert!(parse(br#"{"mac": "aa:bb:cc:dd:ee:04", "specs": {}, "bmc_address": "x\ny"}"#, None).is_err());
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
            (br#"{"mac": "aa:bb:cc:dd:ee:05", "specs": {}, "uefi": "yes"}"#, "uefi must be"),
        ];
        for (body, needle) in cases {
            let err = parse(body, None).unwrap_err().to_string();
            assert!(err.contains(needle), "{} -> {err}", String::from_utf8_lossy(body));
        }
        assert!(parse(br#"{"mac": "aa:bb:cc:dd:ee:05", "specs": {}}"#, Some("aa:bb:cc:dd:ee:06")).unwrap_err().to_string().contains("X-Registrar-Mac"));
    }
}
