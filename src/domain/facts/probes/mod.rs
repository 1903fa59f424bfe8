//! What a discovery script reads besides lshw, each in the shape its tool prints:
//!
//! - `ip -j [-d] link` → link state of the NICs lshw listed, and the Ethernet NICs it missed;
//! - `dmidecode -s <keyword>` answers, as `{"system-serial-number": "…", …}` → the DMI
//!   identity (vendor, product, serial, UUID) where lshw saw none or a placeholder;
//! - `lldpctl -f json` (lldpd; `-f json0` too) → the switch ports the machine is cabled to.
//!
//! As untrusted as the rest of a report: every string goes through [`clean`](super::clean), every list is
//! capped at [`MAX_ITEMS`](super::MAX_ITEMS), and a value of the wrong type is an error naming the field
//! (`ip_link[2].flags must be an array`), so a broken script is told what it sent wrong.

use serde_json::{Map, Value};

mod dmidecode;
mod ip_link;
mod lldp;

pub use dmidecode::{DMI_KEYWORDS, apply_dmidecode};
pub use ip_link::apply_ip_link;
pub use lldp::lldp_neighbors;

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
