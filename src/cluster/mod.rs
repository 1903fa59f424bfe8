//! The Kubernetes side: which MACs the cluster's Hardware already holds, and the Hardware
//! that Tinkerbell's own auto discovery creates (whose agent attributes are facts).
//!
//! Hardware is read through a kube-runtime watcher: it lists, then watches, and relists on
//! its own after a dropped watch or a 410 Gone, so the index never misses a MAC for long.

pub mod bmcs;
pub mod discovery;
pub mod hardware;
pub mod inventory;
pub mod lease;
pub mod smee_logs;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};

use crate::domain::Mac;

/// Tinkerbell's `Hardware` (`hardware.tinkerbell.org/v1alpha1`), read as dynamic objects.
pub fn hardware_resource() -> ApiResource {
    ApiResource {
        group: "tinkerbell.org".into(),
        version: "v1alpha1".into(),
        api_version: "tinkerbell.org/v1alpha1".into(),
        kind: "Hardware".into(),
        plural: "hardware".into(),
    }
}

/// Set by tink-server's auto discovery on the Hardware it creates.
pub const AUTO_DISCOVERED: &str = "tinkerbell.org/auto-discovered";
/// Where tink-server puts the Tink Agent's attributes (JSON).
pub const AGENT_ATTRIBUTES: &str = "tinkerbell.org/agent-attributes";
/// Marks Registrar's own temporary discovery Hardware.
pub const TEMPORARY: &str = "registrar.dev/temporary";

/// Registrar's label carrying a machine's MAC (dashed: `:` is illegal in label values).
pub const MAC_LABEL: &str = "registrar.dev/mac";

/// Where a provisioning Workflow stands, from its `status.state` (monorepo names, with the
/// legacy `STATE_` prefix accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioning {
    Running,
    Succeeded,
    Failed(String),
}

pub fn provisioning_of(workflow: &serde_json::Value) -> Provisioning {
    let state = workflow["status"]["state"].as_str().unwrap_or_default();
    match state.trim_start_matches("STATE_") {
        "SUCCESS" => Provisioning::Succeeded,
        s @ ("FAILED" | "TIMEOUT") => {
            // The failing action says why; fall back to the workflow's state.
            let why = workflow["status"]["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|t| t["actions"].as_array().cloned().unwrap_or_default())
                .find(|a| {
                    matches!(
                        a["state"].as_str(),
                        Some("FAILED" | "TIMEOUT" | "STATE_FAILED" | "STATE_TIMEOUT")
                    )
                })
                .map(|a| {
                    format!(
                        "action {} {}: {}",
                        a["name"].as_str().unwrap_or("?"),
                        a["state"].as_str().unwrap_or(s),
                        a["message"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_else(|| format!("workflow {s}"));
            Provisioning::Failed(why)
        }
        _ if workflow["status"]["templateRendering"] == "failed" => {
            Provisioning::Failed("the Template did not render".into())
        }
        _ => Provisioning::Running,
    }
}

/// Writes to the cluster on a machine's behalf.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// Tinkerbell's namespace: Registrar's objects, and where auto discovery puts its own.
    namespace: String,
}

impl Cluster {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Cluster {
            client,
            namespace: namespace.to_string(),
        }
    }

    /// Whether the Secret `name` exists in Tinkerbell's namespace (its content is not kept).
    pub async fn secret_exists(&self, name: &str) -> Result<bool, kube::Error> {
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api.get_opt(name).await?.is_some())
    }

    /// The provisioning Workflow `name`, if it exists.
    pub async fn workflow(&self, name: &str) -> Result<Option<serde_json::Value>, kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &discovery::workflow_resource());
        Ok(api
            .get_opt(name)
            .await?
            .map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    /// Deletes the objects that only existed to discover `mac`: Registrar's temporary
    /// Hardware and Tinkerbell's auto-discovered one. They must go before the approved
    /// Hardware is applied, or Smee finds two Hardware with one MAC and answers neither.
    pub async fn remove_discovery_objects(&self, mac: Mac) -> Result<usize, kube::Error> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.namespace, &hardware_resource());
        let mut removed = 0;
        let temporary = ListParams::default().labels(&format!("{MAC_LABEL}={},{TEMPORARY}=true", mac.dashed()));
        let discovered = ListParams::default().labels(&format!("{AUTO_DISCOVERED}=true"));
        for params in [temporary, discovered] {
            for obj in api.list(&params).await?.items {
                let value = serde_json::to_value(&obj).unwrap_or_default();
                let ours = match hardware::classify(&value) {
                    hardware::Seen::Discovered { mac: m, .. } => m == mac,
                    _ => value["metadata"]["labels"][MAC_LABEL] == mac.dashed(),
                };
                if !ours {
                    continue;
                }
                let Some(name) = obj.metadata.name.clone() else {
                    continue;
                };
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => removed += 1,
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
                tracing::info!(%mac, hardware = %format!("{}/{name}", self.namespace), "removed a discovery Hardware");
            }
        }
        // Registrar's temporary Workflow goes with its Hardware.
        let workflows: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &discovery::workflow_resource());
        for obj in workflows
            .list(&ListParams::default().labels(&format!("{MAC_LABEL}={},{TEMPORARY}=true", mac.dashed())))
            .await?
            .items
        {
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            match workflows.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workflow_states() {
        assert_eq!(
            provisioning_of(&json!({"status": {"state": "RUNNING"}})),
            Provisioning::Running
        );
        assert_eq!(provisioning_of(&json!({})), Provisioning::Running);
        assert_eq!(
            provisioning_of(&json!({"status": {"state": "STATE_SUCCESS"}})),
            Provisioning::Succeeded
        );
        let failed = json!({"status": {"state": "FAILED", "tasks": [{"actions": [{"name": "stream-image", "state": "SUCCESS"}, {"name": "kexec", "state": "FAILED", "message": "no kernel"}]}]}});
        assert_eq!(
            provisioning_of(&failed),
            Provisioning::Failed("action kexec FAILED: no kernel".into())
        );
        assert_eq!(
            provisioning_of(&json!({"status": {"state": "TIMEOUT"}})),
            Provisioning::Failed("workflow TIMEOUT".into())
        );
        assert_eq!(
            provisioning_of(&json!({"status": {"templateRendering": "failed"}})),
            Provisioning::Failed("the Template did not render".into())
        );
    }
}
