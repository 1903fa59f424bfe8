//! One row's fields, each checked against the grammar Kubernetes or the network gives it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::ParsedRow;
use crate::domain::facts::clean;
use crate::domain::{Expected, Mac};

/// Validates one row's fields. Every value that reaches a manifest is checked against the
/// grammar Kubernetes or the network gives it, so no value can carry structure.
pub(super) fn row_from(line: u32, field: impl Fn(&str) -> Option<String>, errors: &mut Vec<String>) -> ParsedRow {
    let raw_mac = field("mac").unwrap_or_default();
    let mac = if raw_mac.is_empty() {
        errors.push("mac is empty".into());
        None
    } else {
        match Mac::parse(&raw_mac) {
            Ok(m) => Some(m),
            Err(e) => {
                // The parser's message quotes the value; a huge one is only counted.
                errors.push(if raw_mac.chars().count() <= 64 {
                    format!("mac: {e}")
                } else {
                    format!("mac: {} characters are not a MAC address", raw_mac.chars().count())
                });
                None
            }
        }
    };
    let mut v = Expected {
        row: line,
        ..Expected::default()
    };

    // The serial the machine must report: with `discovery.auto_approve: expected`, only a
    // machine whose report matches its row exactly is approved without a person.
    if let Some(s) = field("serial") {
        match clean(&s) {
            Some(serial) if serial.chars().count() <= 64 => v.serial = Some(serial),
            _ => errors.push(format!(
                "serial {:?} is not a serial number (a placeholder, or too long)",
                shorten(&s)
            )),
        }
    }
    if let Some(h) = field("hostname") {
        let lower = h.to_ascii_lowercase();
        if is_hostname(&lower) {
            v.hostname = Some(lower)
        } else {
            errors.push(format!(
                "hostname {:?} is not a host name (letters, digits, dashes and dots)",
                shorten(&h)
            ))
        }
    }
    let ip = field("ip").map(|s| (s.parse::<IpAddr>(), s));
    match ip {
        Some((Ok(a), _)) => v.ip = Some(a.to_string()),
        Some((Err(_), s)) => errors.push(format!("ip {:?} is not an IP address", shorten(&s))),
        None => {}
    }
    if let Some(m) = field("netmask") {
        match netmask(&m) {
            Some(n) => v.netmask = Some(n),
            None => errors.push(format!(
                "netmask {:?} is neither a dotted mask (255.255.255.0) nor a prefix length (24)",
                shorten(&m)
            )),
        }
    }
    if let Some(g) = field("gateway") {
        match g.parse::<IpAddr>() {
            Ok(a) => v.gateway = Some(a.to_string()),
            Err(_) => errors.push(format!("gateway {:?} is not an IP address", shorten(&g))),
        }
    }
    if let Some(ns) = field("nameservers") {
        for part in split_list(&ns) {
            match part.parse::<IpAddr>() {
                Ok(a) if v.nameservers.len() < 8 => v.nameservers.push(a.to_string()),
                Ok(_) => {
                    errors.push("nameservers: at most 8".into());
                    break;
                }
                Err(_) => errors.push(format!("nameservers: {:?} is not an IP address", shorten(part))),
            }
        }
    }
    if (v.netmask.is_some() || v.gateway.is_some()) && v.ip.is_none() {
        errors.push("netmask and gateway need an ip".into());
    }
    // One address family per row: Tinkerbell's DHCP hands out one.
    if let Some(ip) = v.ip.as_deref().and_then(|a| a.parse::<IpAddr>().ok()) {
        if v.netmask.is_some() && ip.is_ipv6() {
            errors.push("netmask is for IPv4; an IPv6 ip takes no netmask".into());
        }
        let family = |a: &str| a.parse::<IpAddr>().map(|x| x.is_ipv4() == ip.is_ipv4()).unwrap_or(true);
        if v.gateway.as_deref().is_some_and(|g| !family(g)) {
            errors.push("gateway and ip are of different address families".into());
        }
        if v.nameservers.iter().any(|n| !family(n)) {
            errors.push("nameservers and ip are of different address families".into());
        }
    }
    if let Some(b) = field("bmc_address") {
        if b.parse::<IpAddr>().is_ok() || is_hostname(&b.to_ascii_lowercase()) {
            v.bmc_address = Some(b)
        } else {
            errors.push(format!(
                "bmc_address {:?} is neither an IP address nor a host name",
                shorten(&b)
            ))
        }
    }
    if let Some(s) = field("bmc_secret") {
        if crate::render::names::is_dns1123_subdomain(&s) {
            v.bmc_secret = Some(s);
        } else {
            errors.push(format!("bmc_secret {:?} must name a Kubernetes Secret (lower-case letters, digits, dashes, dots), not hold a password", shorten(&s)));
        }
    }
    if let Some(w) = field("workflow") {
        if !w.is_empty()
            && w.len() <= 63
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            v.workflow = Some(w);
        } else {
            errors.push(format!("workflow {:?} is not a workflow name", shorten(&w)));
        }
    }
    if let Some(l) = field("location")
        && let Some(text) = clean(&l)
    {
        match label_value(&text) {
            Some(label) => {
                v.location = Some(text);
                v.location_label = Some(label);
            }
            None => errors.push(format!(
                "location {:?} has nothing usable as a label value",
                shorten(&l)
            )),
        }
    }
    if let Some(r) = field("rack") {
        // A rack becomes part of a host name: only what a DNS label may hold.
        match crate::render::names::dns1123(&r).filter(|d| d.len() <= 32 && *d == r.to_ascii_lowercase()) {
            Some(rack) => v.rack = Some(rack),
            None => errors.push(format!(
                "rack {:?} is not usable in a host name (letters, digits and dashes, at most 32)",
                shorten(&r)
            )),
        }
    }
    if let Some(u) = field("u") {
        match u.trim_start_matches(['u', 'U']).parse::<u32>() {
            Ok(n) if (1..=99).contains(&n) => v.u = Some(n),
            _ => errors.push(format!("u {:?} is not a rack unit (1 to 99)", shorten(&u))),
        }
    }
    if let Some(ls) = field("labels") {
        let mut labels = BTreeMap::new();
        for pair in split_list(&ls) {
            match pair.split_once('=') {
                Some((k, val)) if is_label_key(k) && (val.is_empty() || is_label_value(val)) => {
                    if k.starts_with("registrar.dev/") || k.starts_with("tinkerbell.org/") {
                        errors.push(format!("labels: {k:?} is reserved for Registrar and Tinkerbell"));
                    } else {
                        labels.insert(k.to_string(), val.to_string());
                    }
                }
                _ => errors.push(format!(
                    "labels: {:?} is not key=value with a Kubernetes label key and value",
                    shorten(pair)
                )),
            }
        }
        if labels.len() > 16 {
            errors.push("labels: at most 16".into());
        } else {
            v.labels = labels;
        }
    }
    ParsedRow {
        line,
        raw_mac: shorten(&raw_mac),
        mac,
        values: v,
        errors: std::mem::take(errors),
    }
}

fn shorten(s: &str) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if s.chars().count() > 64 {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}

/// Lists inside one field: nameservers or labels, separated by spaces, `|`, `,` or `;`.
fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c.is_whitespace() || matches!(c, '|' | ',' | ';'))
        .filter(|p| !p.is_empty())
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && !p.starts_with('-')
                && !p.ends_with('-')
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn netmask(s: &str) -> Option<String> {
    let prefix = s.strip_prefix('/').unwrap_or(s);
    if let Ok(n) = prefix.parse::<u8>() {
        if n <= 32 {
            let bits = if n == 0 { 0 } else { u32::MAX << (32 - n) };
            return Some(Ipv4Addr::from(bits).to_string());
        }
        return None;
    }
    let a: Ipv4Addr = s.parse().ok()?;
    let bits = u32::from(a);
    // A mask is ones, then zeros.
    (bits.leading_ones() + bits.trailing_zeros() == 32).then(|| a.to_string())
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(|p| p.len() <= 253 && crate::render::names::is_dns1123_subdomain(p)) && is_label_value(name)
}

/// A free-text location as a label value: "DC1 / Rack 12" → "DC1-Rack-12".
fn label_value(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(63)
        .collect();
    let out = out.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks() {
        assert_eq!(netmask("/20").as_deref(), Some("255.255.240.0"));
        assert_eq!(netmask("255.255.0.0").as_deref(), Some("255.255.0.0"));
        assert_eq!(netmask("255.0.255.0"), None);
        assert_eq!(netmask("33"), None);
    }
}
