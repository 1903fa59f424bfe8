//! Registrar and a Kubernetes API (an in-process fake that validates Hardware against the
//! upstream CRD): registered Hardware makes MACs known, Tinkerbell's auto-discovered
//! Hardware becomes a proposal, and the watch survives drops and 410 Gone.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_kube::FakeKube;
use support::*;

fn hardware(name: &str, mac: &str) -> Value {
    json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
        "metadata": {"name": name, "namespace": "tinkerbell"},
        "spec": {"agentID": mac, "interfaces": [{"dhcp": {"mac": mac, "arch": "x86_64", "lease_time": 86400}, "netboot": {"allowPXE": true}}]}
    })
}

async fn start() -> (FakeKube, Registrar) {
    let kube = FakeKube::start().await;
    let client = kube.client();
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.cluster.watch_namespace = "tinkerbell".into();
    let r = Registrar::start_app(dir, config, move |app| app.with_kube_client(client)).await;
    (kube, r)
}

/// A report for `mac`, then: was it refused as already registered?
async fn is_known(r: &Registrar, mac: &str) -> bool {
    r.report(&report_body(mac, json!({"class": "system", "serial": format!("S{}", mac.replace(':', ""))}))).await;
    for _ in 0..100 {
        if let Some(m) = r.machine(mac).await {
            // Settled: either proposed, or refused with the reason.
            let refused = m["machine"]["last_error"].as_str().is_some_and(|e| e.contains("already holds this MAC"));
            if m["machine"]["pending"] == false && (refused || !m["proposal"].is_null()) {
                return refused && m["proposal"].is_null();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{mac} was never processed");
}

/// Waits until the cluster index holds `count` MACs (the status API says), then checks `mac`.
async fn eventually_known(r: &Registrar, kube: &FakeKube, mac: &str, count: u64) {
    for _ in 0..200 {
        if r.get("/api/v1/status").await["known_macs"]["cluster"] == count {
            assert!(is_known(r, mac).await, "{mac}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the index never reached {count} MACs (watches: {})", kube.watch_count());
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_hardware_is_never_proposed_again() {
    let (kube, r) = start().await;
    kube.create(hardware("node01", "3c:ec:ef:4c:4f:54"));
    eventually_known(&r, &kube, "3c:ec:ef:4c:4f:54", 1).await;
    // An unknown one is proposed as usual.
    assert!(!is_known(&r, "3c:ec:ef:4c:4f:99").await);
    r.wait_for_state("3c:ec:ef:4c:4f:99", "proposed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auto_discovered_hardware_becomes_a_proposal_with_its_attributes() {
    let (kube, r) = start().await;
    let attrs = json!({"product": {"vendor": "Dell Inc.", "name": "PowerEdge R650", "serialNumber": "7XK2N13"},
                       "cpu": {"totalCores": 32}, "memory": {"total": "256GB"},
                       "networkInterfaces": [{"name": "eno8303", "mac": "b0:7b:25:de:ad:01", "speed": "1000Mb/s"}]});
    kube.create(json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
        "metadata": {"name": "discovery-b0-7b-25-de-ad-01", "namespace": "tinkerbell",
                     "labels": {"tinkerbell.org/auto-discovered": "true"},
                     "annotations": {"tinkerbell.org/agent-attributes": attrs.to_string()}},
        "spec": {"agentID": "b0:7b:25:de:ad:01", "auto": {"enrollmentEnabled": false}, "interfaces": [{"dhcp": {"mac": "b0:7b:25:de:ad:01"}}]}
    }));
    let m = r.wait_for_state("b0:7b:25:de:ad:01", "proposed").await;
    assert_eq!(m["machine"]["source"], "auto_discovery");
    assert_eq!(m["proposal"]["name"], "7xk2n13");
    assert_eq!(m["machine"]["facts"]["cpu_cores"], 32);
    let yaml = r.remote.read("registrar/b0-7b-25-de-ad-01", "hardware/7xk2n13.yaml").unwrap();
    assert_eq!(documents(&yaml)[0]["spec"]["agentID"], "b0:7b:25:de:ad:01");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_recovers_from_drops_and_410_gone_without_missing_a_mac() {
    let (kube, r) = start().await;
    kube.create(hardware("node-a", "02:00:00:00:0b:01"));
    eventually_known(&r, &kube, "02:00:00:00:0b:01", 1).await;

    // The watch drops; a Hardware appears meanwhile.
    kube.drop_watches();
    kube.create(hardware("node-b", "02:00:00:00:0b:02"));
    eventually_known(&r, &kube, "02:00:00:00:0b:02", 2).await;

    // History expired and the watch drops: resuming gets 410 Gone, and a relist follows.
    let lists = || kube.state.lock().unwrap().requests.iter().filter(|(m, p)| m == "GET" && p.ends_with("/hardware")).count();
    assert_eq!(lists(), 1);
    kube.expire_history();
    kube.drop_watches();
    for _ in 0..200 {
        if lists() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(lists() >= 2, "410 Gone led to a relist ({} lists)", lists());
    kube.create(hardware("node-c", "02:00:00:00:0b:03"));
    eventually_known(&r, &kube, "02:00:00:00:0b:03", 3).await;
    // And a deletion is seen too: the MAC is free again.
    kube.delete("tinkerbell", "node-a");
    for _ in 0..200 {
        if r.get("/api/v1/status").await["known_macs"]["cluster"] == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the deletion was never seen");
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_removes_the_discovery_hardware_and_the_applied_hardware_is_followed() {
    let (kube, r) = start().await;
    let mac = "b0:7b:25:de:ad:02";
    let attrs = json!({"product": {"vendor": "Dell Inc.", "name": "PowerEdge R650", "serialNumber": "7XK2N14"}}).to_string();
    let discovered = |name: &str, mac: &str| json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
        "metadata": {"name": name, "namespace": "tinkerbell",
                     "labels": {"tinkerbell.org/auto-discovered": "true"},
                     "annotations": {"tinkerbell.org/agent-attributes": attrs}},
        "spec": {"agentID": mac, "interfaces": [{"dhcp": {"mac": mac}}]}
    });
    kube.create(discovered("discovery-b0-7b-25-de-ad-02", mac));
    kube.create(discovered("discovery-b0-7b-25-de-ad-03", "b0:7b:25:de:ad:03"));
    r.wait_for_state(mac, "proposed").await;

    let resp = r.post(&format!("/api/v1/machines/{mac}/approve"), json!({"actor": "ops"})).await;
    assert_eq!(resp.status(), 200);
    let names = || kube.state.lock().unwrap().requests.iter().filter(|(m, p)| m == "DELETE" && p.ends_with("/discovery-b0-7b-25-de-ad-02")).count();
    assert_eq!(names(), 1, "the discovery Hardware is deleted at approval, before anything applies the approved one");

    // Flux applies what merged: the machine is followed to "applied".
    let yaml = r.remote.read("main", "hardware/7xk2n14.yaml").expect("merged");
    let approved = documents(&yaml).remove(0);
    kube.create(approved);
    let m = r.wait_for_state(mac, "applied").await;
    assert!(m["transitions"].as_array().unwrap().iter().any(|t| t["to"] == "applied" && t["cause"].as_str().unwrap().contains("tinkerbell/7xk2n14")));
    // The other machine's discovery Hardware is untouched.
    let other = kube.state.lock().unwrap().requests.iter().filter(|(m, p)| m == "DELETE" && p.ends_with("/discovery-b0-7b-25-de-ad-03")).count();
    assert_eq!(other, 0);
}
