//! The machine's whole journey, on the shipped binary: `registrar serve` started with a
//! config file made from `examples/`, secrets in files and the environment as the docs say,
//! against the project's fakes over real HTTP (GitHub with branches in real bare repositories
//! and signed webhooks; a Kubernetes API server validating against the upstream CRDs). Every
//! step is asserted from what a user sees: HTTP answers, pull requests and files on GitHub,
//! objects in the cluster.
//!
//! Start-up and readiness of every example: tests/startup.rs. DHCP in a network namespace:
//! tests/journey_dhcp.rs.

mod support;

use serde_json::{Value, json};
use support::binary::{Process, eventually, example, kubeconfig, listen_on, point_at_github, set, token_env};
use support::fake_github::FakeGithub;
use support::fake_kube::FakeKube;
use support::journey::*;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn local_forge_a_report_is_proposed_approved_with_the_cli_and_merged() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Process::start(dir.path(), example("local.yaml"), &token_env());
    p.wait_ready().await;
    let mac = "0c:c4:7a:11:22:33";

    let resp = post_report(&p.url, mac, "supermicro-ssg-6029p-x11dph-t.json").await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let proposed = state_reached(&p, mac, "proposed").await;
    let path = proposed["proposal"]["path"]
        .as_str()
        .expect("a proposal path")
        .to_string();
    assert_eq!(next_step(&p, mac, REPORT_TOKEN).await, "wait");

    // The reviewer approves from the command line, as the README shows.
    let out = p.cli(&["approve", mac]);
    assert!(
        out.status.success(),
        "registrar approve: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    state_reached(&p, mac, "approved").await;
    let remote = Repo::at(&dir.path().join("state/gitops.git"));
    let merged = remote.read("main", &path).expect("the approved manifest is on main");
    assert!(merged.contains("kind: Hardware") && merged.contains(mac), "{merged}");
    // Without a cluster Registrar cannot see the apply: the merge is the hand-off.
    assert_eq!(next_step(&p, mac, REPORT_TOKEN).await, "reboot");
    assert!(p.stop().success());
}

/// Smee's log → temporary Hardware and Workflow → the discovery action's report → pull
/// request → a reviewer's `workflow/…` label → re-render → merge → "wait" until Flux applies
/// → "reboot" once the approved Hardware is there and the temporary objects are gone →
/// Workflow succeeds → provisioned. Registrar restarts in the middle of the wait.
#[tokio::test(flavor = "multi_thread")]
async fn github_and_cluster_from_a_smee_log_line_to_provisioned() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    kube.add_pod(NS, "tinkerbell-7f9c", json!({"app": "tinkerbell"}));

    let mut config = example("all.yaml");
    point_at_github(&mut config, dir.path(), &gh);
    let url = listen_on(&mut config);
    set(&mut config, "dhcp.enabled", json!(false));
    set(&mut config, "cluster.enabled", json!(true));
    set(&mut config, "cluster.smee_logs.enabled", json!(true));
    set(&mut config, "cluster.discovery.enabled", json!(true));
    set(&mut config, "cluster.discovery.report_url", json!(url));
    set(&mut config, "cluster.handoff_timeout_seconds", json!(1));
    let kubeconfig = kubeconfig(dir.path(), &kube.url);
    let mut env = token_env();
    env.push(("KUBECONFIG", kubeconfig.to_str().unwrap()));
    let mut p = Process::start(dir.path(), config, &env);
    *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    let ready = p.wait_ready().await;
    for pipeline in [
        "forge",
        "cluster",
        "handoff",
        "discovery",
        "smee_logs",
        "gitops",
        "proposals",
    ] {
        assert_eq!(ready["checks"][pipeline]["ready"], true, "{pipeline}: {ready:#}");
    }

    let mac = "0c:c4:7a:aa:bb:01";
    smee_sees(&kube, mac).await;
    journey_after_detection(&mut p, &gh, &kube, mac).await;
}

/// A Registrar on GitHub and the fake cluster, noticing machines from Smee's log, with
/// `edit` applied to examples/all.yaml.
async fn start_with_cluster(dir: &std::path::Path, edit: impl FnOnce(&mut Value)) -> (Process, FakeGithub, FakeKube) {
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    let p = start_on_cluster(dir, &gh, &kube, edit).await;
    (p, gh, kube)
}

fn temporary(mac: &str) -> String {
    format!("registrar-discover-{}", mac.replace(':', "-"))
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_discovery_limit_machines_wait_visibly_and_start_when_a_slot_frees() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _gh, kube) = start_with_cluster(dir.path(), |c| set(c, "cluster.discovery.max_machines", json!(1))).await;
    let (first, second) = ("0c:c4:7a:aa:cc:01", "0c:c4:7a:aa:cc:02");
    smee_sees(&kube, first).await;
    state_reached(&p, first, "discovering").await;
    smee_sees(&kube, second).await;

    // Every slot is taken: the second machine waits, and says so.
    let waiting = state_reached(&p, second, "waiting").await;
    let cause = waiting["transitions"].as_array().unwrap().last().unwrap()["cause"].clone();
    assert!(cause.as_str().unwrap().contains("max_machines: 1"), "{cause}");
    assert!(kube.object("hardware", NS, &temporary(second)).is_none());
    eventually(10, "the waiting gauge to show it", || async {
        (p.metric("registrar_discovery_waiting ").await == 1.0).then_some(())
    })
    .await;

    // The first is rejected: its slot frees, and the second starts without being seen again.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/machines/{first}/reject", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"reason": "not ours"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "reject: {}", resp.text().await.unwrap());
    state_reached(&p, second, "discovering").await;
    assert!(kube.object("workflows", NS, &temporary(second)).is_some());
    assert!(kube.object("hardware", NS, &temporary(first)).is_none());
    eventually(10, "the waiting gauge to drop to 0", || async {
        (p.metric("registrar_discovery_waiting ").await == 0.0).then_some(())
    })
    .await;
}

/// The objects of a machine that never reports expire after `ttl_seconds`; a machine that
/// reported keeps its objects and its token for the whole wait for its review.
#[tokio::test(flavor = "multi_thread")]
async fn a_reported_machine_keeps_its_token_and_objects_past_the_discovery_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _gh, kube) = start_with_cluster(dir.path(), |c| {
        set(c, "cluster.discovery.ttl_seconds", json!(2));
        set(c, "cluster.discovery.decision_wait_seconds", json!(3600));
    })
    .await;
    let (reported, silent) = ("0c:c4:7a:aa:dd:01", "0c:c4:7a:aa:dd:02");
    smee_sees(&kube, reported).await;
    let workflow = eventually(30, "the temporary Workflow", || async {
        kube.object("workflows", NS, &temporary(reported))
    })
    .await;
    let token = workflow["spec"]["hardwareMap"]["report_token"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/reports", p.url))
        .bearer_auth(&token)
        .json(&report_body(reported, lshw("supermicro-ssg-6029p-x11dph-t.json")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    // A second machine, booted later, never reports: its objects expire after 2 s — and
    // by then the first machine's original deadline has passed too.
    smee_sees(&kube, silent).await;
    let silent_workflow = eventually(30, "the silent machine's Workflow", || async {
        kube.object("workflows", NS, &temporary(silent))
    })
    .await;
    let silent_token = silent_workflow["spec"]["hardwareMap"]["report_token"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(30, "the silent machine's objects to expire", || async {
        kube.object("hardware", NS, &temporary(silent)).is_none().then_some(())
    })
    .await;
    state_reached(&p, silent, "detected").await;
    let (status, _) = get(&format!("{}/api/v1/reports/{silent}", p.url), &silent_token).await;
    assert_eq!(status, 401, "an expired token reads nothing");

    assert!(
        kube.object("hardware", NS, &temporary(reported)).is_some(),
        "the reported machine keeps its Hardware"
    );
    assert!(
        kube.object("workflows", NS, &temporary(reported)).is_some(),
        "and the Workflow its action runs in"
    );
    assert_eq!(next_step(&p, reported, &token).await, "wait");
    // Its token reads its own machine only.
    let (status, body) = get(&format!("{}/api/v1/reports/{silent}", p.url), &token).await;
    assert_eq!(status, 403, "{body}");
}
