//! Smee's log lines → "this MAC asked and no Hardware holds it".
//!
//! Three formats (`../shared/docs/tinkerbell-reference.md` §4): the monorepo binary's slog
//! JSON (`level` a string number, `logger: "smee"`), the legacy smee's zap JSON, and old
//! Boots. Key order is not fixed: lines are parsed as JSON, never matched with a regex.
//! Only `proxy`/`auto-proxy` modes log unknown MACs; in `reservation` mode Smee is silent
//! and DHCP snooping is the way to notice machines.

use serde_json::Value;

use crate::domain::Mac;

/// An unknown MAC that Smee reported, and why Registrar believes so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMac {
    pub mac: Mac,
    pub message: String,
}

/// Longest line considered: Smee's lines are a few hundred bytes.
const MAX_LINE: usize = 16 * 1024;

pub fn parse_line(line: &str) -> Option<UnknownMac> {
    let line = line.trim();
    if line.len() > MAX_LINE || !line.starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(line).ok()?;
    let msg = v["msg"].as_str()?;
    let logger = v["logger"].as_str();
    let error = v["error"].as_str().or_else(|| v["err"].as_str()).unwrap_or_default();
    let unknown = match msg {
        // Monorepo (proxy, auto-proxy) and legacy smee (proxy): the same two messages are
        // also used for other errors, so the error text must say the hardware is missing.
        "Ignoring packet" | "No hardware found, proceeding with defaults" => {
            logger.is_none_or(|l| l == "smee")
                && (error.starts_with("hardware not found") || msg.starts_with("No hardware found"))
        }
        // Boots, before 2023.
        "retrieved job is empty" => error.contains("get hardware by mac"),
        _ => false,
    };
    if !unknown {
        return None;
    }
    let mac = Mac::parse(v["mac"].as_str()?).ok()?;
    Some(UnknownMac {
        mac,
        message: msg.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monorepo_proxy_and_auto_proxy_lines() {
        let proxy = r#"{"time":"2026-08-20T10:00:00.1Z","level":"0","caller":"smee/internal/dhcp/handler/proxy/proxy.go:207","msg":"Ignoring packet","logger":"smee","mac":"3c:ec:ef:4c:4f:54","xid":"0x3d454949","interface":"macvlan0","error":"hardware not found: in all namespaces with MAC \"3c:ec:ef:4c:4f:54\", namespace: all namespaces"}"#;
        assert_eq!(parse_line(proxy).unwrap().mac.to_string(), "3c:ec:ef:4c:4f:54");
        let auto = r#"{"logger":"smee","msg":"No hardware found, proceeding with defaults","mac":"3C:EC:EF:4C:4F:55","level":"0","error":"hardware not found: in all namespaces"}"#;
        assert_eq!(parse_line(auto).unwrap().mac.to_string(), "3c:ec:ef:4c:4f:55");
    }

    #[test]
    fn legacy_smee_and_boots() {
        let zap = r#"{"level":"debug","ts":1692525600.1,"caller":"dhcp/handler/proxy/proxy.go:207","msg":"Ignoring packet","mac":"3c:ec:ef:4c:4f:56","xid":"0x1","interface":"eth0","error":"hardware not found"}"#;
        assert_eq!(parse_line(zap).unwrap().mac.to_string(), "3c:ec:ef:4c:4f:56");
        let boots = r#"{"level":"info","msg":"retrieved job is empty","type":"DHCPDISCOVER","mac":"3c:ec:ef:4c:4f:57","err":"discover from dhcp message: get hardware by mac: not found"}"#;
        assert_eq!(parse_line(boots).unwrap().mac.to_string(), "3c:ec:ef:4c:4f:57");
    }

    #[test]
    fn other_errors_and_other_loggers_are_not_unknown_machines() {
        let duplicate = r#"{"logger":"smee","msg":"Ignoring packet","mac":"3c:ec:ef:4c:4f:54","error":"found 2 hardware objects for in all namespaces with MAC \"3c:ec:ef:4c:4f:54\""}"#;
        assert_eq!(parse_line(duplicate), None);
        let other = r#"{"logger":"tink-server","msg":"Ignoring packet","mac":"3c:ec:ef:4c:4f:54","error":"hardware not found"}"#;
        assert_eq!(parse_line(other), None);
        let broken = r#"{"logger":"smee","msg":"error reading from backend","mac":"3c:ec:ef:4c:4f:54","error":"no netboot data"}"#;
        assert_eq!(parse_line(broken), None);
        for junk in [
            "",
            "not json",
            "{",
            "[1,2]",
            r#"{"msg":"Ignoring packet","mac":"zz","error":"hardware not found"}"#,
        ] {
            assert_eq!(parse_line(junk), None, "{junk:?}");
        }
        assert_eq!(parse_line(&format!("{{\"msg\":\"{}\"}}", "x".repeat(20_000))), None);
    }
}
