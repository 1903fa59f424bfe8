//! The local forge read by what the repository holds, not by which branches exist (issue
//! 20), on the shipped binary with the embedded default: a reviewer who squash-merges a
//! proposal — deleting its branch, as most tools do, or keeping it — has approved it; a
//! branch deleted without a merge is still a rejection.

mod support;

use serde_json::json;
use support::binary::{Process, example, set, token_env};
use support::journey::{post_report, state_reached};
use support::*;

/// What a person's tool does to squash-merge `branch` into main: one new commit on main
/// with the branch's tree, and (if `delete`) the branch gone.
fn squash_merge(repo: &Repo, branch: &str, delete: bool) {
    let git = repo.open();
    let base = git.find_commit(repo.head("main").unwrap()).unwrap();
    let proposed = git.find_commit(repo.head(branch).unwrap()).unwrap();
    let sig = git2::Signature::now("Reviewer", "reviewer@example.com").unwrap();
    git.commit(
        Some("refs/heads/main"),
        &sig,
        &sig,
        &format!("Squash-merge {branch}"),
        &proposed.tree().unwrap(),
        &[&base],
    )
    .unwrap();
    if delete {
        git.find_reference(&format!("refs/heads/{branch}"))
            .unwrap()
            .delete()
            .unwrap();
    }
}

/// A machine of the Packet fixture with its own serial reports and is proposed: its
/// proposal's branch and path.
async fn proposed(p: &Process, mac: &str, serial: &str) -> (String, String) {
    let mut specs = lshw("packet-c3small-asrockrack-e3c246d4i-nl.json");
    specs[0]["serial"] = json!(serial);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/reports", p.url))
        .bearer_auth(REPORT_TOKEN)
        .json(&report_body(mac, specs))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let m = state_reached(p, mac, "proposed").await;
    (
        m["proposal"]["branch"].as_str().unwrap().to_string(),
        m["proposal"]["path"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_squash_merge_is_an_approval_and_a_deleted_branch_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = example("local.yaml");
    set(&mut config, "queue.reconcile_seconds", json!(1));
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;
    let remote = Repo::at(&dir.path().join("state/gitops.git"));
    let machines = [
        ("0c:c4:7a:20:00:01", "packet-c3small-asrockrack-e3c246d4i-nl.json"),
        ("0c:c4:7a:20:00:02", "supermicro-ssg-6029p-x11dph-t.json"),
    ];
    let mut branches = vec![];
    for (mac, lshw_file) in machines {
        assert_eq!(post_report(&p.url, mac, lshw_file).await.status(), 202);
        let m = state_reached(&p, mac, "proposed").await;
        branches.push(m["proposal"]["branch"].as_str().unwrap().to_string());
    }

    // Squash-merged, the branch deleted: approved, by what main now holds.
    squash_merge(&remote, &branches[0], true);
    let m = state_reached(&p, machines[0].0, "approved").await;
    assert_eq!(m["proposal"]["state"], "merged", "{m:#}");
    assert!(!m["machine"]["suppressed"].as_bool().unwrap(), "{m:#}");

    // Squash-merged, the branch kept: approved too (before, it stayed "proposed").
    squash_merge(&remote, &branches[1], false);
    state_reached(&p, machines[1].0, "approved").await;

    // A third: a person amends its file on the branch, then squash-merges and deletes the
    // branch. What is on main is not Registrar's commit, but it is merged: approved.
    let amended = "0c:c4:7a:20:00:04";
    let (branch, path) = proposed(&p, amended, "SQUASH4").await;
    let text = remote.read(&branch, &path).unwrap();
    remote.push_on_top(&branch, &path, &format!("{text}# reviewed by hand\n"));
    squash_merge(&remote, &branch, true);
    state_reached(&p, amended, "approved").await;

    // A fourth, its branch deleted without a merge: rejected.
    let mac = "0c:c4:7a:20:00:03";
    let (branch, _) = proposed(&p, mac, "SQUASH3").await;
    remote
        .open()
        .find_reference(&format!("refs/heads/{branch}"))
        .unwrap()
        .delete()
        .unwrap();
    state_reached(&p, mac, "rejected").await;
    assert!(p.stop().success());
}
