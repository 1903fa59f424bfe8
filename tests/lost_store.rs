//! A lost volume: the store is gone, git and the forge are not. On start Registrar adopts
//! the proposals whose branches are still there, with the facts their commits carry; open
//! ones stay open (no second pull request, no new commit), closed ones stay rejected.

mod support;

use std::time::Duration;

use support::fake_github::{self, FakeGithub};
use support::*;

const A: &str = "aa:bb:cc:00:10:01";
const B: &str = "aa:bb:cc:00:10:02";
const C: &str = "aa:bb:cc:00:10:03";

fn specs(serial: &str) -> serde_json::Value {
    serde_json::json!({"class": "system", "vendor": "Acme", "product": "Lost Store", "serial": serial, "children": []})
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_local_remote_open_proposals_come_back_from_their_branches() {
    // The GitOps repository lives outside the state directory, as a real remote would.
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("gitops.git");
    registrar::propose::git::init_local_remote(&remote, "main").unwrap();
    let url = format!("file://{}", remote.display());
    let u = url.clone();
    let mut r = Registrar::start_with(move |c| c.gitops.remote = u).await;
    for (mac, serial) in [(A, "LS-A"), (B, "LS-B"), (C, "LS-C")] {
        assert!(r.report(&report_body(mac, specs(serial))).await.status().is_success());
        r.wait_for_state(mac, "proposed").await;
    }
    assert!(
        r.post(&format!("/api/v1/machines/{B}/approve"), serde_json::json!({}))
            .await
            .status()
            .is_success()
    );
    assert!(
        r.post(&format!("/api/v1/machines/{C}/reject"), serde_json::json!({}))
            .await
            .status()
            .is_success()
    );
    r.stop().await;
    // Someone with push access adds a file outside the proposals' directory on A's branch,
    // reusing Registrar's message (trailers and all).
    let repo = git2::Repository::open_bare(&remote).unwrap();
    let head = repo
        .find_reference("refs/heads/registrar/aa-bb-cc-00-10-01")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let manifest = r
        .remote
        .read("registrar/aa-bb-cc-00-10-01", "hardware/ls-a.yaml")
        .expect("A's manifest");
    let blob = repo.blob(b"kind: ClusterRoleBinding\n").unwrap();
    let mut extra = repo.treebuilder(None).unwrap();
    extra.insert("evil.yaml", blob, 0o100644).unwrap();
    let extra = extra.write().unwrap();
    let mut root = repo.treebuilder(Some(&head.tree().unwrap())).unwrap();
    root.insert("cluster", extra, 0o040000).unwrap();
    let tree = repo.find_tree(root.write().unwrap()).unwrap();
    let sig = git2::Signature::now("mallory", "mallory@example.com").unwrap();
    repo.commit(
        Some("refs/heads/registrar/aa-bb-cc-00-10-01"),
        &sig,
        &sig,
        head.message().unwrap(),
        &tree,
        &[&head],
    )
    .unwrap();

    // The volume is lost: a new, empty state directory.
    let u = url.clone();
    let r = Registrar::start_with(move |c| c.gitops.remote = u).await;
    let m = r.wait_for_state(A, "proposed").await;
    assert_eq!(
        m["machine"]["facts"]["serial"], "LS-A",
        "the facts the branch's commit carried"
    );
    assert!(m["transitions"].as_array().unwrap().iter().any(|t| {
        t["cause"]
            .as_str()
            .unwrap()
            .contains("adopted from registrar/aa-bb-cc-00-10-01")
    }));
    // The branch is rewritten to exactly the proposal: the extra file is gone, and the
    // manifest is the one Registrar had pushed.
    let head_a = eventually("the branch rewritten", async || {
        let files = r.remote.files("registrar/aa-bb-cc-00-10-01");
        (!files.iter().any(|f| f.starts_with("cluster/")))
            .then(|| r.remote.head("registrar/aa-bb-cc-00-10-01").unwrap())
    })
    .await;
    assert_eq!(
        r.remote
            .read("registrar/aa-bb-cc-00-10-01", "hardware/ls-a.yaml")
            .unwrap(),
        manifest
    );
    // Approved: on main, known, not brought back as a proposal. Rejected: its branch is gone.
    // The scan for branches the store lost has finished, so neither will come back later.
    wait_metric(&r, ADOPTION_SCANS, 1.0).await;
    assert!(r.machine(B).await.is_none());
    assert!(r.machine(C).await.is_none());
    assert_eq!(
        r.get("/api/v1/proposals").await["proposals"].as_array().unwrap().len(),
        1
    );

    // The adopted proposal is Registrar's own again: new facts update it, and it merges.
    assert!(r.report(&report_body(A, specs("LS-A2"))).await.status().is_success());
    eventually("the branch updated", async || {
        (r.remote.head("registrar/aa-bb-cc-00-10-01") != Some(head_a)).then_some(())
    })
    .await;
    r.wait_for_state(A, "proposed").await;
    assert!(
        r.post(&format!("/api/v1/machines/{A}/approve"), serde_json::json!({}))
            .await
            .status()
            .is_success()
    );
    r.wait_for_state(A, "approved").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_github_open_pull_requests_are_adopted_and_closed_ones_stay_rejected() {
    let gh = FakeGithub::start().await;
    let (api, git) = (gh.url.clone(), gh.git_url());
    let start = |api: String, git: String| {
        Registrar::start_with(move |c| {
            fake_github::configure(c, &api, &git);
            c.forge.github.reconcile_seconds = 3600;
        })
    };
    let mut r = start(api.clone(), git.clone()).await;
    *gh.hook_url.lock().unwrap() = Some(format!("{}/webhooks/github", r.url));
    for (mac, serial) in [(A, "GH-A"), (B, "GH-B"), (C, "GH-C")] {
        assert!(r.report(&report_body(mac, specs(serial))).await.status().is_success());
        r.wait_for_state(mac, "proposed").await;
    }
    let b_number = r.machine(B).await.unwrap()["proposal"]["number"].as_u64().unwrap();
    let c_number = r.machine(C).await.unwrap()["proposal"]["number"].as_u64().unwrap();
    r.stop().await;
    // While Registrar was away (its webhooks went nowhere) B was closed and C merged (its
    // branch stays, as GitHub keeps it unless told otherwise); then the volume is lost.
    gh.state
        .lock()
        .unwrap()
        .pulls
        .iter_mut()
        .find(|p| p.number == b_number)
        .unwrap()
        .open = false;
    gh.merge_quietly(c_number, "octocat");

    let r = start(api, git).await;
    *gh.hook_url.lock().unwrap() = Some(format!("{}/webhooks/github", r.url));
    let a = r.wait_for_state(A, "proposed").await;
    assert_eq!(a["machine"]["facts"]["serial"], "GH-A");
    let b = eventually("B recorded", async || {
        r.machine(B).await.filter(|m| m["machine"]["state"] == "rejected")
    })
    .await;
    assert_eq!(b["machine"]["suppressed"], true, "a rejection survives the lost store");
    assert_eq!(gh.pulls().len(), 3, "no second pull request");
    // The scan for branches the store lost has finished (C's included), so C is not
    // adopted later either.
    wait_metric(&r, ADOPTION_SCANS, 1.0).await;
    assert!(
        r.machine(C).await.is_none(),
        "merged: the base holds it; nothing to adopt"
    );
    assert_eq!(a["proposal"]["number"], 1, "the same pull request, adopted");
    // Not mistaken for a person's push: no hands-off comment.
    assert!(
        gh.comments(1)
            .iter()
            .all(|c| !c.contains("will not update this branch")),
        "{:?}",
        gh.comments(1)
    );
}
