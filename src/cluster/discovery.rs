//! Temporary discovery objects: for an unknown machine seen on the network, a Hardware that
//! lets it PXE boot into HookOS and a Workflow from the discovery Template whose action
//! reports its hardware (`deploy/discovery/`). Each Workflow carries its own report token,
//! valid for that MAC only and only until the objects expire. Bounded in number; removed
//! after approval, rejection or their time to live.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use super::{MAC_LABEL, TEMPORARY, hardware_resource};
use crate::domain::{Mac, Sighting};

pub const EXPIRES_LABEL: &str = "registrar.dev/expires";

pub fn workflow_resource() -> ApiResource {
    ApiResource {
        group: "tinkerbell.org".into(),
        version: "v1alpha1".into(),
        api_version: "tinkerbell.org/v1alpha1".into(),
        kind: "Workflow".into(),
        plural: "workflows".into(),
    }
}

#[derive(Clone, Debug)]
pub struct DiscoverySettings {
    pub namespace: String,
    pub template: String,
    /// The URL a machine reaches Registrar at (from the provisioning network).
    pub report_url: String,
    pub max_machines: usize,
    pub ttl: chrono::Duration,
    /// How long the discovery action waits for the review after its report.
    pub decision_wait: chrono::Duration,
}

pub fn object_name(mac: &Mac) -> String {
    format!("registrar-discover-{}", mac.dashed())
}

/// The two objects for `mac`, as JSON (validated against the CRDs in the tests).
pub fn objects(
    s: &DiscoverySettings,
    mac: &Mac,
    sighting: Option<&Sighting>,
    token: &str,
    expires: DateTime<Utc>,
    address: Option<&crate::ipam::Address>,
) -> (Value, Value) {
    let name = object_name(mac);
    let labels = json!({TEMPORARY: "true", MAC_LABEL: mac.dashed(), EXPIRES_LABEL: expires.timestamp().to_string()});
    let arch = sighting.and_then(|s| s.arch.clone()).unwrap_or_else(|| "x86_64".into());
    let uefi = sighting.and_then(|s| s.uefi).unwrap_or(true);
    let mut dhcp = json!({"mac": mac.to_string(), "arch": arch, "uefi": uefi, "lease_time": 3600});
    // Smee's reservation mode answers only a Hardware that carries an address.
    if let Some(a) = address {
        dhcp["lease_time"] = json!(a.lease_seconds);
        dhcp["ip"] = json!({"address": a.ip, "netmask": a.netmask, "family": 4});
        if let Some(gw) = &a.gateway {
            dhcp["ip"]["gateway"] = json!(gw);
        }
        if !a.nameservers.is_empty() {
            dhcp["name_servers"] = json!(a.nameservers);
        }
        if let Some(vlan) = a.vlan {
            dhcp["vlan_id"] = json!(vlan.to_string());
        }
    }
    let hardware = json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
        "metadata": {"name": name, "namespace": s.namespace, "labels": labels},
        "spec": {
            "agentID": mac.to_string(),
            "interfaces": [{
                "dhcp": dhcp,
                "netboot": {"allowPXE": true, "allowWorkflow": true}
            }]
        }
    });
    let workflow = json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name, "namespace": s.namespace, "labels": labels},
        "spec": {
            "templateRef": s.template,
            "hardwareRef": name,
            "hardwareMap": {
                "device_1": mac.to_string(),
                "registrar_url": s.report_url,
                "report_token": token,
                "max_wait_seconds": s.decision_wait.num_seconds().to_string(),
            }
        }
    });
    (hardware, workflow)
}

/// Creates an object unless it exists (409 is success: create-if-absent).
async fn create(api: &Api<DynamicObject>, obj: Value) -> Result<bool, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(obj).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

pub struct Discovery {
    client: kube::Client,
    settings: DiscoverySettings,
    /// Held from counting the slots to creating the objects, so two sources noticing
    /// machines at once cannot both take the last slot.
    slots: tokio::sync::Mutex<()>,
}

impl Discovery {
    pub fn new(client: kube::Client, settings: DiscoverySettings) -> Self {
        Discovery {
            client,
            settings,
            slots: tokio::sync::Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &DiscoverySettings {
        &self.settings
    }

    fn api(&self, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.settings.namespace, ar)
    }

    /// How many temporary machines exist now.
    pub async fn count(&self) -> Result<usize, kube::Error> {
        Ok(self
            .api(&hardware_resource())
            .list(&ListParams::default().labels(&format!("{TEMPORARY}=true")))
            .await?
            .items
            .len())
    }

    /// Serialises slot decisions: hold the guard from [`Discovery::count`] to
    /// [`Discovery::create`].
    pub async fn slot_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.slots.lock().await
    }

    /// Creates the objects for `mac` with `token` (whose hash the caller stored first).
    pub async fn create(
        &self,
        mac: &Mac,
        sighting: Option<&Sighting>,
        token: &str,
        expires: DateTime<Utc>,
        address: Option<&crate::ipam::Address>,
    ) -> Result<bool, kube::Error> {
        let (hardware, workflow) = objects(&self.settings, mac, sighting, token, expires, address);
        let created = create(&self.api(&hardware_resource()), hardware).await?;
        create(&self.api(&workflow_resource()), workflow).await?;
        Ok(created)
    }

    /// Deletes the temporary objects of `mac`.
    pub async fn remove(&self, mac: &Mac) -> Result<(), kube::Error> {
        for ar in [workflow_resource(), hardware_resource()] {
            match self.api(&ar).delete(&object_name(mac), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// MACs whose temporary objects are past the deadline on their label (the caller
    /// decides whether a machine that reported has more time).
    pub async fn expired(&self, now: DateTime<Utc>) -> Result<Vec<Mac>, kube::Error> {
        let list = self
            .api(&hardware_resource())
            .list(&ListParams::default().labels(&format!("{TEMPORARY}=true")))
            .await?;
        Ok(list
            .items
            .iter()
            .filter_map(|o| {
                let labels: &BTreeMap<String, String> = o.metadata.labels.as_ref()?;
                let expires: i64 = labels.get(EXPIRES_LABEL)?.parse().ok()?;
                let mac = Mac::parse(labels.get(MAC_LABEL)?).ok()?;
                (expires < now.timestamp()).then_some(mac)
            })
            .collect())
    }
}
