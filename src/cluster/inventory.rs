//! Re-inventory: a Workflow that boots a provisioned machine into discovery again, on its own
//! Hardware (the one git holds), so it reports its hardware once more and then boots its own
//! disk. `bootOptions.toggleAllowNetboot` lets it PXE boot for the Workflow's length only
//! (tink-controller switches `allowPXE` back off once the last action has succeeded), and
//! with a BMC `bootMode: netboot` has Rufio power-cycle it into the network boot; the
//! re-inventory Template's last action reboots it (`deploy/discovery/reinventory-template.yaml`).

use chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use super::MAC_LABEL;
use super::discovery::{EXPIRES_LABEL, workflow_resource};
use crate::domain::Mac;

/// Marks Registrar's re-inventory Workflows.
pub const INVENTORY_LABEL: &str = "registrar.dev/inventory";
/// When the re-inventory it serves was asked for (Unix seconds): a Workflow left from an
/// earlier one is told apart by it.
pub const ASKED_LABEL: &str = "registrar.dev/asked";

#[derive(Clone, Debug)]
pub struct InventorySettings {
    pub namespace: String,
    /// The re-inventory Template: the discovery action, then a reboot.
    pub template: String,
    pub report_url: String,
    /// How long the machine has to report.
    pub ttl: chrono::Duration,
}

/// What a re-inventory Workflow needs to know about the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryTarget {
    /// Its Hardware's name (the one git holds).
    pub hardware: String,
    /// Its Hardware names a BMC: Rufio can power-cycle it into the network boot.
    pub via_bmc: bool,
}

pub fn object_name(mac: &Mac) -> String {
    format!("registrar-inventory-{}", mac.dashed())
}

/// The Workflow for `mac` (validated against the CRD in the tests).
pub fn workflow(
    s: &InventorySettings,
    mac: &Mac,
    target: &InventoryTarget,
    token: &str,
    asked: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Value {
    let mut boot = json!({"toggleAllowNetboot": true});
    if target.via_bmc {
        boot["bootMode"] = json!("netboot");
    }
    json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Workflow",
        "metadata": {
            "name": object_name(mac),
            "namespace": s.namespace,
            "labels": {
                INVENTORY_LABEL: "true",
                MAC_LABEL: mac.dashed(),
                ASKED_LABEL: asked.timestamp().to_string(),
                EXPIRES_LABEL: expires.timestamp().to_string(),
            }
        },
        "spec": {
            "templateRef": s.template,
            "hardwareRef": target.hardware,
            "hardwareMap": {
                "device_1": mac.to_string(),
                "registrar_url": s.report_url,
                "report_token": token,
                // The report is all a re-inventory waits for: the answer comes at once.
                "max_wait_seconds": s.ttl.num_seconds().to_string(),
            },
            "bootOptions": boot,
        }
    })
}

/// A re-inventory Workflow as found in the cluster.
#[derive(Debug, Clone)]
pub struct Found {
    pub mac: Mac,
    pub asked: i64,
    pub expires: i64,
    pub object: Value,
}

pub struct Inventory {
    client: kube::Client,
    settings: InventorySettings,
}

impl Inventory {
    pub fn new(client: kube::Client, settings: InventorySettings) -> Self {
        Inventory { client, settings }
    }

    pub fn settings(&self) -> &InventorySettings {
        &self.settings
    }

    fn api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.settings.namespace, &workflow_resource())
    }

    /// Creates the Workflow unless one by its name exists (a retry after a crash).
    pub async fn create(&self, workflow: Value) -> Result<(), kube::Error> {
        let obj: DynamicObject = serde_json::from_value(workflow).map_err(kube::Error::SerdeError)?;
        match self.api().create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every re-inventory Workflow in the namespace.
    pub async fn list(&self) -> Result<Vec<Found>, kube::Error> {
        let list = self
            .api()
            .list(&ListParams::default().labels(&format!("{INVENTORY_LABEL}=true")))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| {
                let labels = o.metadata.labels.as_ref()?;
                let mac = Mac::parse(labels.get(MAC_LABEL)?).ok()?;
                let asked = labels.get(ASKED_LABEL)?.parse().ok()?;
                let expires = labels.get(EXPIRES_LABEL)?.parse().ok()?;
                let object = serde_json::to_value(&o).ok()?;
                Some(Found {
                    mac,
                    asked,
                    expires,
                    object,
                })
            })
            .collect())
    }

    pub async fn remove(&self, mac: &Mac) -> Result<(), kube::Error> {
        match self.api().delete(&object_name(mac), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
