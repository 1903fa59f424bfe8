//! Issue 18 on the shipped binary: a machine's life after "provisioned". Its netboot is
//! switched off by a follow-up pull request; new hardware it reports is proposed as a change
//! of the same machine with the difference in words (and facts its manifest does not use
//! propose nothing); a change a reviewer closes leaves the machine as it was; and a
//! decommission removes its files, and once merged and pruned from the cluster frees its
//! address and keeps its history. On the embedded default (no cluster), the merge of a
//! decommission finishes it. A new board takes over its old board's file with a Workflow
//! of a new name, which is the one it is followed by, and the old board's open change is
//! closed as superseded.

mod support;

use serde_json::{Value, json};
use support::binary::{Process, eventually, example, listen_on, set, token_env};
use support::fake_github::{FakeGithub, Pull};
use support::fake_kube::FakeKube;
use support::journey::{NS, apply_merged, machine, post_report, start_on_cluster, state_reached, step};
use support::{OPERATOR_TOKEN, REPORT_TOKEN, documents, lshw, report_body};

const MAC: &str = "0c:c4:7a:18:00:01";
const DASHED: &str = "0c-c4-7a-18-00-01";
const LSHW: &str = "supermicro-ssg-6029p-x11dph-t.json";

/// The same inventory with a little more memory: nothing the manifest says changes.
fn with_more_memory(mut specs: Value) -> Value {
    fn grow(node: &mut Value) -> bool {
        if node["class"] == "memory" && node["id"] == "memory" {
            let size = node["size"].as_u64().unwrap();
            node["size"] = json!(size + (1u64 << 30));
            return true;
        }
        node["children"].as_array_mut().is_some_and(|c| c.iter_mut().any(grow))
    }
    assert!(grow(&mut specs), "the fixture has system memory");
    specs
}

/// The same machine on a new motherboard: same serial, every onboard NIC a new MAC.
fn on_a_new_board(mut specs: Value) -> Value {
    fn swap(node: &mut Value, n: &mut u8) {
        if node["class"] == "network" && node["serial"].is_string() {
            *n += 1;
            node["serial"] = json!(format!("0c:c4:7a:99:00:{n:02x}"));
        }
        for child in node["children"].as_array_mut().into_iter().flatten() {
            swap(child, n);
        }
    }
    let mut n = 0;
    swap(&mut specs, &mut n);
    assert!(n > 0, "the fixture has network interfaces");
    specs
}

/// A report of `specs` for the machine, with its BMC at `bmc`.
async fn report(p: &Process, specs: Value, bmc: &str) {
    support::journey::report_with_bmc(&p.url, MAC, specs, bmc).await;
}

/// The binary on examples/all.yaml against `gh` and `kube`, with one address pool (rack1,
/// a two-second quarantine), BMCs allowed in 192.0.2.0/24, and the shared report token
/// on: reports here come from a discovery script of the operator's own (a later boot).
async fn start_with_rack(dir: &std::path::Path, gh: &FakeGithub, kube: &FakeKube) -> Process {
    start_on_cluster(dir, gh, kube, |c| {
        set(c, "forge.github.mutation_interval_ms", json!(0));
        set(c, "auth.shared_report_token", json!(true));
        set(c, "discovery.bmc_networks", json!(["192.0.2.0/24"]));
        set(
            c,
            "ipam",
            json!({
                "pools": [{"name": "rack1", "cidr": "10.0.18.0/24", "ranges": ["10.0.18.10-10.0.18.20"], "gateway": "10.0.18.1"}],
                "quarantine_seconds": 2
            }),
        );
    })
    .await
}

/// The open pull request from one of this machine's change branches of `kind`.
async fn change_pull(gh: &FakeGithub, kind: &str) -> Pull {
    let prefix = format!("registrar/{DASHED}-{kind}-");
    eventually(60, &format!("the {kind} pull request"), || async {
        gh.pulls().into_iter().find(|p| p.head.starts_with(&prefix) && p.open)
    })
    .await
}

fn hardware_of(manifest: &str) -> Value {
    documents(manifest)
        .into_iter()
        .find(|d| d["kind"] == "Hardware")
        .expect("a Hardware")
}

/// What the machine's timeline says, cause by cause.
fn causes(m: &Value) -> Vec<String> {
    m["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cause"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provisioned_machine_changes_through_pull_requests_until_it_is_decommissioned() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    let mut p = start_with_rack(dir.path(), &gh, &kube).await;

    step("a machine reports, is proposed, merged, applied and provisioned");
    report(&p, lshw(LSHW), "192.0.2.18").await;
    let registration = eventually(60, "the registration pull request", || async {
        gh.pulls()
            .into_iter()
            .find(|p| p.head == format!("registrar/{DASHED}") && p.open)
    })
    .await;
    let proposed = state_reached(&p, MAC, "proposed").await;
    let path = proposed["proposal"]["path"].as_str().unwrap().to_string();
    assert!(gh.merge(registration.number, "reviewer").await.status().is_success());
    state_reached(&p, MAC, "approved").await;
    let name = apply_merged(&gh, &kube, &path);
    state_reached(&p, MAC, "applied").await;
    kube.set_workflow_status(NS, &name, json!({"state": "SUCCESS"}));
    state_reached(&p, MAC, "provisioned").await;
    let registered = hardware_of(&gh.repo().read("main", &path).unwrap());
    assert_eq!(registered["spec"]["interfaces"][0]["netboot"]["allowPXE"], true);
    let address = registered["spec"]["interfaces"][0]["dhcp"]["ip"]["address"].clone();
    assert_eq!(address, "10.0.18.10");

    step("provisioned: a follow-up pull request switches netboot off");
    let netboot = change_pull(&gh, "update").await;
    assert!(netboot.title.contains("netboot off"), "{}", netboot.title);
    let proposed = hardware_of(&gh.repo().read(&netboot.head, &path).unwrap());
    assert_eq!(proposed["spec"]["interfaces"][0]["netboot"]["allowPXE"], false);
    assert_eq!(
        proposed["metadata"]["name"],
        name.as_str(),
        "the machine keeps its name"
    );
    assert_eq!(
        proposed["spec"]["interfaces"][0]["dhcp"]["ip"]["address"], address,
        "and its address"
    );
    assert!(gh.merge(netboot.number, "reviewer").await.status().is_success());
    eventually(60, "the netboot change to be recorded merged", || async {
        let m = machine(&p, MAC).await;
        (m["proposal"]["state"] == "merged").then_some(())
    })
    .await;
    let on_main = hardware_of(&gh.repo().read("main", &path).unwrap());
    assert_eq!(on_main["spec"]["interfaces"][0]["netboot"]["allowPXE"], false);
    assert_eq!(
        machine(&p, MAC).await["machine"]["state"],
        "provisioned",
        "an update changes no state"
    );

    step("facts the manifest does not use (more memory) propose nothing");
    let memory = machine(&p, MAC).await["machine"]["facts"]["memory_bytes"]
        .as_u64()
        .unwrap();
    report(&p, with_more_memory(lshw(LSHW)), "192.0.2.18").await;
    eventually(60, "the new facts to be taken and synced", || async {
        let m = machine(&p, MAC).await;
        let grown = m["machine"]["facts"]["memory_bytes"].as_u64() > Some(memory);
        (grown && m["machine"]["pending"] == false).then_some(())
    })
    .await;
    let changes: Vec<Pull> = gh
        .pulls()
        .into_iter()
        .filter(|p| p.head.starts_with(&format!("registrar/{DASHED}-")))
        .collect();
    assert_eq!(changes.len(), 1, "only the netboot change: {changes:?}");

    step("a disk added and the BMC moved: proposed as a change of the same machine, in words");
    report(
        &p,
        support::with_new_disk(with_more_memory(lshw(LSHW)), "S6NEWDISK0001"),
        "192.0.2.19",
    )
    .await;
    let drift = eventually(60, "the drift pull request", || async {
        gh.pulls().into_iter().find(|p| {
            p.open && p.head.starts_with(&format!("registrar/{DASHED}-update-")) && p.number != netboot.number
        })
    })
    .await;
    assert!(
        drift.title.contains("disk added: /dev/nvme2n1 3.84 TB"),
        "{}",
        drift.title
    );
    assert!(
        drift.body.contains("- disk added\\: /dev/nvme2n1 3\\.84 TB"),
        "{}",
        drift.body
    );
    assert!(
        !drift.body.contains("Merging registers it"),
        "an update is no registration: {}",
        drift.body
    );
    // A moved BMC is where Rufio would send the credentials: said, for review (issue 17).
    assert!(
        drift
            .body
            .contains("- BMC address changed\\: 192\\.0\\.2\\.18 → 192\\.0\\.2\\.19"),
        "{}",
        drift.body
    );
    let bmc = documents(&gh.repo().read(&drift.head, &path).unwrap())
        .into_iter()
        .find(|d| d["kind"] == "Machine")
        .expect("its BMC object");
    assert_eq!(bmc["spec"]["connection"]["host"], "192.0.2.19");
    let disks = hardware_of(&gh.repo().read(&drift.head, &path).unwrap())["spec"]["disks"].clone();
    assert!(
        disks.as_array().unwrap().iter().any(|d| d["device"] == "/dev/nvme2n1"),
        "{disks}"
    );
    assert!(
        gh.pulls()
            .iter()
            .all(|p| !(p.open && p.head == format!("registrar/{DASHED}"))),
        "never proposed as a stranger"
    );

    step("the reviewer closes it: only the change is refused");
    assert!(gh.close(drift.number, "reviewer").await.status().is_success());
    let after = eventually(60, "the closed change to be recorded", || async {
        let m = machine(&p, MAC).await;
        (m["proposal"]["state"] == "closed").then_some(m)
    })
    .await;
    assert_eq!(after["machine"]["state"], "provisioned");
    assert_eq!(after["machine"]["suppressed"], false);
    assert!(
        causes(&after).iter().any(|c| c.starts_with("update closed")),
        "{:?}",
        causes(&after)
    );
    assert!(!gh.repo().read("main", &path).unwrap().contains("nvme2n1"));

    step("decommission, from the command line");
    let out = p.cli(&["decommission", MAC]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let removal = change_pull(&gh, "decommission").await;
    assert_eq!(removal.title, format!("Decommission {name}"));
    assert!(
        gh.repo().read(&removal.head, &path).is_none(),
        "the branch removes the file"
    );
    assert!(gh.repo().read("main", &path).is_some());
    assert!(gh.merge(removal.number, "reviewer").await.status().is_success());
    state_reached(&p, MAC, "decommissioning").await;
    assert!(gh.repo().read("main", &path).is_none());
    assert_eq!(
        machine(&p, MAC).await["addresses"].as_array().map(Vec::len),
        Some(1),
        "held until pruned"
    );

    step("Flux prunes the Hardware: decommissioned, address free after the quarantine, history kept");
    kube.delete(NS, &name);
    let done = state_reached(&p, MAC, "decommissioned").await;
    let history = causes(&done);
    for expected in ["facts received", "merged", "update", "decommission"] {
        assert!(
            history.iter().any(|c| c.contains(expected)),
            "{expected:?} in {history:?}"
        );
    }
    eventually(30, "the address to return to its pool", || async {
        let out = p.cli(&["ipam", "list"]);
        let listed: Value = serde_json::from_slice(&out.stdout).ok()?;
        (listed["pools"][0]["used"] == 0).then_some(())
    })
    .await;
    assert!(p.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn on_the_embedded_default_a_merged_decommission_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = example("local.yaml");
    let url = listen_on(&mut config);
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;
    let client = reqwest::Client::new();
    let operator = |path: &str| {
        client
            .post(format!("{url}{path}"))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({"actor": "ops"}))
    };

    assert_eq!(post_report(&url, MAC, LSHW).await.status(), 202);
    let proposed = state_reached(&p, MAC, "proposed").await;
    let path = proposed["proposal"]["path"].as_str().unwrap().to_string();
    let resp = operator(&format!("/api/v1/machines/{MAC}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let gitops = support::Repo::at(&dir.path().join("state/gitops.git"));
    assert!(gitops.read("main", &path).is_some());

    // A machine not yet in git cannot be decommissioned: 409, and nothing changes.
    let other = "0c:c4:7a:18:00:02";
    assert_eq!(post_report(&url, other, LSHW).await.status(), 202);
    state_reached(&p, other, "proposed").await;
    let resp = operator(&format!("/api/v1/machines/{other}/decommission"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409, "{}", resp.text().await.unwrap());

    let resp = operator(&format!("/api/v1/machines/{MAC}/decommission"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let asked = eventually(60, "the decommission proposal", || async {
        let m = machine(&p, MAC).await;
        (m["proposal"]["kind"] == "decommission" && m["proposal"]["state"] == "open").then_some(m)
    })
    .await;
    let branch = asked["proposal"]["branch"].as_str().unwrap().to_string();
    assert!(
        branch.starts_with(&format!("registrar/{DASHED}-decommission-")),
        "{branch}"
    );
    assert!(gitops.read(&branch, &path).is_none());
    let resp = operator(&format!("/api/v1/machines/{MAC}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let done = state_reached(&p, MAC, "decommissioned").await;
    assert!(gitops.read("main", &path).is_none(), "its file is gone from the base");
    assert!(
        causes(&done).iter().any(|c| c.contains("no cluster is watched")),
        "{:?}",
        causes(&done)
    );
    assert!(p.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_motherboard_swap_is_proposed_as_a_change_of_the_known_machine() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    let mut p = start_with_rack(dir.path(), &gh, &kube).await;
    step("the old board is registered and applied");
    assert_eq!(post_report(&p.url, MAC, LSHW).await.status(), 202);
    let registration = eventually(60, "the registration pull request", || async {
        gh.pulls()
            .into_iter()
            .find(|p| p.head == format!("registrar/{DASHED}") && p.open)
    })
    .await;
    let path = state_reached(&p, MAC, "proposed").await["proposal"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(gh.merge(registration.number, "reviewer").await.status().is_success());
    state_reached(&p, MAC, "approved").await;
    let name = apply_merged(&gh, &kube, &path);
    state_reached(&p, MAC, "applied").await;
    kube.set_workflow_status(NS, &name, json!({"state": "SUCCESS"}));
    state_reached(&p, MAC, "provisioned").await;
    let netboot = change_pull(&gh, "update").await;

    step("a new board reports the same serial from other MACs");
    let new_mac = "0c:c4:7a:99:00:01";
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/reports", p.url))
        .bearer_auth(REPORT_TOKEN)
        .json(&report_body(new_mac, on_a_new_board(lshw(LSHW))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let swap = eventually(60, "the replacement pull request", || async {
        gh.pulls()
            .into_iter()
            .find(|p| p.head == "registrar/0c-c4-7a-99-00-01" && p.open)
    })
    .await;
    assert_eq!(swap.title, format!("Replace {name}'s board: {MAC} → {new_mac}"));
    assert!(swap.body.contains("⚠ Replacement"), "{}", swap.body);
    let proposed = hardware_of(&gh.repo().read(&swap.head, &path).expect("the old machine's file"));
    assert_eq!(proposed["metadata"]["name"], name.as_str());
    assert_eq!(proposed["spec"]["agentID"], new_mac);
    assert_eq!(proposed["spec"]["interfaces"][0]["dhcp"]["ip"]["address"], "10.0.18.10");
    assert_eq!(
        gh.repo()
            .read(&swap.head, &path.replace(&name, "node-0c-c4-7a-99-00-01")),
        None,
        "no second file for a stranger"
    );

    step("merged: the new board is approved with the old address; the old one decommissioned");
    assert!(gh.merge(swap.number, "reviewer").await.status().is_success());
    let approved = state_reached(&p, new_mac, "approved").await;
    assert_eq!(approved["addresses"][0]["ip"], "10.0.18.10", "{approved:#}");
    let old = state_reached(&p, MAC, "decommissioned").await;
    assert!(
        causes(&old).iter().any(|c| c.contains("replaced by")),
        "{:?}",
        causes(&old)
    );
    assert_eq!(old["addresses"].as_array().map(Vec::len), Some(0));
    // The old board's netboot change would rewrite the file the new board holds now.
    eventually(60, "the old board's open change to be closed", || async {
        gh.pulls()
            .into_iter()
            .find(|p| p.number == netboot.number && !p.open && !p.merged)
    })
    .await;
    let old = machine(&p, MAC).await;
    assert_eq!(old["proposal"]["state"], "closed", "{old:#}");
    assert!(
        causes(&old)
            .iter()
            .any(|c| c.contains("superseded: its board was replaced")),
        "{:?}",
        causes(&old)
    );
    apply_merged(&gh, &kube, &path);
    state_reached(&p, new_mac, "applied").await;

    step("the new board is provisioned by a Workflow of its own, not the old board's");
    let workflow = documents(&gh.repo().read("main", &path).unwrap())
        .into_iter()
        .find(|d| d["kind"] == "Workflow")
        .expect("a Workflow");
    let round = format!("{name}-r1");
    assert_eq!(workflow["metadata"]["name"], round.as_str());
    kube.set_workflow_status(NS, &round, json!({"state": "SUCCESS"}));
    let done = state_reached(&p, new_mac, "provisioned").await;
    let succeeded: Vec<String> = causes(&done).into_iter().filter(|c| c.ends_with("succeeded")).collect();
    assert_eq!(
        succeeded,
        vec![format!("Workflow {NS}/{round} succeeded")],
        "the new board is followed by its own Workflow"
    );
    assert!(p.stop().success());
}
