//! The MAC address: Tinkerbell's key for a machine.
//!
//! Smee and tink-server compare MACs as exact strings in lower-case colon form, so every
//! MAC that enters Registrar is normalised here, once, and nothing else formats one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A unicast, non-zero 48-bit hardware address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("{0:?} is not a MAC address (expected six hex pairs such as aa:bb:cc:dd:ee:ff)")]
    Syntax(String),
    #[error("{0} is a multicast or broadcast address, not a machine's NIC")]
    Multicast(String),
    #[error("00:00:00:00:00:00 does not identify a machine")]
    Zero,
}

impl Mac {
    pub fn from_bytes(bytes: [u8; 6]) -> Result<Self, MacError> {
        let mac = Mac(bytes);
        if bytes == [0; 6] {
            return Err(MacError::Zero);
        }
        // The group bit covers broadcast (ff:ff:…) as well.
        if bytes[0] & 0x01 == 1 {
            return Err(MacError::Multicast(mac.to_string()));
        }
        Ok(mac)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// `aa-bb-cc-dd-ee-ff`: legal in git refs, label values and object names, where `:` is not.
    pub fn dashed(&self) -> String {
        self.to_string().replace(':', "-")
    }

    /// Parses the forms operators and tools use: `aa:bb:..`, `AA-BB-..`, `aabb.ccdd.eeff`
    /// (Cisco), and twelve bare hex digits.
    pub fn parse(input: &str) -> Result<Self, MacError> {
        let s = input.trim();
        let hex: String = match s.len() {
            17 => {
                let sep = s.as_bytes()[2];
                if sep != b':' && sep != b'-' {
                    return Err(MacError::Syntax(input.to_string()));
                }
                let parts: Vec<&str> = s.split(sep as char).collect();
                if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                    return Err(MacError::Syntax(input.to_string()));
                }
                parts.concat()
            }
            14 => {
                let parts: Vec<&str> = s.split('.').collect();
                if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
                    return Err(MacError::Syntax(input.to_string()));
                }
                parts.concat()
            }
            12 => s.to_string(),
            _ => return Err(MacError::Syntax(truncate(input))),
        };
        let mut bytes = [0u8; 6];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = hex
                .get(2 * i..2 * i + 2)
                .ok_or_else(|| MacError::Syntax(input.to_string()))?;
            if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacError::Syntax(input.to_string()));
            }
            *byte = u8::from_str_radix(pair, 16).map_err(|_| MacError::Syntax(input.to_string()))?;
        }
        Mac::from_bytes(bytes)
    }
}

/// Error messages echo the input; keep an attacker's megabyte out of them.
fn truncate(input: &str) -> String {
    input.chars().take(40).collect()
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mac::parse(s)
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mac::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_common_forms_and_stores_lower_colon() {
        for input in [
            "3c:ec:ef:4c:4f:54",
            "3C-EC-EF-4C-4F-54",
            "3cec.ef4c.4f54",
            "3CECEF4C4F54",
            " 3c:EC:ef:4c:4f:54\n",
        ] {
            assert_eq!(Mac::parse(input).unwrap().to_string(), "3c:ec:ef:4c:4f:54", "{input}");
        }
        assert_eq!(Mac::parse("3c:ec:ef:4c:4f:54").unwrap().dashed(), "3c-ec-ef-4c-4f-54");
    }

    #[test]
    fn rejects_what_is_no_machine() {
        assert_eq!(Mac::parse("00:00:00:00:00:00"), Err(MacError::Zero));
        assert!(matches!(Mac::parse("ff:ff:ff:ff:ff:ff"), Err(MacError::Multicast(_))));
        assert!(matches!(Mac::parse("01:00:5e:00:00:01"), Err(MacError::Multicast(_))));
        for bad in [
            "",
            "3c:ec:ef:4c:4f",
            "3c:ec-ef:4c:4f:54",
            "zz:ec:ef:4c:4f:54",
            "3c:ec:ef:4c:4f:54:00",
            "+c:ec:ef:4c:4f:54",
            "3cec.ef4c.4f5g",
        ] {
            assert!(matches!(Mac::parse(bad), Err(MacError::Syntax(_))), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_unicast_round_trips(bytes in any::<[u8; 6]>()) {
            let mut bytes = bytes;
            bytes[0] &= 0xfe;
            prop_assume!(bytes != [0; 6]);
            let mac = Mac::from_bytes(bytes).unwrap();
            prop_assert_eq!(Mac::parse(&mac.to_string()).unwrap(), mac);
            prop_assert_eq!(Mac::parse(&mac.dashed().to_uppercase()).unwrap(), mac);
        }

        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = Mac::parse(&s);
        }
    }
}
