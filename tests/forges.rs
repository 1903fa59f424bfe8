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
//!
//! Grouped (`discovery.group_by: import`), an import batch becomes one pull request with a
//! file per machine: a reviewer unchecks a machine in its description and the branch is
//! rewritten without it, merging registers the rest, a group closed while its delivery is
//! lost is found by the reconcile, and one whose every machine is unchecked is closed.

mod support;

use serde_json::{Value, json};
use support::binary::{Process, eventually, example, listen_on, set, token_env};
use support::fake_gitea::FakeGitea;
use support::fake_gitlab::FakeGitlab;
use support::journey::{import_csv, report_specs, review, state_reached, step, supermicro};
use support::review_forge::ReviewForge;

async fn start(forge: &impl ReviewForge, dir: &std::path::Path, extra: &[(&str, Value)]) -> Process {
    let mut config = example(&format!("{}.yaml", forge.kind()));
    forge.point_at(&mut config, dir);
    for (key, value) in extra {
        set(&mut config, key, value.clone());
    }
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
    let mut p = start(&forge, dir.path(), &[]).await;

    step("a fork's pull request from the branch Registrar will use is left alone");
    let fork = forge.open_fork_request("registrar/0c-c4-7a-5a-00-01", "from someone's fork");

    step("a machine reports and becomes a pull request with its workflow's label");
    let first = proposed(&p, &forge, "0c:c4:7a:5a:00:01", "GT0001").await;
    assert_ne!(first, fork, "the fork's pull request is not Registrar's");
    assert_eq!(forge.review(fork).title, "from someone's fork");
    assert!(forge.labels_of(fork).is_empty());
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

    step("a label naming no workflow template changes nothing and is answered once, with the known ones");
    assert_eq!(forge.label(first, "workflow/windows-95").await.status(), 202);
    let answer = eventually(30, "an answer about the unknown label", || async {
        forge
            .comments(first)
            .into_iter()
            .find(|c| c.contains("workflow/windows-95"))
    })
    .await;
    assert!(answer.contains("`workflow/ubuntu-2404`"), "{answer}");
    let again = forge.deliver_change(first, Some(secret), forge.repository()).await;
    assert_eq!(again.status(), 202);
    let m = support::journey::machine(&p, "0c:c4:7a:5a:00:01").await;
    assert_eq!(m["machine"]["workflow"], "ubuntu-2204", "{m}");

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

    assert_eq!(
        forge.comments(first).len(),
        1,
        "the unknown label was answered once: {:?}",
        forge.comments(first)
    );

    step("every machine has exactly one pull request (beside the fork's)");
    let reviews = forge.reviews();
    assert_eq!(reviews.len(), 6, "{reviews:?}");
    assert!(
        forge.review(fork).open,
        "the fork's pull request was never closed by Registrar"
    );
}

/// The MACs a grouped description lists, each with whether it is checked.
fn checklist(description: &str) -> Vec<(String, bool)> {
    description
        .lines()
        .filter_map(|l| match l.strip_prefix("- [x] `") {
            Some(rest) => Some((rest, true)),
            None => l.strip_prefix("- [ ] `").map(|rest| (rest, false)),
        })
        .filter_map(|(rest, checked)| rest.split_once('`').map(|(mac, _)| (mac.to_string(), checked)))
        .collect()
}

/// Imports machines `serials` of batch `batch` and has each report what its row says.
async fn import_and_report(p: &Process, batch: &str, machines: &[(&str, &str)]) {
    let mut csv = String::from("mac,serial\n");
    for (mac, serial) in machines {
        csv.push_str(&format!("{mac},{serial}\n"));
    }
    import_csv(&p.url, batch, csv).await;
    for (i, (mac, serial)) in machines.iter().enumerate() {
        report_specs(&p.url, mac, supermicro(serial, 0x6000 + i as u32)).await;
    }
}

/// The grouped pull request whose description lists `n` machines.
async fn group_listing(forge: &impl ReviewForge, n: usize, except: &[u64]) -> u64 {
    eventually(60, "a grouped pull request listing the batch", || async {
        forge
            .reviews()
            .into_iter()
            .filter(|r| r.head.starts_with("registrar/group-import-") && !except.contains(&r.number))
            .find(|r| checklist(&forge.description(r.number)).len() == n)
            .map(|r| r.number)
    })
    .await
}

async fn grouped_journey(forge: impl ReviewForge) {
    let dir = tempfile::tempdir().unwrap();
    let grouped = [
        ("discovery.group_by", json!("import")),
        ("discovery.group_size", json!(3)),
    ];
    let mut p = start(&forge, dir.path(), &grouped).await;

    step("an imported batch of three reports and becomes one pull request, a file per machine");
    let rack_a = [
        ("0c:c4:7a:6a:00:01", "GR0001"),
        ("0c:c4:7a:6a:00:02", "GR0002"),
        ("0c:c4:7a:6a:00:03", "GR0003"),
    ];
    import_and_report(&p, "rack-a", &rack_a).await;
    let group = group_listing(&forge, 3, &[]).await;
    let branch = forge.review(group).head;
    for serial in ["gr0001", "gr0002", "gr0003"] {
        assert!(forge.repo().read(&branch, &format!("hardware/{serial}.yaml")).is_some());
    }
    for (mac, _) in rack_a {
        let m = state_reached(&p, mac, "proposed").await;
        assert_eq!(m["proposal"]["number"], group, "{m}");
    }

    step("a reviewer unchecks one: it is rejected, and the branch rewritten without it");
    let unchecked = forge
        .description(group)
        .replace("- [x] `0c:c4:7a:6a:00:02`", "- [ ] `0c:c4:7a:6a:00:02`");
    assert_eq!(forge.edit_description(group, &unchecked).await.status(), 202);
    state_reached(&p, "0c:c4:7a:6a:00:02", "rejected").await;
    eventually(
        60,
        "the branch and the description without the machine left out",
        || async {
            let listed = checklist(&forge.description(group));
            let file = forge.repo().read(&branch, "hardware/gr0002.yaml");
            (listed.len() == 2 && listed.iter().all(|(_, checked)| *checked) && file.is_none()).then_some(())
        },
    )
    .await;

    step("merged in the forge: the other two are approved, and only their files are on main");
    assert_eq!(forge.merge(group).await.status(), 202);
    state_reached(&p, "0c:c4:7a:6a:00:01", "approved").await;
    state_reached(&p, "0c:c4:7a:6a:00:03", "approved").await;
    let main = forge.repo();
    assert!(main.read("main", "hardware/gr0001.yaml").is_some());
    assert!(main.read("main", "hardware/gr0003.yaml").is_some());
    assert!(main.read("main", "hardware/gr0002.yaml").is_none());

    step("another batch's pull request, closed while its delivery is lost, is found by the reconcile");
    let rack_b = [("0c:c4:7a:6a:00:11", "GR0011"), ("0c:c4:7a:6a:00:12", "GR0012")];
    import_and_report(&p, "rack-b", &rack_b).await;
    let second = group_listing(&forge, 2, &[group]).await;
    forge.close_quietly(second);
    p.restart().await;
    for (mac, _) in rack_b {
        state_reached(&p, mac, "rejected").await;
    }

    step("a group whose every machine is unchecked is closed by Registrar, its branch deleted");
    import_and_report(&p, "rack-c", &[("0c:c4:7a:6a:00:21", "GR0021")]).await;
    let third = group_listing(&forge, 1, &[group, second]).await;
    let third_branch = forge.review(third).head;
    let unchecked = forge.description(third).replace("- [x] `", "- [ ] `");
    assert_eq!(forge.edit_description(third, &unchecked).await.status(), 202);
    state_reached(&p, "0c:c4:7a:6a:00:21", "rejected").await;
    eventually(
        60,
        "the emptied group's pull request closed and its branch gone",
        || async { (!forge.review(third).open && forge.repo().head(&third_branch).is_none()).then_some(()) },
    )
    .await;

    step("one pull request per group, none per machine");
    let reviews = forge.reviews();
    assert_eq!(reviews.len(), 3, "{reviews:?}");
}

/// Approval by policy: a group whose every machine reports exactly its import row is
/// merged by Registrar (these forges have no merge-when-ready), pinned to what it pushed.
async fn group_approved_by_policy(forge: impl ReviewForge) {
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("discovery.group_by", json!("import")),
        ("discovery.group_size", json!(2)),
        ("discovery.auto_approve", json!("expected")),
    ];
    let p = start(&forge, dir.path(), &settings).await;
    let batch = [("0c:c4:7a:6a:00:31", "GR0031"), ("0c:c4:7a:6a:00:32", "GR0032")];
    import_and_report(&p, "rack-d", &batch).await;
    for (mac, _) in batch {
        state_reached(&p, mac, "approved").await;
    }
    // One group, or two when the queue went idle between the reports (a partly filled
    // group is pushed then): each merged by Registrar, pinned, on a branch of its own.
    let reviews = forge.reviews();
    assert!(!reviews.is_empty() && reviews.len() <= 2, "{reviews:?}");
    assert!(reviews.iter().all(|r| r.merged), "{reviews:?}");
    let branches: std::collections::BTreeSet<&str> = reviews.iter().map(|r| r.head.as_str()).collect();
    assert_eq!(
        branches.len(),
        reviews.len(),
        "a branch name is never reused: {reviews:?}"
    );
    let merges = forge.merges();
    assert_eq!(merges.len(), reviews.len(), "{merges:?}");
    for (number, pinned) in &merges {
        assert!(reviews.iter().any(|r| r.number == *number), "{merges:?}");
        assert!(
            pinned.is_some(),
            "the merge names the head Registrar pushed: {merges:?}"
        );
    }
    assert!(forge.repo().read("main", "hardware/gr0031.yaml").is_some());
    assert!(forge.repo().read("main", "hardware/gr0032.yaml").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_is_reviewed_as_a_pull_request_on_forgejo_or_gitea() {
    journey(FakeGitea::start().await, support::fake_gitea::SECRET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_is_reviewed_as_a_merge_request_on_gitlab() {
    journey(FakeGitlab::start().await, support::fake_gitlab::SECRET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_batch_is_reviewed_as_one_pull_request_on_forgejo_or_gitea() {
    grouped_journey(FakeGitea::start().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_batch_is_reviewed_as_one_merge_request_on_gitlab() {
    grouped_journey(FakeGitlab::start().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_approved_by_policy_is_merged_on_forgejo_or_gitea() {
    group_approved_by_policy(FakeGitea::start().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_approved_by_policy_is_merged_on_gitlab() {
    group_approved_by_policy(FakeGitlab::start().await).await;
}
