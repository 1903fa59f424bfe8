//! Registrar on the GitHub forge, against a stateful fake GitHub whose branches live in a
//! real bare repository pushed to over smart HTTP, with webhooks signed as GitHub signs them.

#[path = "../support/mod.rs"]
mod support;

use registrar::propose::forge::github::events::Delivery;

mod console;

use std::time::Duration;

use support::fake_github::{self, FakeGithub, SECRET};
use support::*;

async fn start_with(edit: impl FnOnce(&mut registrar::config::Config) + Send + 'static) -> (FakeGithub, Registrar) {
    start_on_github(edit).await
}

async fn start() -> (FakeGithub, Registrar) {
    start_with(|_| {}).await
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

const MAC: &str = "3c:ec:ef:4c:4f:54";
const BRANCH: &str = "registrar/3c-ec-ef-4c-4f-54";
/// A machine of its own, reported to prove that the proposal worker has run a pass.
const PROBE: &str = "02:00:00:00:99:01";

fn pulls_of(gh: &FakeGithub, branch: &str) -> usize {
    gh.pulls().iter().filter(|p| p.head == branch).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_opens_one_pull_request_with_body_and_labels_at_three_calls() {
    let (gh, r) = start().await;
    // Labels are created at start, with colour and description.
    eventually("labels", || {
        gh.state
            .lock()
            .unwrap()
            .labels
            .get("workflow/ubuntu-2404")
            .filter(|(c, _)| c != "ededed")
            .cloned()
    })
    .await;
    // And the forge's first reconcile has listed the pull requests (open and closed), so
    // its listings do not count as this machine's calls.
    eventually("the first reconcile's listings", || {
        let listings = gh
            .requests()
            .iter()
            .filter(|(m, p)| m == "GET" && p.ends_with("/pulls"))
            .count();
        (listings >= 2).then_some(())
    })
    .await;
    let before = gh.requests().len();
    let n = propose_on_github(&gh, &r, MAC).await;
    let pull = gh.pull(n);
    assert_eq!(
        pull.title,
        "Register d5s0r8000105 (Packet c3.small.x86, 3c:ec:ef:4c:4f:54)"
    );
    assert_eq!(pull.head, BRANCH);
    assert_eq!(pull.base, "main");
    assert!(pull.body.contains("| Memory | 32\\.0 GiB |"), "{}", pull.body);
    assert_eq!(pull.labels, ["registrar", "workflow/ubuntu-2404"]);
    assert!(
        gh.repo().read(BRANCH, "hardware/d5s0r8000105.yaml").is_some(),
        "pushed over smart HTTP"
    );
    let calls: Vec<_> = gh.requests()[before..].to_vec();
    assert_eq!(calls.len(), 3, "lookup, create, labels: {calls:?}");
    assert_eq!(calls.iter().filter(|(m, _)| m != "GET").count(), 2, "{calls:?}");

    // The same report again: the same pull request, no REST call at all. A probe machine
    // reported after it is proposed once a worker pass has synced everything queued before
    // it; the REST calls since are then the probe's own three, and nothing for this machine.
    let before = gh.requests().len();
    let resp = r
        .report(&report_body(MAC, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")))
        .await;
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["queued"], false);
    let probe = probe_worker_pass(&r, PROBE).await["proposal"]["number"]
        .as_u64()
        .unwrap();
    assert_ne!(probe, n);
    let pulls = "/repos/acme/gitops/pulls".to_string();
    let expected = [
        ("GET".to_string(), pulls.clone()),
        ("POST".to_string(), pulls),
        ("POST".to_string(), format!("/repos/acme/gitops/issues/{probe}/labels")),
    ];
    assert_eq!(gh.requests()[before..], expected, "only the probe's calls");
    assert_eq!(pulls_of(&gh, BRANCH), 1);
    assert_eq!(r.machine(MAC).await.unwrap()["machine"]["pending"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_label_re_renders_and_an_unknown_one_gets_one_comment() {
    let (gh, r) = start().await;
    let n = propose_on_github(&gh, &r, MAC).await;
    let first = gh.repo().head(BRANCH).unwrap();
    assert_eq!(gh.label(n, "workflow/ubuntu-2204", "alice").await.status(), 202);
    let yaml = eventually("re-render", || {
        gh.repo()
            .read(BRANCH, "hardware/d5s0r8000105.yaml")
            .filter(|y| y.contains("templateRef: \"ubuntu-2204\""))
    })
    .await;
    assert!(yaml.contains("kind: Workflow"));
    assert_ne!(gh.repo().head(BRANCH).unwrap(), first);
    assert_eq!(
        gh.repo().commits_ahead("main", BRANCH),
        1,
        "rebuilt as one commit on the base"
    );
    eventually("old label removed", || {
        (gh.pull(n).labels == ["registrar", "workflow/ubuntu-2204"]).then_some(())
    })
    .await;
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(m["machine"]["workflow"], "ubuntu-2204");
    assert!(
        m["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["actor"] == "github:alice")
    );

    // Unknown workflow: one explanatory comment, however often it is said.
    gh.label(n, "workflow/../../etc/passwd", "mallory").await;
    eventually("comment", || (gh.comments(n).len() == 1).then_some(())).await;
    let payload = gh.payload("labeled", n, "mallory", Some("workflow/../../etc/passwd"));
    let resp = gh
        .deliver(
            "pull_request",
            &fake_github::uuid(),
            serde_json::to_vec(&payload).unwrap(),
            Some(SECRET),
        )
        .await;
    assert_eq!(resp.status(), 202, "a new delivery, handed to the background");
    // Every accepted delivery, this one included, handled to the end: had it commented
    // again, the comment would be there now.
    wait_webhooks_handled(&r).await;
    let comments = gh.comments(n);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0].contains("`workflow/../../etc/passwd`") && comments[0].contains("nothing changed"),
        "{}",
        comments[0]
    );
    assert_eq!(r.machine(MAC).await.unwrap()["machine"]["workflow"], "ubuntu-2204");
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_approves_close_rejects_reopen_proposes_again() {
    let (gh, r) = start().await;
    let n = propose_on_github(&gh, &r, MAC).await;
    assert_eq!(gh.close(n, "bob").await.status(), 202);
    let m = r.wait_for_state(MAC, "rejected").await;
    assert_eq!(m["machine"]["suppressed"], true);
    assert!(
        m["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["actor"] == "github:bob" && t["to"] == "rejected")
    );
    // Suppressed: a new report opens nothing, even after a worker pass (the probe's).
    let resp = r
        .report(&report_body(MAC, lshw("supermicro-ssg-6029p-x11dph-t.json")))
        .await;
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["suppressed"], true);
    probe_worker_pass(&r, PROBE).await;
    assert_eq!(pulls_of(&gh, BRANCH), 1);
    assert!(!gh.pull(n).open, "not reopened");
    assert_eq!(r.wait_for_state(MAC, "rejected").await["machine"]["suppressed"], true);

    assert_eq!(gh.reopen(n, "bob").await.status(), 202);
    r.wait_for_state(MAC, "proposed").await;
    assert_eq!(pulls_of(&gh, BRANCH), 1, "the same pull request, reopened");

    assert_eq!(gh.merge(n, "carol").await.status(), 202);
    let m = r.wait_for_state(MAC, "approved").await;
    assert!(
        m["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["actor"] == "github:carol" && t["to"] == "approved")
    );
    // The report sent while suppressed was not taken: the merged manifest is the reviewed one.
    assert!(
        gh.repo().read("main", "hardware/d5s0r8000105.yaml").is_some(),
        "{:?}",
        gh.repo().files("main")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signatures_are_refused_and_replays_change_nothing() {
    let (gh, r) = start().await;
    let n = propose_on_github(&gh, &r, MAC).await;
    gh.state.lock().unwrap().pulls[0].open = false;
    let body = serde_json::to_vec(&gh.payload("closed", n, "eve", None)).unwrap();
    let (accepted, refused) = (
        metric(&r, WEBHOOKS_ACCEPTED).await,
        metric(&r, WEBHOOKS_BAD_SIGNATURE).await,
    );
    for (what, secret) in [
        ("missing", None),
        ("wrong", Some("not-the-secret")),
        ("stale (rotated-out) secret", Some("webhook-secret-of-last-year")),
    ] {
        let resp = gh
            .deliver("pull_request", &fake_github::uuid(), body.clone(), secret)
            .await;
        assert_eq!(resp.status(), 401, "{what}");
    }
    // A body altered after signing.
    let resp = r
        .client
        .post(format!("{}/webhooks/github", r.url))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", fake_github::uuid())
        .header("x-hub-signature-256", fake_github::sign(SECRET, &body))
        .body([&body[..], b" "].concat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Refused before anything is handed to the background (which counts as accepted first):
    // the counters prove that none of the four will act later.
    let text = metrics_text(&r).await;
    assert_eq!(metric_in(&text, WEBHOOKS_BAD_SIGNATURE), refused + 4.0, "{text}");
    assert_eq!(metric_in(&text, WEBHOOKS_ACCEPTED), accepted, "{text}");
    assert_eq!(
        r.machine(MAC).await.unwrap()["machine"]["state"],
        "proposed",
        "nothing changed"
    );

    // A genuine delivery, then the same delivery replayed after the machine was reopened.
    let delivery = fake_github::uuid();
    assert_eq!(
        gh.deliver("pull_request", &delivery, body.clone(), Some(SECRET))
            .await
            .status(),
        202
    );
    r.wait_for_state(MAC, "rejected").await;
    gh.state.lock().unwrap().pulls[0].open = true;
    gh.reopen(n, "bob").await;
    r.wait_for_state(MAC, "proposed").await;
    let (accepted, duplicates) = (
        metric(&r, WEBHOOKS_ACCEPTED).await,
        metric(&r, WEBHOOKS_DUPLICATE).await,
    );
    let resp = gh.deliver("pull_request", &delivery, body, Some(SECRET)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["duplicate"], delivery);
    // Counted a duplicate, not accepted: never handed to the background. And everything
    // that was accepted (the genuine close, the reopen) has been handled to the end.
    let text = metrics_text(&r).await;
    assert_eq!(metric_in(&text, WEBHOOKS_DUPLICATE), duplicates + 1.0, "{text}");
    assert_eq!(metric_in(&text, WEBHOOKS_ACCEPTED), accepted, "{text}");
    wait_webhooks_handled(&r).await;
    assert_eq!(r.machine(MAC).await.unwrap()["machine"]["state"], "proposed");

    // Ping, and deliveries about other repositories.
    assert_eq!(
        gh.deliver(
            "ping",
            &fake_github::uuid(),
            br#"{"zen": "Keep it logically awesome."}"#.to_vec(),
            Some(SECRET)
        )
        .await
        .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_delivery_is_caught_up_by_the_reconcile() {
    let (gh, r) = start_with(|c| c.forge.github.reconcile_seconds = 1).await;
    let n = propose_on_github(&gh, &r, MAC).await;
    gh.merge_quietly(n, "dave");
    let m = r.wait_for_state(MAC, "approved").await;
    assert!(
        m["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["to"] == "approved" && t["actor"] == "github:dave"),
        "{m:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_github_payloads_parse_and_other_repositories_are_ignored() {
    let (gh, r) = start().await;
    let dir = shared_path(
        "fixtures/github/webhooks",
        "recorded GitHub webhook deliveries (<event>.<action>.<n>.json)",
    );
    let (mut pull_requests, mut pushes) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let body = std::fs::read(&path).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let event = name.split('.').next().unwrap();
        // Read as Registrar reads them: with octocrab's webhook models.
        match Delivery::read(event, &body).unwrap_or_else(|e| panic!("{name}: {e}")) {
            Delivery::PullRequest { pull, labeled, sender } => {
                assert_eq!(pull.number, payload["number"].as_u64().unwrap(), "{name}");
                assert_eq!(pull.head_ref, payload["pull_request"]["head"]["ref"].as_str().unwrap());
                assert_eq!(
                    pull.head_repo,
                    payload["pull_request"]["head"]["repo"]["full_name"].as_str().unwrap()
                );
                assert_eq!(pull.open, payload["pull_request"]["state"] == "open", "{name}");
                assert_eq!(
                    labeled.as_deref(),
                    payload["label"]["name"]
                        .as_str()
                        .filter(|_| payload["action"] == "labeled")
                );
                assert_eq!(sender.as_deref(), payload["sender"]["login"].as_str());
                pull_requests += 1;
            }
            Delivery::Push { branch_ref } => {
                assert_eq!(branch_ref, payload["ref"].as_str().unwrap());
                pushes += 1;
            }
            Delivery::Comment(comment) => {
                assert_eq!(event, "issue_comment", "{name}");
                assert_eq!(comment.number, payload["issue"]["number"].as_u64().unwrap(), "{name}");
                assert_eq!(comment.body, payload["comment"]["body"].as_str().unwrap_or_default());
                assert_eq!(comment.author, payload["comment"]["user"]["login"].as_str().unwrap());
            }
            Delivery::Unused => assert!(
                event != "pull_request" && event != "push" && !name.starts_with("issue_comment.created"),
                "{name}"
            ),
        }
        let resp = gh.deliver(event, &fake_github::uuid(), body, Some(SECRET)).await;
        let status = resp.status().as_u16();
        if event == "ping" {
            assert_eq!(status, 200, "{name}");
        } else {
            assert_eq!(status, 202, "{name}");
            assert_eq!(
                resp.json::<serde_json::Value>().await.unwrap()["ignored"],
                "another repository",
                "{name}"
            );
        }
    }
    assert!(pull_requests >= 10 && pushes >= 1);
    assert_eq!(r.machine_count().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn under_faults_a_hundred_machines_get_exactly_a_hundred_pull_requests() {
    let (gh, r) = start_with(|c| {
        c.forge.github.request_timeout_ms = 300;
        c.queue.retry_seconds = 1;
    })
    .await;
    eventually("labels", || {
        gh.state.lock().unwrap().labels.contains_key("registrar").then_some(())
    })
    .await;
    gh.set_faults(fake_github::Faults {
        server_errors: 0.2,
        secondary_limits: 0.03,
        timeouts: 0.05,
        timeout_for: Duration::from_millis(600),
        ..Default::default()
    });
    let macs: Vec<String> = (0..100).map(|i| format!("02:00:00:00:01:{i:02x}")).collect();
    for (i, mac) in macs.iter().enumerate() {
        let mut specs = lshw("packet-c3small-asrockrack-e3c246d4i-nl.json");
        specs[0]["serial"] = serde_json::Value::String(format!("FAULT{i:03}"));
        assert_eq!(r.report(&report_body(mac, specs)).await.status(), 202);
    }
    for mac in &macs {
        let m = r.wait_for_state(mac, "proposed").await;
        assert!(m["proposal"]["number"].is_u64());
    }
    gh.set_faults(fake_github::Faults::default());
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 100, "exactly one pull request per machine");
    let mut heads: Vec<&str> = pulls.iter().map(|p| p.head.as_str()).collect();
    heads.sort();
    heads.dedup();
    assert_eq!(heads.len(), 100);
    assert!(
        pulls.iter().all(|p| p.labels == ["registrar", "workflow/ubuntu-2404"]),
        "{:?}",
        pulls.iter().map(|p| &p.labels).collect::<Vec<_>>()
    );
    let hits = gh.state.lock().unwrap().secondary_limit_hits;
    assert!(hits > 0, "the faults did fire");
    // Every record points at its own pull request.
    for mac in &macs {
        let m = r.machine(mac).await.unwrap();
        let n = m["proposal"]["number"].as_u64().unwrap();
        assert_eq!(gh.pull(n).head, format!("registrar/{}", mac.replace(':', "-")));
    }
    // Reviews over webhooks: half merged, half closed.
    for (i, mac) in macs.iter().enumerate().take(20) {
        let n = r.machine(mac).await.unwrap()["proposal"]["number"].as_u64().unwrap();
        if i % 2 == 0 {
            gh.merge(n, "ops").await;
        } else {
            gh.close(n, "ops").await;
        }
    }
    for (i, mac) in macs.iter().enumerate().take(20) {
        r.wait_for_state(mac, if i % 2 == 0 { "approved" } else { "rejected" })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_human_push_is_respected_and_said_once() {
    let (gh, r) = start().await;
    let n = propose_on_github(&gh, &r, MAC).await;
    // A person fixes something on the branch.
    let human = {
        let repo = git2::Repository::open_bare(&gh.repo().path).unwrap();
        let head = repo
            .find_branch(BRANCH, git2::BranchType::Local)
            .unwrap()
            .get()
            .peel_to_commit()
            .unwrap();
        let blob = repo.blob(b"# reviewed by hand\n").unwrap();
        let tree = git2::build::TreeUpdateBuilder::new()
            .upsert("hardware/NOTES.md", blob, git2::FileMode::Blob)
            .create_updated(&repo, &head.tree().unwrap())
            .unwrap();
        let sig = git2::Signature::now("Alice", "alice@example.org").unwrap();
        repo.commit(
            Some(&format!("refs/heads/{BRANCH}")),
            &sig,
            &sig,
            "hand edit",
            &repo.find_tree(tree).unwrap(),
            &[&head],
        )
        .unwrap()
    };
    let payload = gh.payload("synchronize", n, "alice", None);
    assert_eq!(
        gh.deliver(
            "pull_request",
            &fake_github::uuid(),
            serde_json::to_vec(&payload).unwrap(),
            Some(SECRET)
        )
        .await
        .status(),
        202
    );
    eventually("the comment", || (gh.comments(n).len() == 1).then_some(())).await;
    assert!(
        gh.comments(n)[0].contains("will not update this branch"),
        "{:?}",
        gh.comments(n)
    );

    // New facts and a workflow label no longer rewrite the branch, and nothing is said twice.
    let resp = r
        .report(&report_body(MAC, lshw("supermicro-ssg-6029p-x11dph-t.json")))
        .await;
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["queued"], true);
    assert_eq!(gh.label(n, "workflow/ubuntu-2204", "alice").await.status(), 202);
    // The label's delivery handled to the end (it queues the machine again), then the
    // machine synced with nothing left to do: both changes have been acted on.
    wait_webhooks_handled(&r).await;
    let m = r.wait_for_state(MAC, "proposed").await;
    assert_eq!(m["machine"]["workflow"], "ubuntu-2204", "the label was taken: {m:#}");
    assert_eq!(
        m["machine"]["facts"]["vendor"], "Supermicro",
        "the report was taken: {m:#}"
    );
    assert_eq!(
        gh.repo().head(BRANCH),
        Some(human),
        "the person's commit stays the head"
    );
    assert_eq!(gh.comments(n).len(), 1, "{:?}", gh.comments(n));
    assert_eq!(m["proposal"]["hands_off"], true);

    // Merging still approves.
    gh.merge(n, "alice").await;
    r.wait_for_state(MAC, "approved").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn as_a_github_app_with_installation_tokens() {
    let gh = FakeGithub::start().await;
    let fixtures = manifest_dir().join("tests/fixtures");
    gh.state.lock().unwrap().app = Some((
        4242,
        std::fs::read(fixtures.join("github-app-test-key.pub.pem")).unwrap(),
    ));
    let (api, git, key) = (gh.url.clone(), gh.git_url(), fixtures.join("github-app-test-key.pem"));
    let r = Registrar::start_with(move |c| {
        fake_github::configure(c, &api, &git);
        c.forge.github.token = None;
        c.forge.github.app_id = Some(4242);
        c.forge.github.app_private_key_file = Some(key);
        c.forge.github.installation_id = Some(42);
    })
    .await;
    *gh.hook_url.lock().unwrap() = Some(format!("{}/webhooks/github", r.url));
    let n = propose_on_github(&gh, &r, MAC).await;
    assert_eq!(gh.pull(n).labels, ["registrar", "workflow/ubuntu-2404"]);
    assert!(
        gh.repo().read(BRANCH, "hardware/d5s0r8000105.yaml").is_some(),
        "pushed with an installation token"
    );
    assert!(
        !gh.state.lock().unwrap().installation_tokens.is_empty(),
        "a JWT bought an installation token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn during_a_secret_rotation_both_secrets_are_accepted_and_no_other() {
    let secrets = tempfile::tempdir().unwrap();
    let previous = secrets.path().join("previous");
    std::fs::write(&previous, "the-webhook-secret-being-rotated-out\n").unwrap();
    let p = previous.clone();
    let (gh, r) = start_with(move |c| c.forge.github.webhook_previous_secret_file = Some(p)).await;
    let n = propose_on_github(&gh, &r, MAC).await;
    let body = serde_json::to_vec(&gh.payload("labeled", n, "octocat", Some("registrar"))).unwrap();
    for (secret, expected) in [
        (Some("the-webhook-secret-being-rotated-out"), 202),
        (Some(SECRET), 202),
        (Some("a-secret-nobody-configured"), 401),
    ] {
        let resp = gh
            .deliver("pull_request", &fake_github::uuid(), body.clone(), secret)
            .await;
        assert_eq!(resp.status(), expected, "{secret:?}");
    }
}
