//! Reviews on GitHub that must leave Registrar agreeing with GitHub (issue 15's symptoms):
//! a fork's pull request is never ours, a delivery is a trigger to look (not the truth), a
//! merge is pinned to the head that was reviewed, a merge whose answer was lost is observed
//! rather than resent, and Registrar's own push is never taken for a person's.

mod support;

use serde_json::json;
use support::fake_github::{self, FakeGithub};
use support::*;

const MAC: &str = "3c:ec:ef:4c:4f:54";
const BRANCH: &str = "registrar/3c-ec-ef-4c-4f-54";

async fn start_with(edit: impl FnOnce(&mut registrar::config::Config) + Send + 'static) -> (FakeGithub, Registrar) {
    start_on_github(edit).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_pull_request_named_like_ours_is_never_ours() {
    let (gh, r) = start_with(|_| {}).await;
    let ours = propose_on_github(&gh, &r, MAC).await;
    // Someone opens a pull request from a fork whose branch is named like Registrar's, and
    // closes it.
    let theirs = gh.open_fork_pull("mallory/gitops", BRANCH);
    assert_ne!(ours, theirs);
    assert!(gh.close(theirs, "mallory").await.status().is_success());
    wait_webhooks_handled(&r).await;
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(m["machine"]["state"], "proposed", "{m:#}");
    assert_eq!(m["machine"]["suppressed"], false);
    assert_eq!(m["proposal"]["number"], ours);
    assert!(gh.pull(ours).open);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_closed_delivery_after_a_reopen_leaves_the_machine_proposed() {
    let (gh, r) = start_with(|_| {}).await;
    let number = propose_on_github(&gh, &r, MAC).await;
    assert!(gh.close(number, "reviewer").await.status().is_success());
    r.wait_for_state(MAC, "rejected").await;
    // The "closed" delivery, as GitHub sent it then.
    let stale = serde_json::to_vec(&gh.payload("closed", number, "reviewer", None)).unwrap();
    assert!(gh.reopen(number, "reviewer").await.status().is_success());
    r.wait_for_state(MAC, "proposed").await;
    // It arrives late (GitHub does not promise order): the pull request is open now.
    let resp = gh
        .deliver("pull_request", &fake_github::uuid(), stale, Some(fake_github::SECRET))
        .await;
    assert_eq!(resp.status(), 202);
    wait_webhooks_handled(&r).await;
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(
        m["machine"]["state"], "proposed",
        "Registrar must agree with GitHub: {m:#}"
    );
    assert!(gh.pull(number).open, "and nothing closed the reopened pull request");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merge_is_pinned_to_the_head_that_was_reviewed() {
    let (gh, r) = start_with(|_| {}).await;
    let number = propose_on_github(&gh, &r, MAC).await;
    let reviewed = gh.repo().head(BRANCH).unwrap();
    // Someone pushes to the branch after the review, and no delivery tells Registrar.
    let repo = git2::Repository::open_bare(gh.repo().path).unwrap();
    let head = repo.find_commit(reviewed).unwrap();
    let blob = repo.blob(b"kind: Secret\n").unwrap();
    let mut tree = repo.treebuilder(Some(&head.tree().unwrap())).unwrap();
    tree.insert("sneaky.yaml", blob, 0o100644).unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let sig = git2::Signature::now("Mallory", "mallory@example.com").unwrap();
    let sneaky = repo.commit(None, &sig, &sig, "more", &tree, &[&head]).unwrap();
    repo.reference(&format!("refs/heads/{BRANCH}"), sneaky, true, "push")
        .unwrap();

    let resp = r
        .post(&format!("/api/v1/machines/{MAC}/approve"), json!({"actor": "ops"}))
        .await;
    assert_eq!(resp.status(), 409, "{}", resp.text().await.unwrap());
    assert!(gh.pull(number).open, "nothing unreviewed was merged");
    assert!(gh.repo().read("main", "sneaky.yaml").is_none());
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(m["machine"]["state"], "proposed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merge_whose_answer_was_lost_is_observed_not_resent() {
    let (gh, r) = start_with(|_| {}).await;
    let number = propose_on_github(&gh, &r, MAC).await;
    gh.set_faults(fake_github::Faults {
        merge_answer_lost: true,
        ..Default::default()
    });
    let resp = r
        .post(&format!("/api/v1/machines/{MAC}/approve"), json!({"actor": "ops"}))
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(gh.pull(number).merged);
    let m = r.wait_for_state(MAC, "approved").await;
    assert_eq!(m["proposal"]["state"], "merged");
    let merges = gh
        .requests()
        .iter()
        .filter(|(m, p)| m == "PUT" && p.ends_with("/merge"))
        .count();
    assert_eq!(merges, 1, "a merge is never resent blindly");
}

#[tokio::test(flavor = "multi_thread")]
async fn registrars_own_push_is_never_taken_for_a_persons() {
    let (gh, r) = start_with(|_| {}).await;
    gh.state.lock().unwrap().push_webhooks = true;
    let number = propose_on_github(&gh, &r, MAC).await;
    let first = gh.repo().head(BRANCH).unwrap();
    // New facts re-render the proposal: Registrar pushes, and GitHub's `synchronize` for that
    // push arrives while the push is still in flight.
    let mut specs = lshw("packet-c3small-asrockrack-e3c246d4i-nl.json");
    specs[0]["product"] = json!("E3C246D4I-NL (re-inventoried)");
    r.report(&report_body(MAC, specs)).await;
    let second = {
        let mut head = first;
        for _ in 0..200 {
            head = gh.repo().head(BRANCH).unwrap();
            if head != first {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        head
    };
    assert_ne!(second, first, "the proposal was re-rendered");
    r.wait_for_state(MAC, "proposed").await;
    wait_webhooks_handled(&r).await;
    let comments = gh.comments(number);
    assert!(
        comments.iter().all(|c| !c.contains("pushed")),
        "Registrar mistook its own push for a person's: {comments:?}"
    );
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(m["proposal"]["hands_off"], false, "{m:#}");
}

/// The workflow a reviewer picks with a label stays picked: Registrar's own push and label
/// swap (whose deliveries still show the old label beside the new) never flip it back.
#[tokio::test(flavor = "multi_thread")]
async fn a_reviewers_workflow_label_is_not_flipped_back_by_registrars_own_deliveries() {
    let (gh, r) = start_with(|_| {}).await;
    gh.state.lock().unwrap().push_webhooks = true;
    let number = propose_on_github(&gh, &r, MAC).await;
    assert!(gh.pull(number).labels.contains(&"workflow/ubuntu-2404".to_string()));
    assert!(
        gh.label(number, "workflow/ubuntu-2204", "reviewer")
            .await
            .status()
            .is_success()
    );
    // Registrar re-renders, swaps the label; every delivery that causes is handled.
    for _ in 0..200 {
        let labels = gh.pull(number).labels;
        if !labels.contains(&"workflow/ubuntu-2404".to_string()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_webhooks_handled(&r).await;
    probe_worker_pass(&r, "02:00:00:00:99:02").await;
    wait_webhooks_handled(&r).await;
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(m["machine"]["workflow"], "ubuntu-2204", "{m:#}");
    assert_eq!(gh.pull(number).labels, ["registrar", "workflow/ubuntu-2204"]);
    let path = m["proposal"]["path"].as_str().unwrap();
    let manifest = gh.repo().read(BRANCH, path).unwrap();
    let workflow = documents(&manifest)
        .into_iter()
        .find(|d| d["kind"] == "Workflow")
        .unwrap();
    assert_eq!(workflow["spec"]["templateRef"], "ubuntu-2204");
}

#[tokio::test(flavor = "multi_thread")]
async fn lifting_a_rejection_reopens_the_pull_request() {
    let (gh, r) = start_with(|_| {}).await;
    let number = propose_on_github(&gh, &r, MAC).await;
    let resp = r
        .post(&format!("/api/v1/machines/{MAC}/reject"), json!({"reason": "not yet"}))
        .await;
    assert_eq!(resp.status(), 200);
    r.wait_for_state(MAC, "rejected").await;
    assert!(!gh.pull(number).open);

    let resp = r
        .post(&format!("/api/v1/machines/{MAC}/unsuppress"), json!({"actor": "ops"}))
        .await;
    assert_eq!(resp.status(), 200);
    let m = r.wait_for_state(MAC, "proposed").await;
    assert!(
        gh.pull(number).open,
        "the pull request is open again, as Registrar says"
    );
    assert_eq!(m["proposal"]["number"], number);
    assert_eq!(m["proposal"]["state"], "open");
    assert_eq!(gh.pulls().len(), 1);
}

/// Forgetting a rejected machine and seeing it again proposes it afresh: its closed pull
/// request is never re-adopted as if it were open, nor taken for a rejection of the machine
/// seen anew, however often the reconcile reads it while the machine waits for its facts.
#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_rejected_machine_gets_a_fresh_pull_request() {
    let (gh, r) = start_with(|c| c.forge.github.reconcile_seconds = 1).await;
    let first = propose_on_github(&gh, &r, MAC).await;
    assert_eq!(
        r.post(&format!("/api/v1/machines/{MAC}/reject"), json!({}))
            .await
            .status(),
        200
    );
    r.wait_for_state(MAC, "rejected").await;
    console_forget(&r.url, MAC).await;
    assert!(r.machine(MAC).await.is_none());

    // Seen again, with no facts yet (an operator imports it as expected).
    expect(&r, MAC).await;
    r.wait_for_state(MAC, "detected").await;
    wait_for_forge_reconciles(&gh, 2).await;
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(
        m["machine"]["state"], "detected",
        "the old closed pull request rejected it: {m:#}"
    );
    assert_eq!(m["machine"]["suppressed"], false);

    r.report(&report_body(MAC, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")))
        .await;
    let m = r.wait_for_state(MAC, "proposed").await;
    let second = m["proposal"]["number"].as_u64().unwrap();
    assert_ne!(second, first, "{m:#}");
    assert!(gh.pull(second).open);
    assert!(!gh.pull(first).open, "the rejected pull request stays closed");
    assert!(
        gh.comments(second).iter().any(|c| c.contains(&format!("#{first}"))),
        "and the new one says which it replaces"
    );
}

/// A fork's pull request from a branch named like Registrar's, closed after the fork was
/// deleted, does not reject a machine that has no pull request yet.
#[tokio::test(flavor = "multi_thread")]
async fn a_fork_cannot_reject_a_machine_that_has_no_pull_request_yet() {
    let (gh, r) = start_with(|_| {}).await;
    expect(&r, MAC).await;
    r.wait_for_state(MAC, "detected").await;
    // Mallory deletes the fork before closing: GitHub then names no head repository.
    let theirs = gh.open_fork_pull("mallory/gitops", BRANCH);
    gh.delete_fork(theirs);
    assert!(gh.close(theirs, "mallory").await.status().is_success());
    wait_webhooks_handled(&r).await;
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(m["machine"]["state"], "detected", "{m:#}");
    assert_eq!(m["machine"]["suppressed"], false);
}

/// An operator imports `mac` as an expected machine (it is then known, without facts).
async fn expect(r: &Registrar, mac: &str) {
    let resp = r
        .client
        .post(format!("{}/api/v1/imports?mode=expected&name=test", r.url))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "text/csv")
        .body(format!("mac\n{mac}\n"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "import: {}", resp.text().await.unwrap());
}

/// Waits until the forge's reconcile has listed the pull requests `n` more times.
async fn wait_for_forge_reconciles(gh: &FakeGithub, n: usize) {
    let lists = || {
        gh.requests()
            .iter()
            .filter(|(m, p)| m == "GET" && p.ends_with("/pulls"))
            .count()
    };
    let start = lists();
    for _ in 0..300 {
        // Each reconcile lists open and closed pull requests: two listings.
        if lists() >= start + 2 * n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the forge's reconcile never ran {n} times");
}

/// At rest, rejected machines cost nothing: their closed pull requests are not fetched on
/// every pass of the reconcile (GitHub's 5,000 requests an hour are not spent on history).
#[tokio::test(flavor = "multi_thread")]
async fn closed_proposals_cost_no_requests_at_rest() {
    let (gh, r) = start_with(|c| c.queue.reconcile_seconds = 1).await;
    let macs: Vec<String> = (1..=5).map(|i| format!("02:00:00:00:7a:0{i}")).collect();
    for mac in &macs {
        let specs = json!({"class": "system", "vendor": "Rest", "product": "Test", "serial": format!("REST{}", &mac[15..]), "children": []});
        r.report(&report_body(mac, specs)).await;
    }
    for mac in &macs {
        r.wait_for_state(mac, "proposed").await;
        assert_eq!(
            r.post(&format!("/api/v1/machines/{mac}/reject"), json!({}))
                .await
                .status(),
            200
        );
    }
    for mac in &macs {
        let m = r.machine(mac).await.unwrap();
        assert_eq!(m["proposal"]["state"], "closed", "{m:#}");
        assert!(!gh.pull(m["proposal"]["number"].as_u64().unwrap()).open);
    }
    // Two whole reconcile passes from now on.
    let passes = "registrar_reconcile_passes_total";
    let start = wait_metric(&r, passes, 1.0).await;
    wait_metric(&r, passes, start + 1.0).await;
    let before = gh.requests().len();
    wait_metric(&r, passes, start + 3.0).await;
    let during: Vec<(String, String)> = gh.requests()[before..].to_vec();
    assert!(
        during.iter().all(|(m, p)| !(m == "GET" && p.contains("/pulls/"))),
        "closed pull requests were fetched at rest: {during:?}"
    );
}

/// An approval is never cut off half-way by the client that asked for it: a script or a
/// browser that gives up before GitHub answered still gets its merge, without waiting for
/// the reconcile.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_finishes_after_the_client_gave_up() {
    let (gh, r) = start_with(|c| c.queue.reconcile_seconds = 3600).await;
    let number = propose_on_github(&gh, &r, MAC).await;
    // GitHub is slow today: every request takes a second.
    gh.set_faults(fake_github::Faults {
        timeouts: 1.0,
        timeout_for: std::time::Duration::from_secs(1),
        ..Default::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/api/v1/machines/{MAC}/approve", r.url))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"actor": "ops"}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client was meant to give up first");
    let m = r.wait_for_state(MAC, "approved").await;
    assert_eq!(m["proposal"]["state"], "merged");
    gh.set_faults(fake_github::Faults::default());
    assert!(gh.pull(number).merged);
}
