//! `rules.yaml`: which templates and values a machine gets, chosen from its facts.
//! Rules are tried in order; the first whose `when` holds wins; `defaults` fill the rest.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// A template over the facts that names the Hardware; empty ⇒ `node-<mac>`.
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub defaults: Choice,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

fn default_name() -> String {
    "{{ facts.serial }}".into()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// The Hardware template, relative to `hardware-templates/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// A provisioning workflow: `workflows/<name>.yaml.j2` must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// A minijinja expression over `facts`, `mac` and `source`, e.g. `facts.gpus | length > 0`.
    pub when: String,
    #[serde(flatten)]
    pub choice: Choice,
}

/// The outcome of the rules for one machine.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The rule that matched, or `default`.
    pub rule: String,
    pub hardware: String,
    pub workflow: Option<String>,
    pub values: BTreeMap<String, Value>,
}

pub fn load(path: &Path) -> anyhow::Result<RulesFile> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<RulesFile, String> {
    // yaml_serde's messages carry the line and column.
    yaml_serde::from_str(text).map_err(|e| e.to_string())
}

impl RulesFile {
    pub fn decide(&self, matched: Option<&Rule>) -> Decision {
        let mut values = self.defaults.values.clone();
        let (rule, hardware, workflow) = match matched {
            Some(r) => {
                values.extend(r.choice.values.clone());
                (
                    r.name.clone(),
                    r.choice.hardware.clone().or_else(|| self.defaults.hardware.clone()),
                    r.choice.workflow.clone().or_else(|| self.defaults.workflow.clone()),
                )
            }
            None => (
                "default".to_string(),
                self.defaults.hardware.clone(),
                self.defaults.workflow.clone(),
            ),
        };
        Decision {
            rule,
            hardware: hardware.unwrap_or_else(|| "hardware.yaml.j2".into()),
            workflow,
            values,
        }
    }
}
