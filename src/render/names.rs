//! Kubernetes object names (DNS-1123 labels) derived from untrusted facts.

use crate::domain::Mac;

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
