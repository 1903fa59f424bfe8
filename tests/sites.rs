//! Issue 19 on the shipped binary: two sites share one GitOps repository. Each Registrar owns
//! its branch prefix (`gitops.branch_prefix`) and its directory; each proposes only its own
//! machines, takes no notice of the other's pull requests, and, rebuilt from git after losing
//! its store, adopts only its own branches — never the other site's.

mod support;

use serde_json::{Value, json};
use support::OPERATOR_TOKEN;
use support::binary::{Process, eventually, example, listen_on, point_at_github, set, token_env};
use support::fake_github::FakeGithub;
use support::journey::{machine, state_reached};

const SITE_A: &str = "0c:c4:7a:1a:00:01";
const SITE_B: &str = "0c:c4:7a:1b:00:01";

/// A Registrar on `gh` in `dir`; `prefix`, `path` and how often it reads GitHub.
fn site(dir: &std::path::Path, gh: &FakeGithub, prefix: &str, path: &str, hooks: bool) -> Process {
    let mut config = example("github.yaml");
    point_at_github(&mut config, dir, gh);
    let url = listen_on(&mut config);
    set(&mut config, "gitops.branch_prefix", json!(prefix));
    set(&mut config, "gitops.path", json!(path));
    set(&mut config, "forge.github.mutation_interval_ms", json!(0));
    set(&mut config, "forge.github.reconcile_seconds", json!(1));
    set(&mut config, "queue.reconcile_seconds", json!(1));
    if hooks {
        *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    }
    Process::start(dir, config, &token_env())
}

async fn report(p: &Process, mac: &str, serial: &str, uuid_tail: u32) {
    support::journey::report_specs(&p.url, mac, support::journey::supermicro(serial, uuid_tail)).await;
}

async fn macs(p: &Process) -> Vec<String> {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/machines", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    let listed: Value = resp.json().await.unwrap();
    let mut macs: Vec<String> = listed["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mac"].as_str().unwrap().to_string())
        .collect();
    macs.sort();
    macs
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sites_on_one_repository_never_touch_each_others_branches() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gh = FakeGithub::start().await;
    // Site A gets GitHub's deliveries; site B reads GitHub on its reconcile alone.
    let mut a = site(dir_a.path(), &gh, "registrar/", "site-a/{name}.yaml", true);
    let mut b = site(dir_b.path(), &gh, "registrar-b/", "site-b/{name}.yaml", false);
    a.wait_ready().await;
    b.wait_ready().await;

    support::journey::step("each site proposes its own machine on its own prefix");
    report(&a, SITE_A, "SITEA0001", 0x1a01).await;
    report(&b, SITE_B, "SITEB0001", 0x1b01).await;
    let a_branch = format!("registrar/{}", SITE_A.replace(':', "-"));
    let b_branch = format!("registrar-b/{}", SITE_B.replace(':', "-"));
    eventually(60, "both pull requests", || async {
        let heads: Vec<String> = gh.pulls().into_iter().map(|p| p.head).collect();
        (heads.contains(&a_branch) && heads.contains(&b_branch)).then_some(())
    })
    .await;
    state_reached(&a, SITE_A, "proposed").await;
    state_reached(&b, SITE_B, "proposed").await;
    assert_eq!(macs(&a).await, vec![SITE_A.to_string()]);
    assert_eq!(macs(&b).await, vec![SITE_B.to_string()]);

    let a_head = gh.head_of(&a_branch);

    support::journey::step("B loses its store and is rebuilt from git: only its own branch is adopted");
    assert!(b.stop().success());
    for file in ["registrar.db", "registrar.db-wal", "registrar.db-shm"] {
        let _ = std::fs::remove_file(dir_b.path().join("state").join(file));
    }
    b.start_again().await;
    let adopted = eventually(60, "B's machine adopted again", || async {
        let m = machine(&b, SITE_B).await;
        (m["machine"]["state"] == "proposed").then_some(m)
    })
    .await;
    assert_eq!(adopted["proposal"]["branch"], b_branch.as_str());
    assert_eq!(macs(&b).await, vec![SITE_B.to_string()], "A's machine is not adopted");
    let (status, _) = support::journey::get(&format!("{}/api/v1/machines/{SITE_A}", b.url), OPERATOR_TOKEN).await;
    assert_eq!(status, 404);
    assert_eq!(gh.head_of(&a_branch), a_head, "A's branch untouched");
    assert_eq!(gh.pulls().len(), 2, "no pull request opened again: {:?}", gh.pulls());

    support::journey::step("B's pull request merged: B approves its machine; A's record is its own alone");
    let b_pull = gh.pulls().into_iter().find(|p| p.head == b_branch).unwrap();
    assert!(gh.merge(b_pull.number, "reviewer").await.status().is_success());
    state_reached(&b, SITE_B, "approved").await;
    assert_eq!(macs(&a).await, vec![SITE_A.to_string()]);
    assert_eq!(machine(&a, SITE_A).await["machine"]["state"], "proposed");
    assert_eq!(gh.head_of(&a_branch), a_head, "A's branch untouched");
    assert!(a.stop().success());
    assert!(b.stop().success());
}
