//! A GitOps directory with a shared kustomization.yaml: every proposal adds its file to
//! `resources`, and proposals are rebuilt on the new base after each merge, so ten of them
//! merged in any order never conflict — on the local forge and on GitHub.

mod support;

use std::time::Duration;

use rand::seq::SliceRandom;
use serde_json::json;
use support::fake_github::{self, FakeGithub};
use support::*;

const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: tinkerbell\nresources:\n  - existing.yaml\n";

fn seed(repo_path: &std::path::Path) {
    let repo = git2::Repository::open_bare(repo_path).unwrap();
    let main = repo
        .find_branch("main", git2::BranchType::Local)
        .unwrap()
        .get()
        .peel_to_commit()
        .unwrap();
    let k = repo.blob(KUSTOMIZATION.as_bytes()).unwrap();
    let e = repo.blob(b"# an existing machine\n").unwrap();
    let tree = git2::build::TreeUpdateBuilder::new()
        .upsert("hardware/kustomization.yaml", k, git2::FileMode::Blob)
        .upsert("hardware/existing.yaml", e, git2::FileMode::Blob)
        .create_updated(&repo, &main.tree().unwrap())
        .unwrap();
    let sig = git2::Signature::now("ops", "ops@example.org").unwrap();
    repo.commit(
        Some("refs/heads/main"),
        &sig,
        &sig,
        "kustomize the hardware directory",
        &repo.find_tree(tree).unwrap(),
        &[&main],
    )
    .unwrap();
}

fn macs() -> Vec<String> {
    (0..10).map(|i| format!("02:00:00:00:0a:{i:02x}")).collect()
}

async fn report_all(r: &Registrar) {
    for (i, mac) in macs().iter().enumerate() {
        let mut specs = lshw("packet-c3small-asrockrack-e3c246d4i-nl.json");
        specs[0]["serial"] = serde_json::Value::String(format!("K{i:02}"));
        r.report(&report_body(mac, specs)).await;
    }
    for mac in macs() {
        r.wait_for_state(&mac, "proposed").await;
    }
}

fn resources(repo: &Repo, branch: &str) -> Vec<String> {
    let text = repo.read(branch, "hardware/kustomization.yaml").unwrap();
    let v: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn local_forge_ten_proposals_merge_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("state/gitops.git");
    registrar::propose::git::init_local_remote(&remote, "main").unwrap();
    seed(&remote);
    let config = local_config(dir.path());
    let r = Registrar::start_in(dir, config).await;
    report_all(&r).await;
    // Each proposal lists itself beside what the base has.
    assert_eq!(
        resources(&r.remote, "registrar/02-00-00-00-0a-00"),
        ["existing.yaml", "k00.yaml"]
    );
    let mut order = macs();
    order.shuffle(&mut rand::rng());
    for mac in &order {
        let resp = r
            .post(&format!("/api/v1/machines/{mac}/approve"), json!({"actor": "ops"}))
            .await;
        assert_eq!(resp.status(), 200, "{mac}: {}", resp.text().await.unwrap());
    }
    let mut expected: Vec<String> = (0..10).map(|i| format!("k{i:02}.yaml")).collect();
    expected.push("existing.yaml".into());
    expected.sort();
    assert_eq!(resources(&r.remote, "main"), expected);
    assert_eq!(r.remote.branches(), vec!["main".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn github_ten_pull_requests_merge_in_any_order() {
    let gh = FakeGithub::start().await;
    seed(&gh.repo().path);
    let (api, git) = (gh.url.clone(), gh.git_url());
    let r = Registrar::start_with(move |c| fake_github::configure(c, &api, &git)).await;
    *gh.hook_url.lock().unwrap() = Some(format!("{}/webhooks/github", r.url));
    report_all(&r).await;
    let mut numbers: Vec<u64> = gh.pulls().iter().map(|p| p.number).collect();
    assert_eq!(numbers.len(), 10);
    numbers.shuffle(&mut rand::rng());
    let repo = gh.repo();
    for n in numbers {
        // As a reviewer would: merge when GitHub shows no conflict, i.e. once Registrar has
        // rebuilt the branch on the current base (it does so right after each merge).
        let head = gh.pull(n).head;
        let base_head = repo.head("main").unwrap();
        let git = git2::Repository::open_bare(&repo.path).unwrap();
        for _ in 0..200 {
            let on_base = repo
                .head(&head)
                .and_then(|h| git.find_commit(h).ok())
                .is_some_and(|c| c.parent_ids().any(|p| p == base_head));
            if on_base {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(gh.merge(n, "ops").await.status(), 202);
    }
    for mac in macs() {
        r.wait_for_state(&mac, "approved").await;
    }
    assert_eq!(resources(&repo, "main").len(), 11);
}
