//! Validation of rendered objects against Tinkerbell's CRD schemas, as strictly as an
//! apiserver would: unknown fields are errors, and the checks the schema cannot express
//! (anchored MACs, the one CEL rule) are done here.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

/// The upstream CRDs, embedded so the binary validates without any cluster.
/// `tests/crds.rs` checks that they equal the copies in `../shared/crds/`.
const CRDS: &[&str] = &[
    include_str!("../../crds/tinkerbell.org_hardware.yaml"),
    include_str!("../../crds/tinkerbell.org_workflows.yaml"),
    include_str!("../../crds/tinkerbell.org_templates.yaml"),
    include_str!("../../crds/bmc.tinkerbell.org_machines.yaml"),
];

pub struct Schemas {
    by_kind: HashMap<(String, String), jsonschema::Validator>,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| Schemas::load().expect("embedded CRDs are valid"));

pub fn schemas() -> &'static Schemas {
    &SCHEMAS
}

impl Schemas {
    fn load() -> anyhow::Result<Self> {
        let mut by_kind = HashMap::new();
        for text in CRDS {
            let crd: Value = yaml_serde::from_str(text)?;
            let group = crd["spec"]["group"].as_str().unwrap_or_default().to_string();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default().to_string();
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let mut schema = version["schema"]["openAPIV3Schema"].clone();
                strictify(&mut schema);
                let api_version = format!("{group}/{}", version["name"].as_str().unwrap_or_default());
                by_kind.insert((api_version, kind.clone()), jsonschema::validator_for(&schema)?);
            }
        }
        Ok(Schemas { by_kind })
    }

    pub fn knows(&self, api_version: &str, kind: &str) -> bool {
        self.by_kind.contains_key(&(api_version.to_string(), kind.to_string()))
    }

    /// Every way `object` breaks its kind's schema, as `path: message` lines.
    pub fn validate(&self, object: &Value) -> Result<(), Vec<String>> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let Some(validator) = self.by_kind.get(&(api_version.to_string(), kind.to_string())) else {
            return Err(vec![format!(
                "unknown kind {kind:?} in {api_version:?}: Registrar renders Tinkerbell's v1alpha1 Hardware, Workflow and bmc Machine"
            )]);
        };
        let mut errors: Vec<String> = validator
            .iter_errors(object)
            .map(|e| format!("{}: {}", display_path(&e.instance_path().to_string()), e))
            .collect();
        errors.extend(check_metadata(object));
        if object.get("status").is_some() {
            errors.push("status: Registrar never renders status".into());
        }
        if kind == "Hardware" {
            errors.extend(check_hardware(object));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

fn display_path(p: &str) -> String {
    if p.is_empty() { "/".into() } else { p.to_string() }
}

/// Adds `additionalProperties: false` wherever the schema lists properties and does not
/// preserve unknown fields: that is how a strict apiserver treats them.
fn strictify(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let preserves = map.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
            if map.contains_key("properties") && !preserves && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for v in map.values_mut() {
                strictify(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strictify),
        _ => {}
    }
}

fn check_metadata(object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(meta) = object.get("metadata").and_then(Value::as_object) else {
        return vec!["/metadata: missing".into()];
    };
    for key in meta.keys() {
        if !["name", "namespace", "labels", "annotations"].contains(&key.as_str()) {
            errors.push(format!(
                "/metadata/{key}: Registrar renders only name, namespace, labels and annotations"
            ));
        }
    }
    for field in ["name", "namespace"] {
        let valid = if field == "name" {
            super::names::is_dns1123_subdomain
        } else {
            super::names::is_dns1123
        };
        match meta.get(field).and_then(Value::as_str) {
            Some(v) if valid(v) => {}
            Some(v) => errors.push(format!("/metadata/{field}: {v:?} is not a valid Kubernetes {field}")),
            None => errors.push(format!("/metadata/{field}: missing")),
        }
    }
    for map in ["labels", "annotations"] {
        if let Some(m) = meta.get(map) {
            match m.as_object() {
                Some(m) if m.values().all(Value::is_string) => {}
                _ => errors.push(format!("/metadata/{map}: must map strings to strings")),
            }
        }
    }
    errors
}

fn is_canonical_mac(s: &str) -> bool {
    s.len() == 17
        && s.bytes().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                b == b':'
            } else {
                b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
            }
        })
}

/// What the Hardware schema cannot say: its MAC pattern is unanchored, and its one CEL rule.
fn check_hardware(object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, iface) in object["spec"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let dhcp = &iface["dhcp"];
        if let Some(mac) = dhcp.get("mac")
            && !mac.as_str().is_some_and(is_canonical_mac)
        {
            errors.push(format!(
                "/spec/interfaces/{i}/dhcp/mac: {mac} is not a lower-case colon MAC"
            ));
        }
        let set = |k: &str| dhcp.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        if set("tftp_server_name") != set("boot_file_name") {
            errors.push(format!(
                "/spec/interfaces/{i}/dhcp: tftp_server_name and boot_file_name must be set together"
            ));
        }
    }
    if let Some(agent) = object["spec"].get("agentID")
        && !agent.as_str().is_some_and(is_canonical_mac)
    {
        errors.push(format!("/spec/agentID: {agent} is not a lower-case colon MAC"));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hw(spec: Value) -> Value {
        json!({"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware", "metadata": {"name": "n1", "namespace": "tinkerbell"}, "spec": spec})
    }

    #[test]
    fn accepts_the_reference_minimal_hardware() {
        let ok = hw(
            json!({"agentID": "3c:ec:ef:4c:4f:54", "interfaces": [{"dhcp": {"mac": "3c:ec:ef:4c:4f:54", "arch": "x86_64", "uefi": true, "lease_time": 86400}, "netboot": {"allowPXE": true, "allowWorkflow": true}}]}),
        );
        schemas().validate(&ok).unwrap();
    }

    #[test]
    fn rejects_unknown_fields_bad_macs_and_half_set_boot_options() {
        let errs = schemas()
            .validate(&hw(
                json!({"bogus": 1, "interfaces": [{"dhcp": {"mac": "x3c:ec:ef:4c:4f:54y", "tftp_server_name": "t"}}]}),
            ))
            .unwrap_err();
        let text = errs.join("\n");
        assert!(text.contains("bogus"), "{text}");
        assert!(text.contains("lower-case colon MAC"), "{text}");
        assert!(text.contains("tftp_server_name"), "{text}");
        let errs = schemas()
            .validate(&json!({"apiVersion": "v1", "kind": "Secret"}))
            .unwrap_err();
        assert!(errs[0].contains("unknown kind"));
    }
}
