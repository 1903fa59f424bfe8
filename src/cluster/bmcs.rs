//! The BMCs the cluster already has: Rufio `Machine` objects, by address. A machine that
//! reports another machine's BMC address is never proposed a BMC object for it (Rufio would
//! hand that BMC's credentials to whoever controls the proposal), whether the other BMC is
//! declared on the GitOps base branch or exists only in the cluster.
//!
//! Rufio is optional in a Tinkerbell install: where its CRD is missing, or the Role does not
//! grant reading it, the watch says so and keeps retrying, and readiness is not affected.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::MAC_LABEL;
use crate::domain::{KnownMacs, Mac};
use crate::propose::index::Bmc;
use crate::shutdown::Shutdown;

/// Rufio's `Machine` (`machines.bmc.tinkerbell.org/v1alpha1`).
pub fn machine_resource() -> ApiResource {
    ApiResource {
        group: "bmc.tinkerbell.org".into(),
        version: "v1alpha1".into(),
        api_version: "bmc.tinkerbell.org/v1alpha1".into(),
        kind: "Machine".into(),
        plural: "machines".into(),
    }
}

/// A Rufio Machine's address (`spec.connection.host`, lower-cased) and what it is.
pub fn bmc_of(obj: &DynamicObject) -> Option<(String, Bmc)> {
    let host = obj.data["spec"]["connection"]["host"]
        .as_str()?
        .trim()
        .to_ascii_lowercase();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let mac = obj
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MAC_LABEL))
        .and_then(|m| Mac::parse(m).ok());
    Some((host, Bmc { name, mac }))
}

fn key_of(obj: &DynamicObject) -> String {
    format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or(""),
        obj.metadata.name.as_deref().unwrap_or("")
    )
}

/// Watches Rufio Machines in `namespace` (all namespaces when `None`) until shutdown,
/// keeping `known`'s "cluster" BMCs equal to them.
pub async fn watch(
    client: kube::Client,
    namespace: Option<String>,
    known: Arc<KnownMacs>,
    readiness: Arc<crate::supervisor::Readiness>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Ready from the start, whatever the watch finds: the detail says what it sees.
    const CHECK: &str = "cluster-bmcs";
    readiness.ready(CHECK, "listing Rufio Machines");
    let ar = machine_resource();
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let publish = |objects: &HashMap<String, (String, Bmc)>| {
        known.replace_bmcs("cluster", objects.values().cloned().collect());
    };
    let mut objects: HashMap<String, (String, Bmc)> = HashMap::new();
    let mut buffer: Option<HashMap<String, (String, Bmc)>> = None;
    let mut failing = false;
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = shutdown.wait() => return Ok(()),
        };
        let Some(event) = event else {
            anyhow::bail!("the Rufio Machine watch stream ended");
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // Said once per outage, not once per retry: without Rufio this is the norm.
                if !failing {
                    tracing::warn!(error = %e, "cannot read Rufio Machines (is Rufio installed, and may Registrar list and watch machines.bmc.tinkerbell.org?): BMC addresses are checked against the base branch only until it can");
                    readiness.ready(
                        CHECK,
                        format!("Rufio Machines unreadable, checking BMCs against the base branch only: {e}"),
                    );
                }
                failing = true;
                continue;
            }
        };
        let take = |obj: &DynamicObject, into: &mut HashMap<String, (String, Bmc)>| match bmc_of(obj) {
            Some(found) => {
                into.insert(key_of(obj), found);
            }
            None => {
                into.remove(&key_of(obj));
            }
        };
        match event {
            Event::Init => buffer = Some(HashMap::new()),
            Event::InitApply(obj) => take(&obj, buffer.get_or_insert_with(HashMap::new)),
            Event::InitDone => {
                objects = buffer.take().unwrap_or_default();
                publish(&objects);
                if failing {
                    tracing::info!(machines = objects.len(), "reading Rufio Machines again");
                }
                failing = false;
                readiness.ready(CHECK, format!("Rufio Machines watched ({} objects)", objects.len()));
            }
            Event::Apply(obj) => {
                take(&obj, &mut objects);
                publish(&objects);
            }
            Event::Delete(obj) => {
                objects.remove(&key_of(&obj));
                publish(&objects);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_is_known_by_its_lower_cased_host() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "bmc.tinkerbell.org/v1alpha1", "kind": "Machine",
            "metadata": {"name": "rack1-bmc", "namespace": "tinkerbell", "labels": {MAC_LABEL: "3c-ec-ef-4c-4f-54"}},
            "spec": {"connection": {"host": " BMC1.Example ", "insecureTLS": true}}
        }))
        .unwrap();
        let (host, bmc) = bmc_of(&obj).unwrap();
        assert_eq!(host, "bmc1.example");
        assert_eq!(bmc.name, "rack1-bmc");
        assert_eq!(bmc.mac.map(|m| m.to_string()).as_deref(), Some("3c:ec:ef:4c:4f:54"));
        let hostless: DynamicObject =
            serde_json::from_value(serde_json::json!({"apiVersion": "bmc.tinkerbell.org/v1alpha1", "kind": "Machine", "metadata": {"name": "x"}, "spec": {}})).unwrap();
        assert!(bmc_of(&hostless).is_none());
    }
}
