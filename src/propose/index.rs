//! The MACs the GitOps base branch already registers: every `spec.interfaces[].dhcp.mac` of
//! every Hardware under the proposals' directory. Sources consult it so that a registered
//! machine asking for an address is never noticed as new.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::git::GitRepo;
use crate::domain::Mac;

/// The directory proposals are written to: the fixed part of `gitops.path`.
pub fn manifest_dir(path_template: &str) -> &str {
    let fixed = &path_template[..path_template.find('{').unwrap_or(path_template.len())];
    fixed.rfind('/').map(|i| &fixed[..i]).unwrap_or("")
}

/// What the Hardware on the base branch hold: their MACs and IPv4 addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Registered {
    pub macs: HashSet<Mac>,
    pub addresses: HashSet<std::net::Ipv4Addr>,
    /// Each Hardware's name, with the MACs it carries.
    pub names: HashMap<String, Vec<Mac>>,
    /// Each Rufio Machine (a BMC) by its address (`spec.connection.host`): its name, and the
    /// MAC of the machine Registrar proposed it for, if it did.
    pub bmcs: HashMap<String, Bmc>,
    /// Each address a Hardware holds, with where: what the pools are checked against.
    pub held: Vec<HeldAddress>,
}

/// An address a Hardware on the base branch holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAddress {
    /// The file, from the repository's root.
    pub path: String,
    /// The Hardware's name.
    pub name: String,
    pub ip: std::net::Ipv4Addr,
    /// The MAC of the interface that holds it.
    pub mac: Option<Mac>,
    /// Whether Registrar rendered it: its `registrar.dev/mac` label names that MAC.
    pub registrars: bool,
}

/// A BMC the repository already declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmc {
    pub name: String,
    pub mac: Option<Mac>,
}

/// MACs of the Hardware objects in one YAML file (any number of documents; anything that
/// is not a Hardware, or not YAML, is skipped).
pub fn hardware_macs(text: &str, out: &mut HashSet<Mac>) {
    let mut found = Registered::default();
    hardware_identities("", text, &mut found);
    out.extend(found.macs);
}

/// MACs and addresses of the Hardware objects in one YAML file, at `path`.
pub fn hardware_identities(path: &str, text: &str, out: &mut Registered) {
    for doc in yaml_serde::Deserializer::from_str(text) {
        let Ok(v) = Value::deserialize(doc) else { return };
        if v["kind"] == "Machine"
            && v["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("bmc.tinkerbell.org/"))
            && let Some(host) = v["spec"]["connection"]["host"].as_str()
        {
            let mac = v["metadata"]["labels"]["registrar.dev/mac"]
                .as_str()
                .and_then(|m| Mac::parse(m).ok());
            let name = v["metadata"]["name"].as_str().unwrap_or_default().to_string();
            out.bmcs.insert(host.to_ascii_lowercase(), Bmc { name, mac });
            continue;
        }
        if v["kind"] != "Hardware" {
            continue;
        }
        let mut carried = Vec::new();
        let labelled = v["metadata"]["labels"]["registrar.dev/mac"]
            .as_str()
            .and_then(|m| Mac::parse(m).ok());
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        for iface in v["spec"]["interfaces"].as_array().into_iter().flatten() {
            let mac = iface["dhcp"]["mac"].as_str().and_then(|m| Mac::parse(m).ok());
            if let Some(mac) = mac {
                out.macs.insert(mac);
                carried.push(mac);
            }
            if let Some(ip) = iface["dhcp"]["ip"]["address"].as_str().and_then(|a| a.parse().ok()) {
                out.addresses.insert(ip);
                out.held.push(HeldAddress {
                    path: path.to_string(),
                    name: name.to_string(),
                    ip,
                    mac,
                    registrars: mac.is_some() && labelled == mac,
                });
            }
        }
        if let Some(name) = v["metadata"]["name"].as_str() {
            out.names.entry(name.to_string()).or_default().extend(carried);
        }
    }
}

impl GitRepo {
    /// MACs registered on the base branch under `dir`, with the id of that directory's tree
    /// (unchanged id ⇒ unchanged MACs, so callers can skip the parse).
    pub fn registered_macs(
        &self,
        dir: &str,
        unless_tree: Option<git2::Oid>,
    ) -> Result<Option<(git2::Oid, Registered)>, super::git::GitError> {
        let files = match self.yaml_files(dir, unless_tree)? {
            None => return Ok(None),
            Some(f) => f,
        };
        let mut found = Registered::default();
        for (path, text) in &files.1 {
            hardware_identities(path, text, &mut found);
        }
        Ok(Some((files.0, found)))
    }
}

/// Kustomize's file names, in the order kustomize looks for them.
pub const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// `kustomization` with `entry` in its `resources` (deduplicated, sorted), other keys kept
/// in their order. Where a directory has this file, only what it lists is applied: a
/// manifest dropped beside it without an entry would deploy nothing.
pub fn with_resource(kustomization: &str, entry: &str) -> Result<String, String> {
    edit_resources(kustomization, |resources| resources.push(entry.to_string()))
}

/// The kustomization without `entry` in `resources` (a decommissioned machine's file).
pub fn without_resource(kustomization: &str, entry: &str) -> Result<String, String> {
    edit_resources(kustomization, |resources| resources.retain(|r| r != entry))
}

fn edit_resources(kustomization: &str, edit: impl FnOnce(&mut Vec<String>)) -> Result<String, String> {
    let mut doc: yaml_serde::Value =
        yaml_serde::from_str(kustomization).map_err(|e| format!("kustomization is not YAML: {e}"))?;
    let map = doc.as_mapping_mut().ok_or("kustomization is not a mapping")?;
    let key = yaml_serde::Value::String("resources".into());
    let mut resources: Vec<String> = match map.get(&key) {
        None | Some(yaml_serde::Value::Null) => vec![],
        Some(yaml_serde::Value::Sequence(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or("resources must be strings"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("resources must be a list".into()),
    };
    edit(&mut resources);
    resources.sort();
    resources.dedup();
    map.insert(
        key,
        yaml_serde::Value::Sequence(resources.into_iter().map(yaml_serde::Value::String).collect()),
    );
    yaml_serde::to_string(&doc).map_err(|e| e.to_string())
}

pub fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// The name of the first provisioning Workflow in one YAML file (what git holds for a
/// machine), if it has one.
pub fn workflow_name(text: &str) -> Option<String> {
    yaml_serde::Deserializer::from_str(text)
        .map_while(|doc| Value::deserialize(doc).ok())
        .find(|v| {
            v["kind"] == "Workflow"
                && v["apiVersion"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("tinkerbell.org/"))
        })
        .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_workflow_a_file_holds_is_found_by_kind_whatever_its_name() {
        let text = "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: r12-u7}\n---\napiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: r12-u7-bmc}\n---\napiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {name: r12-u7-provision-r2}\n";
        assert_eq!(super::workflow_name(text).as_deref(), Some("r12-u7-provision-r2"));
        assert_eq!(super::workflow_name("kind: Hardware\nmetadata: {name: x}\n"), None);
    }

    use super::*;

    #[test]
    fn directory_of_the_path_template() {
        assert_eq!(manifest_dir("hardware/{name}.yaml"), "hardware");
        assert_eq!(
            manifest_dir("clusters/a/tinkerbell/hardware/{mac}.yaml"),
            "clusters/a/tinkerbell/hardware"
        );
        assert_eq!(manifest_dir("{name}.yaml"), "");
    }

    #[test]
    fn resources_are_added_once_sorted_and_other_keys_kept() {
        let k = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: tinkerbell\nresources:\n  - zeta.yaml\n  - alpha.yaml\n";
        let out = with_resource(k, "mid.yaml").unwrap();
        assert_eq!(
            out,
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: tinkerbell\nresources:\n- alpha.yaml\n- mid.yaml\n- zeta.yaml\n"
        );
        assert_eq!(with_resource(&out, "mid.yaml").unwrap(), out);
        assert!(
            with_resource("kind: Kustomization\n", "a.yaml")
                .unwrap()
                .contains("resources:\n- a.yaml")
        );
        assert!(with_resource("resources: 3\n", "a.yaml").is_err());
    }

    #[test]
    fn macs_of_every_hardware_document() {
        let mut macs = HashSet::new();
        hardware_macs(
            "---\nkind: Hardware\nspec:\n  interfaces:\n    - dhcp: {mac: \"3c:ec:ef:4c:4f:54\"}\n    - dhcp: {mac: AA-BB-CC-DD-EE-01}\n---\nkind: Workflow\nspec: {hardwareMap: {device_1: \"02:00:00:00:00:09\"}}\n",
            &mut macs,
        );
        hardware_macs(": not yaml [", &mut macs);
        let mut got: Vec<String> = macs.iter().map(Mac::to_string).collect();
        got.sort();
        assert_eq!(got, ["3c:ec:ef:4c:4f:54", "aa:bb:cc:dd:ee:01"]);
    }
}
