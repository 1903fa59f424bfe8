//! The Kubernetes side: which MACs the cluster's Hardware already holds, and the Hardware
//! that Tinkerbell's own auto discovery creates (whose agent attributes are facts).
//!
//! Hardware is read through a kube-runtime watcher: it lists, then watches, and relists on
//! its own after a dropped watch or a 410 Gone, so the index never misses a MAC for long.

pub mod discovery;
pub mod hardware;

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

/// Writes to the cluster on a machine's behalf.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
}

impl Cluster {
    pub fn new(client: kube::Client) -> Self {
        Cluster { client }
    }

    /// Deletes the objects that only existed to discover `mac`: Registrar's temporary
    /// Hardware and Tinkerbell's auto-discovered one. They must go before the approved
    /// Hardware is applied, or Smee finds two Hardware with one MAC and answers neither.
    pub async fn remove_discovery_objects(&self, mac: Mac) -> Result<usize, kube::Error> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &hardware_resource());
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
                let (Some(name), Some(ns)) = (obj.metadata.name.clone(), obj.metadata.namespace.clone()) else { continue };
                let namespaced: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &hardware_resource());
                match namespaced.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => removed += 1,
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
                tracing::info!(%mac, hardware = %format!("{ns}/{name}"), "removed a discovery Hardware");
            }
        }
        // Registrar's temporary Workflow goes with its Hardware.
        let workflows: Api<DynamicObject> = Api::all_with(self.client.clone(), &discovery::workflow_resource());
        for obj in workflows.list(&ListParams::default().labels(&format!("{MAC_LABEL}={},{TEMPORARY}=true", mac.dashed()))).await?.items {
            let (Some(name), Some(ns)) = (obj.metadata.name.clone(), obj.metadata.namespace.clone()) else { continue };
            let namespaced: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &discovery::workflow_resource());
            match namespaced.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}
