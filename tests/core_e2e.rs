//! The core conversation, end to end over real HTTP and a real bare repository:
//! a machine reports → a branch with its Hardware → a reviewer approves or rejects.

mod support;

use serde_json::json;
use support::*;

const MAC: &str = "ac:1f:6b:dc:19:c2";
const BRANCH: &str = "registrar/ac-1f-6b-dc-19-c2";
/// A machine of its own, reported to prove that the proposal worker has run a pass.
const PROBE: &str = "02:00:00:00:99:01";
const PROBE_BRANCH: &str = "registrar/02-00-00-00-99-01";

#[tokio::test(flavor = "multi_thread")]
async fn report_then_approve_puts_a_valid_hardware_on_main() {
    let r = Registrar::start().await;
    // Upper case, as `ip link` never prints but some scripts do.
    let resp = r
        .report(&report_body(
            "AC:1F:6B:DC:19:C2",
            lshw("supermicro-ssg-6029p-x11dph-t.json"),
        ))
        .await;
    assert_eq!(resp.status(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["mac"], MAC);
    assert_eq!(body["queued"], true);

    let m = r.wait_for_state(MAC, "proposed").await;
    assert_eq!(m["proposal"]["branch"], BRANCH);
    assert_eq!(m["proposal"]["path"], "hardware/a401031x0502795.yaml");
    assert_eq!(m["proposal"]["state"], "open");

    // The branch holds a Hardware that the upstream CRD accepts, and names this machine.
    let yaml = r
        .remote
        .read(BRANCH, "hardware/a401031x0502795.yaml")
        .expect("manifest on the proposal branch");
    let docs = documents(&yaml);
    let hardware = &docs[0];
    assert!(
        UpstreamSchema::load("tinkerbell.org_hardware.yaml")
            .errors(hardware)
            .is_empty(),
        "{yaml}"
    );
    assert!(
        UpstreamSchema::load("tinkerbell.org_workflows.yaml")
            .errors(&docs[1])
            .is_empty(),
        "{yaml}"
    );
    assert_eq!(hardware["spec"]["agentID"], MAC);
    assert_eq!(hardware["spec"]["interfaces"][0]["dhcp"]["mac"], MAC);
    assert_eq!(hardware["spec"]["interfaces"][0]["dhcp"]["lease_time"], 86400);
    assert_eq!(hardware["spec"]["interfaces"][0]["netboot"]["allowPXE"], true);
    assert!(
        r.remote.read("main", "hardware/a401031x0502795.yaml").is_none(),
        "nothing on main before review"
    );
    // Provenance: the commit carries the normalised facts.
    let message = r.remote.message(BRANCH);
    assert!(
        message.starts_with("Register a401031x0502795 (Supermicro SSG-6029P-E1CR12L-PH004, ac:1f:6b:dc:19:c2)"),
        "{message}"
    );
    assert!(
        message.contains("Registrar-Facts: {\"vendor\":\"Supermicro\""),
        "{message}"
    );

    // The proposal is listed.
    let proposals = r.get("/api/v1/proposals?state=open").await;
    assert_eq!(proposals["proposals"].as_array().unwrap().len(), 1);
    assert!(
        proposals["proposals"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("| Memory | 191\\.0 GiB |")
    );

    // Approve: a real merge commit on main, the branch gone, the machine approved.
    let resp = r
        .post(&format!("/api/v1/proposals/{MAC}/approve"), json!({"actor": "alice"}))
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(
        r.remote.read("main", "hardware/a401031x0502795.yaml").as_deref(),
        Some(yaml.as_str())
    );
    assert_eq!(r.remote.parent_count("main"), 2, "approval is a merge commit");
    assert!(r.remote.message("main").contains("Approved-by: api:alice"));
    assert!(!r.remote.branches().contains(&BRANCH.to_string()));
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(m["machine"]["state"], "approved");
    assert_eq!(m["proposal"]["state"], "merged");
    let causes: Vec<&str> = m["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["reported", "proposed", "approved"]);
    assert_eq!(m["transitions"][2]["actor"], "api:alice");

    // A late report from an approved machine reopens nothing.
    let resp = r
        .report(&report_body(MAC, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")))
        .await;
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["queued"], false);
    // Even after a worker pass (the probe's), no branch for it.
    probe_worker_pass(&r, PROBE).await;
    assert_eq!(r.remote.branches(), vec!["main".to_string(), PROBE_BRANCH.to_string()]);
    assert_eq!(r.machine(MAC).await.unwrap()["machine"]["state"], "approved");
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_removes_the_branch_and_suppresses_the_mac() {
    let r = Registrar::start().await;
    let mac = "b4:96:91:70:26:c8";
    r.report(&report_body(mac, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")))
        .await;
    r.wait_for_state(mac, "proposed").await;
    assert!(r.remote.branches().contains(&"registrar/b4-96-91-70-26-c8".to_string()));

    let resp = r
        .post(
            &format!("/api/v1/machines/{mac}/reject"),
            json!({"actor": "bob", "reason": "not ours"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(r.remote.branches(), vec!["main".to_string()]);

    // The same machine reports again, even with other facts: nothing opens.
    let resp = r
        .report(&report_body(mac, lshw("supermicro-ssg-6029p-x11dph-t.json")))
        .await;
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["suppressed"], true);
    assert_eq!(body["queued"], false);
    // Had it been queued anyway, the probe's worker pass would have synced it first.
    probe_worker_pass(&r, PROBE).await;
    assert_eq!(r.remote.branches(), vec!["main".to_string(), PROBE_BRANCH.to_string()]);
    let m = r.machine(mac).await.unwrap();
    assert_eq!(m["machine"]["state"], "rejected");
    assert_eq!(m["proposal"]["state"], "closed");
    assert_eq!(m["transitions"][2]["cause"], "not ours");

    // Lifting the suppression proposes it again, on the same branch name.
    let resp = r.post(&format!("/api/v1/machines/{mac}/unsuppress"), json!({})).await;
    assert_eq!(resp.status(), 200);
    r.wait_for_state(mac, "proposed").await;
    assert!(r.remote.branches().contains(&"registrar/b4-96-91-70-26-c8".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_loses_nothing() {
    let mut r = Registrar::start().await;
    let mac = "02:fc:00:00:00:01";
    r.report(&report_body(mac, lshw("firecracker-vm-debian12.json"))).await;
    r.wait_for_state(mac, "proposed").await;
    let head = r.remote.head("registrar/02-fc-00-00-00-01").unwrap();
    r.stop().await;

    // Same state directory, new process-equivalent.
    let dir = std::mem::replace(&mut r.dir, tempfile::tempdir().unwrap());
    let config = local_config(dir.path());
    let r2 = Registrar::start_in(dir, config).await;
    let m = r2.wait_for_state(mac, "proposed").await;
    assert_eq!(m["proposal"]["head"], head.to_string());
    assert_eq!(
        r2.remote.head("registrar/02-fc-00-00-00-01"),
        Some(head),
        "a restart must not re-push"
    );
    let resp = r2.post(&format!("/api/v1/machines/{mac}/approve"), json!({})).await;
    assert_eq!(resp.status(), 200);
    assert!(r2.remote.read("main", "hardware/node-02-fc-00-00-00-01.yaml").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn new_facts_update_the_same_proposal_and_a_reviewer_can_switch_workflow() {
    let r = Registrar::start_with(|c| c.discovery.bmc_networks = vec!["10.0.0.0/24".parse().unwrap()]).await;
    let mac = "f0:ad:4e:03:64:7f";
    r.report(&report_body(mac, lshw("globalscale-espressobin-arm64.json")))
        .await;
    r.wait_for_state(mac, "proposed").await;
    let branch = "registrar/f0-ad-4e-03-64-7f";
    let first = r.remote.head(branch).unwrap();

    // The same machine, now with a BMC address: the proposal is rebuilt, still one commit.
    let mut body = report_body(mac, lshw("globalscale-espressobin-arm64.json"));
    body["bmc_address"] = json!("10.0.0.50");
    r.report(&body).await;
    for _ in 0..100 {
        if r.remote.head(branch) != Some(first) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_ne!(r.remote.head(branch), Some(first));
    assert_eq!(r.remote.commits_ahead("main", branch), 1);
    let yaml = r.remote.read(branch, "hardware/node-f0-ad-4e-03-64-7f.yaml").unwrap();
    assert!(yaml.contains("kind: Machine"), "{yaml}");

    let resp = r
        .post(
            &format!("/api/v1/machines/{mac}/workflow"),
            json!({"workflow": "ubuntu-2204"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    for _ in 0..100 {
        if r.remote
            .read(branch, "hardware/node-f0-ad-4e-03-64-7f.yaml")
            .unwrap()
            .contains("templateRef: \"ubuntu-2204\"")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        r.remote
            .read(branch, "hardware/node-f0-ad-4e-03-64-7f.yaml")
            .unwrap()
            .contains("templateRef: \"ubuntu-2204\"")
    );
    let resp = r
        .post(
            &format!("/api/v1/machines/{mac}/workflow"),
            json!({"workflow": "../../etc"}),
        )
        .await;
    assert_eq!(resp.status(), 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflicting_base_is_reported_not_forced() {
    let r = Registrar::start().await;
    let mac = "b4:96:91:70:26:c8";
    r.report(&report_body(mac, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")))
        .await;
    r.wait_for_state(mac, "proposed").await;
    // Someone commits another file at the same path straight to main.
    {
        let repo = git2::Repository::open_bare(&r.remote.path).unwrap();
        let main = repo
            .find_branch("main", git2::BranchType::Local)
            .unwrap()
            .get()
            .peel_to_commit()
            .unwrap();
        let blob = repo.blob(b"# hand-written\n").unwrap();
        let tree = git2::build::TreeUpdateBuilder::new()
            .upsert("hardware/d5s0r8000105.yaml", blob, git2::FileMode::Blob)
            .create_updated(&repo, &main.tree().unwrap())
            .unwrap();
        let sig = git2::Signature::now("human", "human@example.org").unwrap();
        repo.commit(
            Some("refs/heads/main"),
            &sig,
            &sig,
            "by hand",
            &repo.find_tree(tree).unwrap(),
            &[&main],
        )
        .unwrap();
    }
    let before = r.remote.head("main");
    let resp = r.post(&format!("/api/v1/machines/{mac}/approve"), json!({})).await;
    assert_eq!(resp.status(), 409);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("hardware/d5s0r8000105.yaml"),
        "{body}"
    );
    assert_eq!(r.remote.head("main"), before, "nothing forced onto main");
    assert!(
        r.remote.head("registrar/b4-96-91-70-26-c8").is_some(),
        "the proposal survives for a retry"
    );
    let m = r.machine(mac).await.unwrap();
    assert_eq!(m["machine"]["state"], "proposed");
    assert_eq!(m["proposal"]["state"], "open");
}
