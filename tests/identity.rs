//! Machines cannot steal identities (issue 17), on the shipped binary against the fake
//! GitHub: a machine that reports another machine's serial, or another machine's BMC
//! address, or a BMC address outside the configured BMC networks, never gets a proposal
//! that redefines that machine or points a BMC object (and so Rufio's credentials) at an
//! address it chose — and the pull request says so first, where a reviewer cannot miss it.

mod support;

use serde_json::{Value, json};
use support::binary::{
    Process, eventually, example, kubeconfig, listen_on, point_at_github, set, start_on_github, token_env,
};
use support::fake_github::FakeGithub;
use support::journey::state_reached;
use support::*;

/// A machine registered before Registrar, in the operator's own layout (not Registrar's
/// `hardware/` directory): its Hardware and its BMC, whose credentials live in a Secret
/// named after it.
const OLD_SERVER: &str = r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata:
  name: sn-old
  namespace: tinkerbell
spec:
  interfaces:
    - dhcp:
        mac: 0c:c4:7a:00:00:01
---
apiVersion: bmc.tinkerbell.org/v1alpha1
kind: Machine
metadata:
  name: sn-old-bmc
  namespace: tinkerbell
spec:
  connection:
    host: 192.0.2.10
    port: 623
    insecureTLS: false
    authSecretRef:
      name: sn-old-bmc
      namespace: tinkerbell
"#;

async fn report(p: &Process, mac: &str, serial: &str, bmc: &str) {
    let mut specs = lshw("supermicro-ssg-6029p-x11dph-t.json");
    specs["serial"] = json!(serial);
    // Each its own system UUID (the fixture's is one machine's).
    specs["configuration"]["uuid"] = json!(format!("00000000-0000-4000-8000-{}", mac.replace(':', "")));
    support::journey::report_with_bmc(&p.url, mac, specs, bmc).await;
}

/// The proposal's pull request body (Markdown escapes removed) and its documents.
async fn proposal(p: &Process, gh: &FakeGithub, mac: &str) -> (String, Vec<Value>) {
    let m = state_reached(p, mac, "proposed").await;
    let number = m["proposal"]["number"].as_u64().unwrap();
    let text = gh
        .repo()
        .read(
            m["proposal"]["branch"].as_str().unwrap(),
            m["proposal"]["path"].as_str().unwrap(),
        )
        .unwrap();
    (gh.pull(number).body.replace('\\', ""), documents(&text))
}

fn bmc_of(documents: &[Value]) -> Option<&Value> {
    documents.iter().find(|d| d["kind"] == "Machine")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_cannot_take_another_machines_name_serial_or_bmc() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    gh.repo()
        .push_on_top("main", "inventory/rack1/old-server.yaml", OLD_SERVER);
    let mut p = start_on_github(dir.path(), &gh, |c: &mut Value| {
        set(c, "discovery.bmc_networks", json!(["192.0.2.0/24"]))
    })
    .await;

    // It claims the old server's serial, with a BMC address of its own choosing.
    let thief = "0c:c4:7a:17:00:01";
    report(&p, thief, "SN-OLD", "192.0.2.66").await;
    let (body, docs) = proposal(&p, &gh, thief).await;
    assert!(
        body.starts_with("> **⚠ Name: the name sn-old is a Hardware on the base branch main, for another machine; this one is named after its MAC.**"),
        "{body}"
    );
    assert_eq!(docs[0]["metadata"]["name"], "node-0c-c4-7a-17-00-01");
    let bmc = bmc_of(&docs).expect("its own BMC, under its own name");
    assert_eq!(bmc["metadata"]["name"], "node-0c-c4-7a-17-00-01-bmc");
    assert_eq!(
        bmc["spec"]["connection"]["authSecretRef"]["name"],
        "node-0c-c4-7a-17-00-01-bmc"
    );
    assert_eq!(
        gh.repo().read("main", "inventory/rack1/old-server.yaml").unwrap(),
        OLD_SERVER
    );

    // Another claims the old server's BMC address: no BMC object at all.
    let borrower = "0c:c4:7a:17:00:02";
    report(&p, borrower, "NEW0002", "192.0.2.10").await;
    let (body, docs) = proposal(&p, &gh, borrower).await;
    assert!(
        body.starts_with(
            "> **⚠ BMC: 192.0.2.10 is the BMC of another machine (Machine sn-old-bmc, on the base branch), so no BMC object is proposed.**"
        ),
        "{body}"
    );
    assert!(bmc_of(&docs).is_none(), "{docs:#?}");

    // A BMC address outside the BMC networks: no BMC object either.
    let outsider = "0c:c4:7a:17:00:03";
    report(&p, outsider, "NEW0003", "203.0.113.9").await;
    let (body, docs) = proposal(&p, &gh, outsider).await;
    assert!(
        body.starts_with("> **⚠ BMC: the reported BMC address 203.0.113.9 is outside discovery.bmc_networks"),
        "{body}"
    );
    assert!(bmc_of(&docs).is_none(), "{docs:#?}");

    // A second machine with the first one's serial: the reviewer is told both claim it.
    let twin = "0c:c4:7a:17:00:04";
    report(&p, twin, "SN-OLD", "192.0.2.67").await;
    let (body, _) = proposal(&p, &gh, twin).await;
    assert!(
        body.contains(&format!(
            "> **⚠ Identity: machine {thief} reported the same serial SN-OLD."
        )),
        "{body}"
    );
    assert!(p.stop().success());
}

/// A BMC that only the cluster knows (a Rufio Machine applied by hand or by another tool,
/// in no file of the repository) is another machine's BMC just the same.
/// examples/github.yaml against `gh`, watching `kube`'s Tinkerbell namespace, with BMCs
/// allowed in 192.0.2.0/24; `edit` adjusts the config.
async fn start_with_cluster(
    dir: &std::path::Path,
    gh: &FakeGithub,
    kube: &support::fake_kube::FakeKube,
    edit: impl FnOnce(&mut Value),
) -> Process {
    let mut config = example("github.yaml");
    point_at_github(&mut config, dir, gh);
    let url = listen_on(&mut config);
    set(&mut config, "discovery.bmc_networks", json!(["192.0.2.0/24"]));
    set(&mut config, "cluster.enabled", json!(true));
    set(&mut config, "cluster.watch_namespace", json!("tinkerbell"));
    edit(&mut config);
    let kubeconfig = kubeconfig(dir, &kube.url);
    let mut env = token_env();
    env.push(("KUBECONFIG", kubeconfig.to_str().unwrap()));
    *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    let mut p = Process::start(dir, config, &env);
    p.wait_ready().await;
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bmc_only_the_cluster_knows_is_never_given_to_another_machine() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = support::fake_kube::FakeKube::start().await;
    kube.create_bmc(json!({
        "apiVersion": "bmc.tinkerbell.org/v1alpha1", "kind": "Machine",
        "metadata": {"name": "lab-bmc-7", "namespace": "tinkerbell"},
        "spec": {"connection": {"host": "192.0.2.77", "port": 623, "insecureTLS": false,
                                "authSecretRef": {"name": "lab-bmc-7", "namespace": "tinkerbell"}}}
    }));
    let mut p = start_with_cluster(dir.path(), &gh, &kube, |_| {}).await;
    // The watch has listed the cluster's BMCs (readiness says what it sees).
    eventually(30, "the Rufio Machine watch to list lab-bmc-7", || async {
        let (_, ready) = support::journey::get(&format!("{}/readyz?check=cluster-bmcs", p.url), OPERATOR_TOKEN).await;
        (ready["checks"]["cluster-bmcs"]["detail"] == "Rufio Machines watched (1 objects)").then_some(())
    })
    .await;

    let borrower = "0c:c4:7a:17:02:01";
    report(&p, borrower, "NEW0201", "192.0.2.77").await;
    let (body, docs) = proposal(&p, &gh, borrower).await;
    assert!(
        body.starts_with(
            "> **⚠ BMC: 192.0.2.77 is the BMC of another machine (Machine lab-bmc-7, in the cluster), so no BMC object is proposed.**"
        ),
        "{body}"
    );
    assert!(bmc_of(&docs).is_none(), "{docs:#?}");

    // A BMC address nobody has: its BMC object is proposed as usual.
    let owner = "0c:c4:7a:17:02:02";
    report(&p, owner, "NEW0202", "192.0.2.78").await;
    let (body, docs) = proposal(&p, &gh, owner).await;
    assert!(!body.contains("⚠ BMC"), "{body}");
    assert_eq!(
        bmc_of(&docs).expect("its BMC object")["spec"]["connection"]["host"],
        "192.0.2.78"
    );
    assert!(p.stop().success());
}

/// A credentials Secret left in the cluster (another machine's, decommissioned by hand) is
/// never named by a new machine's BMC object: with `cluster.check_bmc_secrets`, Registrar
/// asks for it by name first.
#[tokio::test(flavor = "multi_thread")]
async fn a_left_over_bmc_secret_is_never_given_to_a_new_machine() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = support::fake_kube::FakeKube::start().await;
    kube.create_secret("tinkerbell", "new0301-bmc");
    let mut p = start_with_cluster(dir.path(), &gh, &kube, |c| {
        set(c, "cluster.check_bmc_secrets", json!(true));
    })
    .await;
    let newcomer = "0c:c4:7a:17:03:01";
    report(&p, newcomer, "NEW0301", "192.0.2.79").await;
    let (body, docs) = proposal(&p, &gh, newcomer).await;
    assert!(
        body.starts_with("> **⚠ BMC: a Secret new0301-bmc is already in the cluster"),
        "{body}"
    );
    assert!(bmc_of(&docs).is_none(), "{docs:#?}");
    let fresh = "0c:c4:7a:17:03:02";
    report(&p, fresh, "NEW0302", "192.0.2.80").await;
    let (body, docs) = proposal(&p, &gh, fresh).await;
    assert!(!body.contains("⚠ BMC"), "{body}");
    assert_eq!(
        bmc_of(&docs).expect("its BMC object")["spec"]["connection"]["authSecretRef"]["name"],
        "new0302-bmc"
    );
    assert!(kube.rbac_used().contains(&("".into(), "secrets".into(), "get".into())));
    assert!(p.stop().success());
}

/// With cluster discovery (examples/all.yaml), only the per-machine tokens the discovery
/// Workflows carry may report: the shared report token, which would let whoever holds it
/// report for any MAC, is off — its report is refused and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn the_shared_report_token_is_off_where_machines_have_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = support::fake_kube::FakeKube::start().await;
    let mut p = support::journey::start_on_cluster(dir.path(), &gh, &kube, |_| {}).await;
    let mac = "0c:c4:7a:17:01:01";
    let resp = support::journey::post_report(&p.url, mac, "supermicro-ssg-6029p-x11dph-t.json").await;
    assert_eq!(resp.status(), 401, "{}", resp.text().await.unwrap());
    let (status, _) = support::journey::get(&format!("{}/api/v1/machines/{mac}", p.url), OPERATOR_TOKEN).await;
    assert_eq!(status, 404, "nothing was stored");
    assert!(p.stop().success());
}
