//! The Hardware index: every MAC of every Hardware in the watched namespace(s), except the
//! Hardware that only exists to discover a machine (auto-discovered, or Registrar's own
//! temporary objects). Auto-discovered Hardware is also turned into facts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

use super::{AGENT_ATTRIBUTES, AUTO_DISCOVERED, TEMPORARY, hardware_resource};
use crate::domain::facts::{Facts, from_agent_attributes};
use crate::domain::{KnownMacs, Mac};
use crate::shutdown::Shutdown;

/// What a registered Hardware object holds: its MACs and its IPv4 addresses.
type Identities = (Vec<Mac>, Vec<std::net::Ipv4Addr>);

/// What one Hardware object tells Registrar.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A registered machine: its MACs are known.
    Registered(Vec<Mac>),
    /// Tinkerbell discovered it: propose it, with these facts.
    Discovered { mac: Mac, facts: Box<Facts> },
    /// A discovery object without usable content, or Registrar's own temporary one.
    Ignore,
}

fn macs_of(obj: &Value) -> Vec<Mac> {
    obj["spec"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["dhcp"]["mac"].as_str().and_then(|m| Mac::parse(m).ok()))
        .collect()
}

fn addresses_of(obj: &Value) -> Vec<std::net::Ipv4Addr> {
    obj["spec"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["dhcp"]["ip"]["address"].as_str().and_then(|a| a.parse().ok()))
        .collect()
}

/// Classifies a Hardware object (as JSON: `metadata`, `spec`).
pub fn classify(obj: &Value) -> Seen {
    let labels = &obj["metadata"]["labels"];
    if labels[TEMPORARY] == "true" {
        return Seen::Ignore;
    }
    if labels[AUTO_DISCOVERED] != "true" {
        return Seen::Registered(macs_of(obj));
    }
    // The agent's ID is its boot MAC; fall back to the first interface.
    let mac = obj["spec"]["agentID"]
        .as_str()
        .and_then(|m| Mac::parse(m).ok())
        .or_else(|| macs_of(obj).into_iter().next());
    let Some(mac) = mac else { return Seen::Ignore };
    // The annotation is left out above 64 KiB; then the facts are what the spec says.
    let facts = obj["metadata"]["annotations"][AGENT_ATTRIBUTES]
        .as_str()
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .map(|a| from_agent_attributes(&a))
        .unwrap_or_default();
    Seen::Discovered {
        mac,
        facts: Box::new(facts),
    }
}

/// What the watch passes on: a machine Tinkerbell discovered, with its facts. (Registered
/// Hardware goes into the known-MAC index, which the hand-off reads.)
#[derive(Debug, Clone)]
pub struct Noticed(pub Mac, pub Facts);

pub type DiscoveredSink = tokio::sync::mpsc::Sender<Noticed>;

/// Watches Hardware until shutdown, keeping `known`'s "cluster" set equal to the MACs of
/// registered Hardware and passing auto-discovered machines to `discovered`.
///
/// `up` is 1 while the watch is connected (listed and watching), 0 after an error until
/// the next successful relist: the operator's "cluster watch disconnected" alert.
pub async fn watch(
    client: kube::Client,
    namespace: Option<String>,
    known: Arc<KnownMacs>,
    discovered: DiscoveredSink,
    up: prometheus_client::metrics::gauge::Gauge,
    readiness: Arc<crate::supervisor::Readiness>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let ar = hardware_resource();
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let mut objects: HashMap<String, Identities> = HashMap::new();
    let mut buffer: Option<HashMap<String, Identities>> = None;
    let publish = |objects: &HashMap<String, Identities>| {
        known.replace(
            "cluster",
            objects
                .values()
                .flat_map(|o| o.0.iter().copied())
                .collect::<HashSet<_>>(),
        );
        known.replace_addresses("cluster", objects.values().flat_map(|o| o.1.iter().copied()).collect());
        let mut names: HashMap<String, Vec<Mac>> = HashMap::new();
        for (key, (macs, _)) in objects {
            let name = key.rsplit('/').next().unwrap_or(key);
            names.entry(name.to_string()).or_default().extend(macs);
        }
        known.replace_names("cluster", names);
    };
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = shutdown.wait() => {
                up.set(0);
                return Ok(());
            }
        };
        let Some(event) = event else {
            up.set(0);
            anyhow::bail!("the Hardware watch stream ended");
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                up.set(0);
                readiness.not_ready("cluster", format!("Hardware watch interrupted, relisting: {e}"));
                // The watcher relists by itself (backoff), e.g. after 410 Gone.
                tracing::warn!(error = %e, "Hardware watch interrupted; relisting");
                continue;
            }
        };
        let take = |obj: &DynamicObject, into: &mut HashMap<String, Identities>| {
            let key = format!(
                "{}/{}",
                obj.metadata.namespace.as_deref().unwrap_or(""),
                obj.metadata.name.as_deref().unwrap_or("")
            );
            let value = serde_json::to_value(obj).unwrap_or_default();
            match classify(&value) {
                Seen::Registered(macs) => {
                    into.insert(key, (macs, addresses_of(&value)));
                }
                Seen::Discovered { mac, facts } => {
                    into.remove(&key);
                    if discovered.try_send(Noticed(mac, *facts)).is_err() {
                        tracing::warn!(%mac, "auto-discovered machine dropped: backlog full; the next relist brings it again");
                    }
                }
                Seen::Ignore => {
                    into.remove(&key);
                }
            }
        };
        match event {
            Event::Init => buffer = Some(HashMap::new()),
            Event::InitApply(obj) => take(&obj, buffer.get_or_insert_with(HashMap::new)),
            Event::InitDone => {
                up.set(1);
                objects = buffer.take().unwrap_or_default();
                publish(&objects);
                readiness.ready("cluster", format!("Hardware watch synced ({} objects)", objects.len()));
                tracing::debug!(hardware = objects.len(), "Hardware index (re)built");
            }
            Event::Apply(obj) => {
                take(&obj, &mut objects);
                publish(&objects);
            }
            Event::Delete(obj) => {
                let key = format!(
                    "{}/{}",
                    obj.metadata.namespace.as_deref().unwrap_or(""),
                    obj.metadata.name.as_deref().unwrap_or("")
                );
                objects.remove(&key);
                publish(&objects);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registered_discovered_and_temporary_hardware() {
        let registered = json!({"metadata": {"name": "n1"}, "spec": {"interfaces": [{"dhcp": {"mac": "3c:ec:ef:4c:4f:54"}}, {"dhcp": {"mac": "bad"}}]}});
        assert_eq!(
            classify(&registered),
            Seen::Registered(vec!["3c:ec:ef:4c:4f:54".parse().unwrap()])
        );
        let attrs = json!({"product": {"vendor": "Dell Inc.", "name": "R650", "serialNumber": "ABC123"}, "memory": {"total": "64GB"}}).to_string();
        let discovered = json!({"metadata": {"name": "discovery-3c-ec-ef-4c-4f-55", "labels": {AUTO_DISCOVERED: "true"}, "annotations": {AGENT_ATTRIBUTES: attrs}},
                                "spec": {"agentID": "3c:ec:ef:4c:4f:55", "interfaces": [{"dhcp": {"mac": "3c:ec:ef:4c:4f:55"}}]}});
        match classify(&discovered) {
            Seen::Discovered { mac, facts } => {
                assert_eq!(mac.to_string(), "3c:ec:ef:4c:4f:55");
                assert_eq!(facts.serial.as_deref(), Some("ABC123"));
                assert_eq!(facts.memory_bytes, Some(64_000_000_000));
            }
            other => panic!("{other:?}"),
        }
        let temporary = json!({"metadata": {"labels": {TEMPORARY: "true"}}, "spec": {"interfaces": [{"dhcp": {"mac": "3c:ec:ef:4c:4f:56"}}]}});
        assert_eq!(classify(&temporary), Seen::Ignore);
        let no_attrs = json!({"metadata": {"labels": {AUTO_DISCOVERED: "true"}}, "spec": {"interfaces": [{"dhcp": {"mac": "3c:ec:ef:4c:4f:57"}}]}});
        assert!(matches!(classify(&no_attrs), Seen::Discovered { facts, .. } if *facts == Facts::default()));
    }
}
