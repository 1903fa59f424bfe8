//! Issue 18 on the shipped binary: a provisioned machine booted again, on purpose.
//!
//! Re-inventory on demand: a provisioned machine whose rule
//! opts in is booted into discovery again on its own Hardware (a Workflow with a token of
//! its own, netboot toggled for the Workflow's length, Rufio power-cycling it through its
//! BMC); its report brings it back to "provisioned" and the discovery action hears "reboot";
//! the disk it gained is proposed as an update with the difference in words; merged and
//! applied, the machine stays provisioned. A machine whose rule does not opt in is refused
//! with the reason, and a re-inventory whose Workflow fails says why and changes nothing.
//!
//! Re-provisioning: asked for, it is a pull request that switches netboot back on with a
//! Workflow of a new name (Tinkerbell never runs a finished one again); merged, the machine
//! is `applied` and follows that Workflow — not the finished one — to `provisioned`, and
//! netboot is proposed off again.

mod support;

use serde_json::{Value, json};
use support::binary::{Process, eventually, set};
use support::fake_github::{FakeGithub, Pull};
use support::fake_kube::FakeKube;
use support::journey::{NS, apply_merged, machine, next_step, start_on_cluster, state_reached, step};
use support::{OPERATOR_TOKEN, copy_dir, documents, lshw, manifest_dir, report_body};

const MAC: &str = "0c:c4:7a:18:00:07";
const DASHED: &str = "0c-c4-7a-18-00-07";
const LSHW: &str = "supermicro-ssg-6029p-x11dph-t.json";

/// The shipped templates, with a first rule that opts machines of `serial` into re-inventory
/// when `opt_in` (else the rule is there without it).
fn templates(dir: &std::path::Path, serial: &str, opt_in: bool) -> std::path::PathBuf {
    let templates = dir.join("hardware-templates");
    std::fs::create_dir_all(&templates).unwrap();
    copy_dir(&manifest_dir().join("hardware-templates"), &templates);
    let rules = std::fs::read_to_string(templates.join("rules.yaml")).unwrap();
    let rule = format!(
        "rules:\n  - name: inventoried\n    when: 'facts.serial == \"{serial}\"'\n    values:\n      reinventory: {opt_in}\n"
    );
    std::fs::write(templates.join("rules.yaml"), rules.replacen("rules:\n", &rule, 1)).unwrap();
    templates
}

async fn ask(p: &Process) -> (u16, Value) {
    post(p, "reinventory").await
}

/// `POST /api/v1/machines/{MAC}/{action}` as an operator.
async fn post(p: &Process, action: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/machines/{MAC}/{action}", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"actor": "ops"}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn open_pull(gh: &FakeGithub, prefix: &str, not: &[u64]) -> Pull {
    eventually(60, &format!("an open pull request from {prefix}"), || async {
        gh.pulls()
            .into_iter()
            .find(|p| p.open && p.head.starts_with(prefix) && !not.contains(&p.number))
    })
    .await
}

fn causes(m: &Value) -> Vec<String> {
    m["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cause"].as_str().unwrap().to_string())
        .collect()
}

/// A machine with a BMC registered, applied and provisioned, with netboot switched off:
/// its Hardware's name, its file, and the netboot pull request.
async fn provisioned(p: &Process, gh: &FakeGithub, kube: &FakeKube) -> (String, String, Pull) {
    step("a machine with a BMC is registered, applied and provisioned; netboot goes off");
    support::journey::report_with_bmc(&p.url, MAC, lshw(LSHW), "192.0.2.7").await;
    let registration = open_pull(gh, &format!("registrar/{DASHED}"), &[]).await;
    let path = state_reached(p, MAC, "proposed").await["proposal"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(gh.merge(registration.number, "reviewer").await.status().is_success());
    state_reached(p, MAC, "approved").await;
    let name = apply_merged(gh, kube, &path);
    state_reached(p, MAC, "applied").await;
    kube.set_workflow_status(NS, &name, json!({"state": "SUCCESS"}));
    state_reached(p, MAC, "provisioned").await;
    let netboot = open_pull(gh, &format!("registrar/{DASHED}-update-"), &[]).await;
    assert!(gh.merge(netboot.number, "reviewer").await.status().is_success());
    eventually(60, "the netboot change to be merged", || async {
        (machine(p, MAC).await["proposal"]["state"] == "merged").then_some(())
    })
    .await;

    (name, path, netboot)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provisioned_machine_is_inventoried_again_and_its_new_disk_is_proposed() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    let serial = lshw(LSHW)["serial"].as_str().unwrap().to_string();
    let templates_dir = templates(dir.path(), &serial, false);
    let mut p = start_on_cluster(dir.path(), &gh, &kube, |c| {
        set(c, "forge.github.mutation_interval_ms", json!(0));
        set(c, "auth.shared_report_token", json!(true));
        set(c, "discovery.bmc_networks", json!(["192.0.2.0/24"]));
        set(c, "templates_dir", json!(templates_dir.display().to_string()));
    })
    .await;

    let (name, path, netboot) = provisioned(&p, &gh, &kube).await;

    step("its rule does not opt in: refused, with the reason, and nothing boots");
    let (status, body) = ask(&p).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("reinventory: true"),
        "{body}"
    );
    assert_eq!(machine(&p, MAC).await["machine"]["state"], "provisioned");
    let workflow_name = format!("registrar-inventory-{DASHED}");
    assert!(kube.object("workflows", NS, &workflow_name).is_none());

    step("the operator opts the rule in and restarts; re-inventory from the command line");
    templates(dir.path(), &serial, true);
    p.restart().await;
    let out = p.cli(&["reinventory", MAC]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    state_reached(&p, MAC, "inventorying").await;
    let workflow = eventually(30, "the re-inventory Workflow", || async {
        kube.object("workflows", NS, &workflow_name)
    })
    .await;
    assert_eq!(workflow["spec"]["hardwareRef"], name.as_str(), "its own Hardware");
    assert_eq!(workflow["spec"]["templateRef"], "registrar-reinventory");
    assert_eq!(workflow["spec"]["bootOptions"]["toggleAllowNetboot"], true);
    assert_eq!(
        workflow["spec"]["bootOptions"]["bootMode"], "netboot",
        "Rufio power-cycles it through its BMC"
    );
    assert!(
        kube.object("hardware", NS, &format!("registrar-discover-{DASHED}"))
            .is_none(),
        "no second Hardware with its MAC"
    );
    let token = workflow["spec"]["hardwareMap"]["report_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(next_step(&p, MAC, &token).await, "wait");

    step("booted into discovery, it reports a disk it gained, with the Workflow's token");
    let mut body = report_body(MAC, support::with_new_disk(lshw(LSHW), "S6NEWDISK0007"));
    body["bmc_address"] = json!("192.0.2.7");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/reports", p.url))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let back = state_reached(&p, MAC, "provisioned").await;
    assert!(
        causes(&back).iter().any(|c| c.starts_with("re-inventory reported")),
        "{:?}",
        causes(&back)
    );
    assert_eq!(
        next_step(&p, MAC, &token).await,
        "reboot",
        "it goes back to its own disk"
    );

    step("the difference is proposed as an update of the same machine, in words");
    let drift = open_pull(&gh, &format!("registrar/{DASHED}-update-"), &[netboot.number]).await;
    assert!(
        drift.title.contains("disk added: /dev/nvme2n1 3.84 TB"),
        "{}",
        drift.title
    );
    let proposed = documents(&gh.repo().read(&drift.head, &path).unwrap())
        .into_iter()
        .find(|d| d["kind"] == "Hardware")
        .unwrap();
    assert_eq!(proposed["metadata"]["name"], name.as_str());
    assert_eq!(
        proposed["spec"]["interfaces"][0]["netboot"]["allowPXE"], false,
        "netboot stays off"
    );

    step("the Workflow ends (netboot switched back off, the machine rebooted): it is removed");
    kube.set_workflow_status(NS, &workflow_name, json!({"state": "SUCCESS"}));
    eventually(30, "the finished re-inventory Workflow to be removed", || async {
        kube.object("workflows", NS, &workflow_name).is_none().then_some(())
    })
    .await;

    step("merged and applied: the machine stays provisioned, with the disk in git");
    assert!(gh.merge(drift.number, "reviewer").await.status().is_success());
    eventually(60, "the update to be merged", || async {
        let m = machine(&p, MAC).await;
        (m["proposal"]["state"] == "merged" && m["proposal"]["number"] == drift.number).then_some(())
    })
    .await;
    assert!(gh.repo().read("main", &path).unwrap().contains("/dev/nvme2n1"));
    apply_merged(&gh, &kube, &path);
    let hardware = kube.object("hardware", NS, &name).unwrap();
    assert!(hardware.to_string().contains("/dev/nvme2n1"), "{hardware}");
    let after = machine(&p, MAC).await;
    assert_eq!(after["machine"]["state"], "provisioned");
    assert!(after["machine"]["last_error"].is_null(), "{}", after["machine"]);

    step("a re-inventory whose Workflow fails says why and leaves the machine provisioned");
    let (status, body) = ask(&p).await;
    assert_eq!(status, 200, "{body}");
    let second = eventually(30, "a new re-inventory Workflow", || async {
        kube.object("workflows", NS, &workflow_name)
    })
    .await;
    assert_ne!(
        second["spec"]["hardwareMap"]["report_token"],
        token.as_str(),
        "a token of its own"
    );
    kube.set_workflow_status(
        NS,
        &workflow_name,
        json!({"state": "FAILED", "tasks": [{"name": "reinventory", "actions": [{"name": "report", "state": "FAILED", "message": "no route to registrar"}]}]}),
    );
    let failed = eventually(30, "the failure to be shown", || async {
        let m = machine(&p, MAC).await;
        (m["machine"]["state"] == "provisioned" && !m["machine"]["last_error"].is_null()).then_some(m)
    })
    .await;
    assert!(
        failed["machine"]["last_error"]
            .as_str()
            .unwrap()
            .contains("no route to registrar"),
        "{}",
        failed["machine"]
    );
    eventually(30, "the failed Workflow to be removed", || async {
        kube.object("workflows", NS, &workflow_name).is_none().then_some(())
    })
    .await;
    assert!(p.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provisioned_machine_is_provisioned_again_with_a_workflow_of_a_new_name() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    let mut p = start_on_cluster(dir.path(), &gh, &kube, |c| {
        set(c, "forge.github.mutation_interval_ms", json!(0));
        set(c, "auth.shared_report_token", json!(true));
        set(c, "discovery.bmc_networks", json!(["192.0.2.0/24"]));
    })
    .await;
    let (name, path, netboot) = provisioned(&p, &gh, &kube).await;

    step("re-provisioning is asked for: a pull request with netboot on and a new Workflow");
    let (status, body) = post(&p, "reprovision").await;
    assert_eq!(status, 200, "{body}");
    let again = open_pull(&gh, &format!("registrar/{DASHED}-reprovision-"), &[]).await;
    assert_eq!(again.title, format!("Re-provision {name}"));
    assert!(again.body.contains("re-images"), "{}", again.body);
    let next_round = format!("{name}-r1");
    let manifest = documents(&gh.repo().read(&again.head, &path).unwrap());
    let hardware = manifest.iter().find(|d| d["kind"] == "Hardware").unwrap();
    assert_eq!(hardware["spec"]["interfaces"][0]["netboot"]["allowPXE"], true);
    let workflow = manifest.iter().find(|d| d["kind"] == "Workflow").unwrap();
    assert_eq!(workflow["metadata"]["name"], next_round.as_str());
    assert_eq!(workflow["spec"]["hardwareRef"], name.as_str());
    assert_eq!(
        machine(&p, MAC).await["machine"]["state"],
        "provisioned",
        "nothing changes before the merge"
    );

    step("merged: applied again, and it follows the new Workflow, not the finished one");
    assert!(gh.merge(again.number, "reviewer").await.status().is_success());
    let applied = state_reached(&p, MAC, "applied").await;
    assert!(
        causes(&applied).iter().any(|c| c.starts_with("re-provision: ")),
        "{:?}",
        causes(&applied)
    );
    let (status, body) = post(&p, "reprovision").await;
    assert_eq!(status, 409, "only a provisioned or failed machine: {body}");
    apply_merged(&gh, &kube, &path);
    kube.set_workflow_status(NS, &next_round, json!({"state": "SUCCESS"}));
    let done = state_reached(&p, MAC, "provisioned").await;
    let succeeded: Vec<String> = causes(&done).into_iter().filter(|c| c.ends_with("succeeded")).collect();
    assert_eq!(
        succeeded,
        vec![
            format!("Workflow {NS}/{name} succeeded"),
            format!("Workflow {NS}/{next_round} succeeded")
        ],
        "round 0, then round 1: never the finished one again"
    );

    step("provisioned again: netboot is proposed off again, the Workflow keeps its new name");
    let off = open_pull(&gh, &format!("registrar/{DASHED}-update-"), &[netboot.number]).await;
    let manifest = documents(&gh.repo().read(&off.head, &path).unwrap());
    let hardware = manifest.iter().find(|d| d["kind"] == "Hardware").unwrap();
    assert_eq!(hardware["spec"]["interfaces"][0]["netboot"]["allowPXE"], false);
    let workflow = manifest.iter().find(|d| d["kind"] == "Workflow").unwrap();
    assert_eq!(workflow["metadata"]["name"], next_round.as_str());
    assert!(p.stop().success());
}
