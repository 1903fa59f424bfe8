//! What no fact may change: every rendered document must still be this machine's, in the
//! configured namespace, with the blocks Smee needs to boot it.

use serde_json::Value;

use super::{RenderError, Renderer};
use crate::domain::Mac;

impl Renderer {
    /// No fact may rename, re-kind or re-address an object: it must be this machine's.
    pub(super) fn check_identity(&self, template: &str, doc: &Value, mac: &Mac, name: &str) -> Result<(), RenderError> {
        let mut errors = Vec::new();
        let mac_s = mac.to_string();
        if doc["metadata"]["namespace"].as_str() != Some(&self.namespace) {
            errors.push(format!("/metadata/namespace must be {:?}", self.namespace));
        }
        match doc["kind"].as_str() {
            Some("Hardware") => {
                if doc["metadata"]["name"].as_str() != Some(name) {
                    errors.push(format!("/metadata/name must be {name:?}"));
                }
                if doc["spec"]["agentID"].as_str() != Some(&mac_s) {
                    errors.push(format!("/spec/agentID must be {mac_s:?}, or Tinkerbell's discovery creates a second Hardware for this MAC"));
                }
                let ifaces = doc["spec"]["interfaces"].as_array().cloned().unwrap_or_default();
                match ifaces.iter().find(|i| i["dhcp"]["mac"].as_str() == Some(&mac_s)) {
                    None => errors.push(format!(
                        "/spec/interfaces must hold an interface with dhcp.mac {mac_s:?}"
                    )),
                    Some(i) => {
                        if i["netboot"].is_null() {
                            errors.push(
                                "/spec/interfaces: the boot interface needs a netboot block, or Smee will not boot it"
                                    .into(),
                            );
                        }
                        if i["dhcp"]["lease_time"].is_null() {
                            errors.push(
                                "/spec/interfaces: the boot interface needs dhcp.lease_time, or Smee sends lease 0"
                                    .into(),
                            );
                        }
                    }
                }
            }
            Some("Workflow") => {
                if doc["spec"]["hardwareRef"].as_str() != Some(name) {
                    errors.push(format!("/spec/hardwareRef must be {name:?}"));
                }
                if doc["spec"]["hardwareMap"]["device_1"].as_str() != Some(&mac_s) {
                    errors.push(format!("/spec/hardwareMap/device_1 must be {mac_s:?}"));
                }
            }
            _ => {}
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RenderError::Invalid {
                document: template.to_string(),
                errors,
            })
        }
    }
}
