//! Issue 16's end-to-end promise, on the shipped binary: fifty unknown machines in Smee's
//! default reservation mode are discovered and provisioned. Each temporary Hardware carries
//! a discovery address and each permanent Hardware a unique production address and a
//! hostname from the pool and the name pattern; a restart half-way changes no allocation;
//! a rejected and a forgotten machine give their addresses back once the quarantine is over.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::binary::{Process, eventually, set};
use support::fake_github::FakeGithub;
use support::fake_kube::FakeKube;
use support::journey::*;
use support::*;

const MACHINES: usize = 50;

fn mac(i: usize) -> String {
    format!("0c:c4:7a:50:00:{i:02x}")
}

/// Smee logs the machine; Registrar boots it into discovery with an address; its action
/// reports. Returns the temporary Hardware's address.
async fn discover_and_report(p: &Process, kube: &FakeKube, i: usize) -> String {
    let m = mac(i);
    smee_sees(kube, &m).await;
    let name = format!("registrar-discover-{}", m.replace(':', "-"));
    let hardware = eventually(30, "the temporary Hardware", || async {
        kube.object("hardware", NS, &name)
    })
    .await;
    let workflow = eventually(30, "the temporary Workflow", || async {
        kube.object("workflows", NS, &name)
    })
    .await;
    let token = workflow["spec"]["hardwareMap"]["report_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut specs = lshw("supermicro-ssg-6029p-x11dph-t.json");
    specs["serial"] = json!(format!("FLEET{i:04}"));
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/reports", p.url))
        .bearer_auth(&token)
        .json(&report_body(&m, specs))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    hardware["spec"]["interfaces"][0]["dhcp"]["ip"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What Registrar says a machine holds: (pool, ip) pairs.
async fn held(p: &Process, i: usize) -> Value {
    machine(p, &mac(i)).await["addresses"].clone()
}

/// The proposed Hardware, as its pull request's branch holds it.
fn proposed_hardware(gh: &FakeGithub, m: &Value) -> Value {
    let (branch, path) = (
        m["proposal"]["branch"].as_str().unwrap(),
        m["proposal"]["path"].as_str().unwrap(),
    );
    let text = gh.repo().read(branch, path).expect("the proposal's file");
    documents(&text).into_iter().find(|d| d["kind"] == "Hardware").unwrap()
}

async fn pool_used(p: &Process, pool: &str) -> u64 {
    let out = p.cli(&["ipam", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    listed["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .and_then(|p| p["used"].as_u64())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_unknown_machines_get_addresses_and_names_and_are_provisioned() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    // A machine registered before Registrar holds rack1's first address.
    kube.create(registered("old-server", "0c:c4:7a:00:00:01", "10.0.10.11"));
    let templates = templates_named(dir.path(), "node-{{ seq | pad(4) }}");
    let mut p = start_on_cluster(dir.path(), &gh, &kube, |c| {
        set(c, "templates_dir", json!(templates.display().to_string()));
        set(c, "forge.github.mutation_interval_ms", json!(0));
        set(c, "cluster.discovery.max_machines", json!(MACHINES + 10));
        set(
            c,
            "ipam",
            json!({
                "discovery": {"name": "discovery", "cidr": "10.0.9.0/24", "ranges": ["10.0.9.100-10.0.9.199"], "gateway": "10.0.9.1", "lease_seconds": 600},
                "pools": [{"name": "rack1", "cidr": "10.0.10.0/24", "ranges": ["10.0.10.11-10.0.10.90"], "gateway": "10.0.10.1"}],
                "quarantine_seconds": 3
            }),
        );
    })
    .await;

    // Half of them, then a restart, then the rest.
    let mut discovery = Vec::new();
    for i in 0..MACHINES / 2 {
        discovery.push(discover_and_report(&p, &kube, i).await);
    }
    for i in 0..MACHINES / 2 {
        state_reached(&p, &mac(i), "proposed").await;
    }
    let mut before = Vec::new();
    for i in 0..MACHINES / 2 {
        before.push(held(&p, i).await);
    }
    p.restart().await;
    for (i, held_before) in before.iter().enumerate() {
        assert_eq!(
            &held(&p, i).await,
            held_before,
            "{}'s addresses after the restart",
            mac(i)
        );
    }
    for i in MACHINES / 2..MACHINES {
        discovery.push(discover_and_report(&p, &kube, i).await);
    }

    let (mut production, mut names) = (BTreeSet::new(), BTreeSet::new());
    let mut paths = Vec::new();
    for (i, discovery_ip) in discovery.iter().enumerate() {
        assert!(discovery_ip.starts_with("10.0.9."), "{}: {discovery_ip:?}", mac(i));
        let m = state_reached(&p, &mac(i), "proposed").await;
        let hardware = proposed_hardware(&gh, &m);
        let dhcp = &hardware["spec"]["interfaces"][0]["dhcp"];
        let ip = dhcp["ip"]["address"].as_str().unwrap().to_string();
        let name = hardware["metadata"]["name"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.0.10.") && ip != "10.0.10.11", "{}: {ip}", mac(i));
        assert_eq!(dhcp["hostname"], json!(name), "the hostname is the machine's name");
        production.insert(ip);
        names.insert(name);
        paths.push(m["proposal"]["path"].as_str().unwrap().to_string());
    }
    assert_eq!(
        discovery.iter().collect::<BTreeSet<_>>().len(),
        MACHINES,
        "discovery addresses are unique"
    );
    assert_eq!(production.len(), MACHINES, "production addresses are unique");
    let expected_names: BTreeSet<String> = (1..=MACHINES).map(|n| format!("node-{n:04}")).collect();
    assert_eq!(names, expected_names);

    // The reviewers merge all but the last two; Flux applies; the Workflows succeed.
    let provisioned = MACHINES - 2;
    for i in 0..provisioned {
        let number = machine(&p, &mac(i)).await["proposal"]["number"].as_u64().unwrap();
        assert!(gh.merge(number, "reviewer").await.status().is_success());
    }
    let mut hardware_names = Vec::new();
    for (i, path) in paths.iter().enumerate().take(provisioned) {
        state_reached(&p, &mac(i), "approved").await;
        hardware_names.push(apply_merged(&gh, &kube, path));
    }
    for (i, name) in hardware_names.iter().enumerate() {
        state_reached(&p, &mac(i), "applied").await;
        kube.set_workflow_status(NS, name, json!({"state": "SUCCESS"}));
    }
    for i in 0..provisioned {
        let m = state_reached(&p, &mac(i), "provisioned").await;
        assert!(
            m["addresses"].as_array().unwrap().iter().all(|a| a["pool"] == "rack1"),
            "only its permanent address is left: {m:#}"
        );
    }

    // One machine is rejected; another is rejected, then forgotten. Their addresses rest for
    // the quarantine, then go back to the pools.
    let url = p.url.clone();
    let operator = |path: String| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{url}{path}"))
                .bearer_auth(OPERATOR_TOKEN)
                .json(&json!({"actor": "ops", "reason": "not ours"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (rejected, forgotten) = (mac(MACHINES - 2), mac(MACHINES - 1));
    assert_eq!(operator(format!("/api/v1/machines/{rejected}/reject")).await, 200);
    assert_eq!(operator(format!("/api/v1/machines/{forgotten}/reject")).await, 200);
    console_forget(&p.url, &forgotten).await;
    assert_eq!(held(&p, MACHINES - 2).await, json!([]));
    eventually(30, "the quarantine to end", || async {
        (pool_used(&p, "rack1").await == provisioned as u64 && pool_used(&p, "discovery").await == 0).then_some(())
    })
    .await;
    assert!(p.stop().success());
}
