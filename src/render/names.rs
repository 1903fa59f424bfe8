//! Kubernetes object names (DNS-1123 labels) derived from untrusted facts, and the name
//! pattern (`name` in rules.yaml) that makes them: `{{ facts.serial | lower }}`,
//! `{{ location.rack }}-u{{ location.u }}`, `node-{{ seq | pad(4) }}`.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use super::{RenderInput, Renderer, strip_nulls, to_jinja};
use crate::domain::Mac;

impl Renderer {
    /// The machine's name: an operator's hostname, else the pattern, else `node-<mac>`.
    /// Whatever the facts say, the result is a DNS-1123 label.
    pub fn name_for(&self, input: &RenderInput) -> String {
        if let Some(name) = input.name {
            return name.to_string();
        }
        if input.force_mac_name {
            return mac_name(input.mac);
        }
        // An operator's hostname names the machine better than any serial number.
        if let Some(short) = input
            .expected
            .and_then(|e| e.hostname.as_deref())
            .and_then(|h| h.split('.').next())
            .and_then(dns1123)
        {
            return short;
        }
        self.name_from_pattern(input).unwrap_or_else(|| mac_name(input.mac))
    }

    /// What the pattern makes of this machine, if anything usable.
    pub fn name_from_pattern(&self, input: &RenderInput) -> Option<String> {
        // The pattern sees the facts leniently: a missing serial renders empty.
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_formatter(|out, state, value| {
            if value.is_none() {
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.add_filter("pad", pad);
        // Unknown facts are left out rather than `none`, so `{{ facts.serial | lower }}` is empty.
        let mut facts = serde_json::to_value(input.facts).unwrap_or_default();
        strip_nulls(&mut facts);
        let mut location = location(input);
        strip_nulls(&mut location);
        let ctx = minijinja::context! {
            facts => to_jinja(facts),
            mac => input.mac.to_string(),
            mac_dashed => input.mac.dashed(),
            location => to_jinja(location),
            expected => input.expected.map(to_jinja),
            seq => input.sequence,
        };
        env.render_str(&self.rules.name, ctx).ok().and_then(|s| dns1123(&s))
    }

    /// Whether the name pattern numbers machines: each is then given a number, once.
    pub fn names_by_sequence(&self) -> bool {
        self.rules.name.contains("seq")
    }
}

/// Where the machine stands, from its import row (location, rack, unit) and from how its
/// DHCP request reached us (relay, switch port): `location` in templates and patterns.
pub fn location(input: &RenderInput) -> Value {
    let relay = input.sighting.and_then(|s| s.relay.as_ref());
    json!({
        "text": input.expected.and_then(|e| e.location.as_deref()),
        "rack": input.expected.and_then(|e| e.rack.as_deref()),
        "u": input.expected.and_then(|e| e.u),
        "relay": relay.map(|r| r.address.as_str()),
        "port": relay.and_then(|r| r.circuit_id.as_deref()),
        "switch": relay.and_then(|r| r.remote_id.as_deref()),
        "seen": input.sighting.and_then(crate::domain::Sighting::location),
    })
}

/// `{{ seq | pad(4) }}` → `0007`: a number (or text) left-padded with zeros.
pub fn pad(value: minijinja::Value, width: Option<usize>) -> String {
    let text = if value.is_undefined() || value.is_none() {
        return String::new();
    } else {
        value.to_string()
    };
    format!("{text:0>width$}", width = width.unwrap_or(4).min(32))
}

pub const MAX_NAME: usize = 63;

/// Lower-cases, maps anything outside `[a-z0-9-]` to `-`, collapses runs, trims, caps at 63.
/// Returns `None` when nothing usable is left, so the caller falls back to the MAC.
pub fn dns1123(raw: &str) -> Option<String> {
    let mut out = String::new();
    for c in raw.trim().chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
        if out.len() >= MAX_NAME {
            break;
        }
    }
    let out = out.trim_end_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

pub fn is_dns1123(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Object names may be dotted subdomains of up to 253 characters.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(|part| !part.is_empty() && is_dns1123(part))
}

/// The name a machine gets when its facts name nothing: stable, unique, valid.
pub fn mac_name(mac: &Mac) -> String {
    format!("node-{}", mac.dashed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(dns1123("A401031X0502795").as_deref(), Some("a401031x0502795"));
        assert_eq!(dns1123("x\nspec: {}").as_deref(), Some("x-spec"));
        assert_eq!(dns1123("{{ 7*7 }}").as_deref(), Some("7-7"));
        assert_eq!(dns1123("---"), None);
        assert_eq!(dns1123(""), None);
        assert_eq!(
            mac_name(&"AA:BB:CC:DD:EE:FF".parse().unwrap()),
            "node-aa-bb-cc-dd-ee-ff"
        );
    }

    proptest! {
        #[test]
        fn always_valid(s in ".{0,200}") {
            if let Some(n) = dns1123(&s) {
                prop_assert!(is_dns1123(&n), "{n:?}");
            }
        }
    }
}
