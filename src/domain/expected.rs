//! Expected machines: what an operator imported before the machine was ever seen. The
//! imported values win over the facts a machine reports about itself, because the operator
//! (not the machine) decides its hostname, address and BMC.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    /// Wait for the machine to be noticed and to report; then propose it with these values.
    #[default]
    Expected,
    /// Propose each row right away from the imported values; facts arrive later as an update.
    Propose,
}

impl ImportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::Expected => "expected",
            ImportMode::Propose => "propose",
        }
    }
}

impl fmt::Display for ImportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImportMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "expected" | "" => Ok(ImportMode::Expected),
            "propose" | "propose-now" | "propose_now" => Ok(ImportMode::Propose),
            other => Err(format!("unknown import mode {other:?}: expected or propose")),
        }
    }
}

/// One imported row, already validated: every string here is safe to render as a scalar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// The import batch's id and name, and the row's line in the file (the header is line 1).
    pub batch_id: i64,
    pub batch: String,
    pub row: u32,
    pub mode: ImportMode,
    /// The serial the machine must report to match this row exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub hostname: Option<String>,
    pub ip: Option<String>,
    pub netmask: Option<String>,
    pub gateway: Option<String>,
    #[serde(default)]
    pub nameservers: Vec<String>,
    pub bmc_address: Option<String>,
    /// The name of the Kubernetes Secret holding the BMC's credentials (never the password:
    /// git must not hold secrets).
    pub bmc_secret: Option<String>,
    pub workflow: Option<String>,
    /// Where the machine stands, as the operator wrote it, and as a label value.
    pub location: Option<String>,
    pub location_label: Option<String>,
    /// The rack and the rack unit it stands in (`rack`, `u` columns): for name patterns
    /// such as `{{ location.rack }}-u{{ location.u }}`.
    #[serde(default)]
    pub rack: Option<String>,
    #[serde(default)]
    pub u: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Expected {
    /// Whether `facts` are the machine this row describes, exactly: reported (not just
    /// imported), and with the row's serial where the row gives one.
    pub fn matches(&self, facts: &super::Facts) -> bool {
        if facts.is_empty() {
            return false;
        }
        match &self.serial {
            Some(serial) => facts.serial.as_deref() == Some(serial.as_str()),
            None => true,
        }
    }

    /// "expected — <batch>, row N", as the proposal says it.
    pub fn provenance(&self) -> String {
        format!("expected — {}, row {}", self.batch, self.row)
    }
}
