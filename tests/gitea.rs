//! Issue 20 on the shipped binary: a machine's review on Forgejo/Gitea.
//!
//! The binary runs on `examples/gitea.yaml`, pointed at the fake forge (its API and its
//! repository over smart HTTP, pushed with the token). A machine that reports becomes a
//! pull request with its workflow's label; merging it in the forge approves the machine,
//! closing another rejects it and deletes its branch; a third is approved through
//! Registrar, which merges at the reviewed head; a merge whose webhook is lost is found by
//! the reconcile; a delivery with a wrong signature is refused.

mod support;

use serde_json::json;
use support::binary::{Process, eventually, example, listen_on, set, token_env};
use support::fake_gitea::{FakeGitea, SECRET, point_at_gitea};
use support::journey::{report_specs, review, state_reached, step, supermicro};

async fn start(gitea: &FakeGitea, dir: &std::path::Path) -> Process {
    let mut config = example("gitea.yaml");
    point_at_gitea(&mut config, dir, gitea);
    // Long enough that what the forge decides reaches Registrar by its webhooks alone;
    // the reconcile runs at start (see the lost delivery below).
    set(&mut config, "queue.reconcile_seconds", json!(3600));
    let url = listen_on(&mut config);
    *gitea.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/gitea"));
    let mut p = Process::start(dir, config, &token_env());
    p.wait_ready().await;
    p
}

/// Machine `i` reports, and its pull request is open: its number.
async fn proposed(p: &Process, gitea: &FakeGitea, mac: &str, serial: &str) -> u64 {
    report_specs(&p.url, mac, supermicro(serial, 0x5000 + serial.len() as u32)).await;
    let m = state_reached(p, mac, "proposed").await;
    let number = m["proposal"]["number"].as_u64().unwrap_or_else(|| panic!("{m}"));
    let pull = gitea.pull(number);
    assert!(pull.open, "{pull:?}");
    assert_eq!(pull.head, m["proposal"]["branch"].as_str().unwrap());
    number
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_is_reviewed_as_a_pull_request_on_forgejo_or_gitea() {
    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(&gitea, dir.path()).await;

    step("a machine reports and becomes a pull request with its workflow's label");
    let first = proposed(&p, &gitea, "0c:c4:7a:5a:00:01", "GT0001").await;
    let pull = gitea.pull(first);
    assert!(
        pull.title.contains("gt0001") || pull.title.contains("GT0001"),
        "{pull:?}"
    );
    assert_eq!(gitea.labels_of(first), vec!["workflow/ubuntu-2404".to_string()]);
    assert!(gitea.repo().read(&pull.head, "hardware/gt0001.yaml").is_some());

    step("a reviewer's workflow label chooses another workflow; Registrar's old label goes");
    assert_eq!(gitea.label(first, "workflow/ubuntu-2204").await.status(), 202);
    eventually(30, "the workflow to change and the labels to follow", || async {
        let m = support::journey::machine(&p, "0c:c4:7a:5a:00:01").await;
        let labels = gitea.labels_of(first);
        (m["machine"]["workflow"] == "ubuntu-2204" && labels == ["workflow/ubuntu-2204"]).then_some(())
    })
    .await;

    step("merged in the forge, it is approved and its Hardware is on main");
    assert_eq!(gitea.merge(first).await.status(), 202);
    state_reached(&p, "0c:c4:7a:5a:00:01", "approved").await;
    assert!(gitea.repo().read("main", "hardware/gt0001.yaml").is_some());

    step("closed in the forge, another is rejected");
    let second = proposed(&p, &gitea, "0c:c4:7a:5a:00:02", "GT0002").await;
    assert_eq!(gitea.close(second).await.status(), 202);
    state_reached(&p, "0c:c4:7a:5a:00:02", "rejected").await;

    step("rejected through Registrar, a fifth's pull request is closed and its branch deleted");
    let fifth = proposed(&p, &gitea, "0c:c4:7a:5a:00:05", "GT0005").await;
    let branch = gitea.pull(fifth).head;
    review(&p, "0c:c4:7a:5a:00:05", "reject", json!({"reason": "not ours"})).await;
    eventually(
        30,
        "the rejected pull request closed and its branch deleted",
        || async { (!gitea.pull(fifth).open && gitea.repo().head(&branch).is_none()).then_some(()) },
    )
    .await;

    step("approved through Registrar, a third is merged at the head that was reviewed");
    let third = proposed(&p, &gitea, "0c:c4:7a:5a:00:03", "GT0003").await;
    let reviewed = gitea.repo().head(&gitea.pull(third).head).unwrap().to_string();
    review(&p, "0c:c4:7a:5a:00:03", "approve", json!({})).await;
    let merged = gitea.pull(third);
    assert!(merged.merged && !merged.open, "{merged:?}");
    assert!(gitea.repo().read("main", "hardware/gt0003.yaml").is_some());
    assert_eq!(
        gitea.state.lock().unwrap().merges,
        vec![(third, Some(reviewed))],
        "merged through the API, pinned to the head that was reviewed"
    );

    step("a merge whose webhook is lost is found by the reconcile (it runs at every start)");
    let fourth = proposed(&p, &gitea, "0c:c4:7a:5a:00:04", "GT0004").await;
    gitea.merge_quietly(fourth);
    p.restart().await;
    state_reached(&p, "0c:c4:7a:5a:00:04", "approved").await;

    step("a delivery with a wrong signature is refused, and one about another repository ignored");
    let body = serde_json::to_vec(&gitea.payload("closed", fourth)).unwrap();
    assert_eq!(
        gitea
            .deliver("pull_request", body.clone(), Some("not-the-secret"))
            .await
            .status(),
        401
    );
    assert_eq!(gitea.deliver("pull_request", body, None).await.status(), 401);
    let mut other = gitea.payload("closed", fourth);
    other["repository"]["full_name"] = json!("mallory/gitops");
    let other = serde_json::to_vec(&other).unwrap();
    let answer = gitea.deliver("pull_request", other, Some(SECRET)).await;
    assert_eq!(answer.status(), 202);
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap()["ignored"],
        "another repository"
    );

    step("every machine has exactly one pull request");
    let pulls = gitea.pulls();
    assert_eq!(pulls.len(), 5, "{pulls:?}");
}
