//! Issue 20 on the shipped binary: a machine's review on an on-premises forge — Forgejo/
//! Gitea and GitLab, one journey run on each.
//!
//! The binary runs on the forge's example (`examples/gitea.yaml`, `examples/gitlab.yaml`),
//! pointed at the fake forge (its API and its repository over smart HTTP, pushed with the
//! token). A machine that reports becomes a pull (merge) request with its workflow's label;
//! a reviewer's label chooses another workflow; merging it in the forge approves the
//! machine, closing another rejects it; one rejected through Registrar is closed and its
//! branch deleted; one approved through Registrar is merged at the reviewed head; a merge
//! whose webhook is lost is found by the reconcile; a delivery without the secret is
//! refused, and one about another repository ignored.

mod support;

use serde_json::json;
use support::binary::{Process, eventually, example, listen_on, set, token_env};
use support::fake_gitea::FakeGitea;
use support::fake_gitlab::FakeGitlab;
use support::journey::{report_specs, review, state_reached, step, supermicro};
use support::review_forge::ReviewForge;

async fn start(forge: &impl ReviewForge, dir: &std::path::Path) -> Process {
    let mut config = example(&format!("{}.yaml", forge.kind()));
    forge.point_at(&mut config, dir);
    // Long enough that what the forge decides reaches Registrar by its webhooks alone;
    // the reconcile runs at start (see the lost delivery below).
    set(&mut config, "queue.reconcile_seconds", json!(3600));
    let url = listen_on(&mut config);
    forge.send_hooks_to(&format!("{url}/webhooks/{}", forge.kind()));
    let mut p = Process::start(dir, config, &token_env());
    p.wait_ready().await;
    p
}

/// The machine reports, and its pull request is open: its number.
async fn proposed(p: &Process, forge: &impl ReviewForge, mac: &str, serial: &str) -> u64 {
    report_specs(&p.url, mac, supermicro(serial, 0x5000 + serial.len() as u32)).await;
    let m = state_reached(p, mac, "proposed").await;
    let number = m["proposal"]["number"].as_u64().unwrap_or_else(|| panic!("{m}"));
    let review = forge.review(number);
    assert!(review.open, "{review:?}");
    assert_eq!(review.head, m["proposal"]["branch"].as_str().unwrap());
    number
}

async fn journey(forge: impl ReviewForge, secret: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(&forge, dir.path()).await;

    step("a machine reports and becomes a pull request with its workflow's label");
    let first = proposed(&p, &forge, "0c:c4:7a:5a:00:01", "GT0001").await;
    let review_one = forge.review(first);
    assert!(review_one.title.to_lowercase().contains("gt0001"), "{review_one:?}");
    assert_eq!(forge.labels_of(first), vec!["workflow/ubuntu-2404".to_string()]);
    assert!(forge.repo().read(&review_one.head, "hardware/gt0001.yaml").is_some());

    step("a reviewer's workflow label chooses another workflow; Registrar's old label goes");
    assert_eq!(forge.label(first, "workflow/ubuntu-2204").await.status(), 202);
    eventually(30, "the workflow to change and the labels to follow", || async {
        let m = support::journey::machine(&p, "0c:c4:7a:5a:00:01").await;
        let labels = forge.labels_of(first);
        (m["machine"]["workflow"] == "ubuntu-2204" && labels == ["workflow/ubuntu-2204"]).then_some(())
    })
    .await;

    step("merged in the forge, it is approved and its Hardware is on main");
    assert_eq!(forge.merge(first).await.status(), 202);
    state_reached(&p, "0c:c4:7a:5a:00:01", "approved").await;
    assert!(forge.repo().read("main", "hardware/gt0001.yaml").is_some());

    step("closed in the forge, another is rejected");
    let second = proposed(&p, &forge, "0c:c4:7a:5a:00:02", "GT0002").await;
    assert_eq!(forge.close(second).await.status(), 202);
    state_reached(&p, "0c:c4:7a:5a:00:02", "rejected").await;

    step("rejected through Registrar, a fifth's pull request is closed and its branch deleted");
    let fifth = proposed(&p, &forge, "0c:c4:7a:5a:00:05", "GT0005").await;
    let branch = forge.review(fifth).head;
    review(&p, "0c:c4:7a:5a:00:05", "reject", json!({"reason": "not ours"})).await;
    eventually(
        30,
        "the rejected pull request closed and its branch deleted",
        || async { (!forge.review(fifth).open && forge.repo().head(&branch).is_none()).then_some(()) },
    )
    .await;

    step("approved through Registrar, a third is merged at the head that was reviewed");
    let third = proposed(&p, &forge, "0c:c4:7a:5a:00:03", "GT0003").await;
    let reviewed = forge.repo().head(&forge.review(third).head).unwrap().to_string();
    review(&p, "0c:c4:7a:5a:00:03", "approve", json!({})).await;
    let merged = forge.review(third);
    assert!(merged.merged && !merged.open, "{merged:?}");
    assert!(forge.repo().read("main", "hardware/gt0003.yaml").is_some());
    assert_eq!(
        forge.merges(),
        vec![(third, Some(reviewed))],
        "merged through the API, pinned to the head that was reviewed"
    );

    step("a merge whose webhook is lost is found by the reconcile (it runs at every start)");
    let fourth = proposed(&p, &forge, "0c:c4:7a:5a:00:04", "GT0004").await;
    forge.merge_quietly(fourth);
    p.restart().await;
    state_reached(&p, "0c:c4:7a:5a:00:04", "approved").await;

    step("a delivery without the secret is refused, and one about another repository ignored");
    let ours = forge.repository();
    assert_eq!(
        forge
            .deliver_change(fourth, Some("not-the-secret"), ours)
            .await
            .status(),
        401
    );
    assert_eq!(forge.deliver_change(fourth, None, ours).await.status(), 401);
    let answer = forge.deliver_change(fourth, Some(secret), "mallory/gitops").await;
    assert_eq!(answer.status(), 202);
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap()["ignored"],
        "another repository"
    );

    step("every machine has exactly one pull request");
    let reviews = forge.reviews();
    assert_eq!(reviews.len(), 5, "{reviews:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_is_reviewed_as_a_pull_request_on_forgejo_or_gitea() {
    journey(FakeGitea::start().await, support::fake_gitea::SECRET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_is_reviewed_as_a_merge_request_on_gitlab() {
    journey(FakeGitlab::start().await, support::fake_gitlab::SECRET).await;
}
