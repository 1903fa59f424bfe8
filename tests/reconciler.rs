//! One reconciler per machine, on the shipped binary (issue 15): each machine's steps run in
//! order under its own lock, so a machine waiting on GitHub holds up no other, and a
//! machine that keeps failing backs off on its own.

mod support;

use serde_json::{Value, json};
use support::binary::{Process, eventually, set, start_on_github};
use support::fake_github::{self, FakeGithub};
use support::journey::{machine, post_report, state_reached};
use support::*;

const A: &str = "0c:c4:7a:15:00:0a";
const B: &str = "0c:c4:7a:15:00:0b";

/// The binary on examples/github.yaml, pointed at the fake GitHub, its webhooks delivered.
async fn start_on_fake_github(dir: &std::path::Path, edit: impl FnOnce(&mut Value)) -> (Process, FakeGithub) {
    let gh = FakeGithub::start().await;
    let p = start_on_github(dir, &gh, |c| {
        // These tests approve through the API too, not only by merging on GitHub.
        set(c, "forge.github.approve_in_registrar", json!(true));
        edit(c)
    })
    .await;
    (p, gh)
}

async fn report(p: &Process, mac: &str, lshw_file: &str) {
    let resp = post_report(&p.url, mac, lshw_file).await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}

async fn approve(url: String, mac: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/v1/machines/{mac}/approve"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"actor": "ops"}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn number(m: &Value) -> u64 {
    m["proposal"]["number"].as_u64().expect("a pull request number")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merge_github_is_slow_to_answer_holds_up_no_other_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, gh) = start_on_fake_github(dir.path(), |_| {}).await;
    report(&p, A, "packet-c3small-asrockrack-e3c246d4i-nl.json").await;
    report(&p, B, "supermicro-ssg-6029p-x11dph-t.json").await;
    let (a, b) = (
        number(&state_reached(&p, A, "proposed").await),
        number(&state_reached(&p, B, "proposed").await),
    );

    // The operator approves A; GitHub takes its time answering that merge.
    gh.hold(&format!("/pulls/{a}/merge"));
    let approving_a = tokio::spawn(approve(p.url.clone(), A));
    eventually(30, "Registrar's merge of A to reach GitHub", || async {
        gh.requests()
            .iter()
            .any(|(method, path)| method == "PUT" && path.ends_with(&format!("/pulls/{a}/merge")))
            .then_some(())
    })
    .await;

    // Meanwhile a reviewer merges B on github.com: Registrar records it while A still waits.
    assert!(gh.merge(b, "reviewer").await.status().is_success());
    let approved = state_reached(&p, B, "approved").await;
    assert_eq!(approved["proposal"]["state"], "merged", "{approved:#}");
    assert!(!approving_a.is_finished(), "A's merge is still unanswered");
    assert!(!gh.pull(a).merged);
    assert_eq!(machine(&p, A).await["machine"]["state"], "proposed");

    // GitHub answers: A's approval completes as usual.
    gh.release();
    let (status, body) = approving_a.await.unwrap();
    assert_eq!(status, 200, "{body}");
    state_reached(&p, A, "approved").await;
    assert!(gh.pull(a).merged);
    assert!(p.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_github_keeps_refusing_backs_off_while_the_next_is_proposed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, gh) = start_on_fake_github(dir.path(), |c| {
        set(c, "queue.retry_seconds", json!(1));
        set(c, "queue.retry_max_seconds", json!(3600));
    })
    .await;
    // GitHub refuses to open any pull request until further notice.
    gh.state.lock().unwrap().refuse_creates = true;
    report(&p, A, "packet-c3small-asrockrack-e3c246d4i-nl.json").await;
    // The machine says why it waits and when it is tried next; the wait doubles from 1 s.
    let failing = eventually(60, "A's fourth failed try", || async {
        let m = machine(&p, A).await;
        let error = m["machine"]["last_error"].as_str()?.to_string();
        error.contains("(try 4;").then_some(m)
    })
    .await;
    let error = failing["machine"]["last_error"].as_str().unwrap();
    assert!(error.contains("Resource not accessible by integration"), "{error}");
    let next_in: u64 = error
        .split("next try in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no 'next try in N s' in {error:?}"));
    assert!(
        (8..16).contains(&next_in),
        "the fourth wait is 8 s plus jitter: {error}"
    );
    assert_eq!(failing["machine"]["state"], "reported", "{failing:#}");
    assert_eq!(wait_metric_binary(&p, "registrar_queue_retrying", 1.0).await, 1.0);
    assert_eq!(creates(&gh), 4, "tried four times, not on every pass");

    // GitHub accepts again. B is proposed at once, while A waits out its backoff.
    gh.state.lock().unwrap().refuse_creates = false;
    report(&p, B, "supermicro-ssg-6029p-x11dph-t.json").await;
    state_reached(&p, B, "proposed").await;
    // A is not forgotten: it is proposed when its turn comes.
    let a = eventually(120, "A to be proposed after its backoff", || async {
        let m = machine(&p, A).await;
        (m["machine"]["state"] == "proposed").then_some(m)
    })
    .await;
    assert!(gh.pull(number(&a)).open);
    assert_eq!(gh.pulls().len(), 2, "one pull request each, however often A was tried");
    assert!(p.stop().success());
}

fn creates(gh: &FakeGithub) -> usize {
    gh.requests()
        .iter()
        .filter(|(method, path)| method == "POST" && path.ends_with("/pulls"))
        .count()
}

async fn wait_metric_binary(p: &Process, series: &str, at_least: f64) -> f64 {
    eventually(30, series, || async {
        let text = reqwest::Client::new()
            .get(format!("{}/metrics", p.url))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let v = metric_in(&text, series);
        (v >= at_least).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn at_rest_finished_machines_cost_no_rate_limited_request() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, gh) = start_on_fake_github(dir.path(), |c| {
        set(c, "forge.github.reconcile_seconds", json!(1));
        set(c, "queue.reconcile_seconds", json!(1));
    })
    .await;
    report(&p, A, "packet-c3small-asrockrack-e3c246d4i-nl.json").await;
    report(&p, B, "supermicro-ssg-6029p-x11dph-t.json").await;
    let (a, b) = (
        number(&state_reached(&p, A, "proposed").await),
        number(&state_reached(&p, B, "proposed").await),
    );
    assert!(gh.merge(a, "reviewer").await.status().is_success());
    assert!(gh.close(b, "reviewer").await.status().is_success());
    state_reached(&p, A, "approved").await;
    state_reached(&p, B, "rejected").await;

    // Each reconcile pass still asks GitHub what changed, conditionally: GitHub answers
    // 304 Not Modified, which does not count against its rate limit.
    let counted = |gh: &FakeGithub| {
        let st = gh.state.lock().unwrap();
        st.requests.len() as u64 - st.not_modified
    };
    let not_modified = |gh: &FakeGithub| gh.state.lock().unwrap().not_modified;
    // The first pass after the merge and the close reads what changed; from then on, rest.
    let settled = not_modified(&gh);
    eventually(30, "a reconcile pass answered 304", || async {
        (not_modified(&gh) >= settled + 2).then_some(())
    })
    .await;
    let (before, free_before) = (counted(&gh), not_modified(&gh));
    eventually(30, "three more reconcile passes answered 304", || async {
        (not_modified(&gh) >= free_before + 6).then_some(())
    })
    .await;
    assert_eq!(counted(&gh), before, "requests that count: {:?}", &gh.requests()[..]);
    let free = wait_metric_binary(&p, r#"registrar_forge_requests_total{kind="not_modified"}"#, 6.0).await;
    assert!(free >= 6.0);
    assert!(p.stop().success());
}

/// A crash right after the pull request is opened and before Registrar records it; the
/// reviewer merges it while Registrar is down (so its webhook is lost). Back up, Registrar
/// finds its own pull request merged: the machine is approved on it, not refused as "already
/// on the base", and no second pull request is opened.
#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_merged_while_its_record_was_lost_is_an_approval() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, gh) = start_on_fake_github(dir.path(), |_| {}).await;
    p.set_env("REGISTRAR_CRASH_AT", Some("after-open"));
    p.restart().await;
    report(&p, A, "packet-c3small-asrockrack-e3c246d4i-nl.json").await;
    let number = eventually(30, "the pull request to be opened", || async {
        gh.pulls().first().map(|pr| pr.number)
    })
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while p.exited().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "Registrar did not crash after opening"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    gh.merge_quietly(number, "reviewer");

    p.set_env("REGISTRAR_CRASH_AT", None);
    p.start_again().await;
    let approved = state_reached(&p, A, "approved").await;
    assert_eq!(approved["proposal"]["number"], number, "{approved:#}");
    assert_eq!(approved["proposal"]["state"], "merged");
    assert_eq!(gh.pulls().len(), 1, "no second pull request");
    assert!(p.stop().success());
}

/// An operator rejects a machine; a reviewer disagrees, reopens its pull request on
/// github.com and merges it, both deliveries lost. The merge put the machine in git, so
/// Registrar says approved — and the machine is no longer suppressed — rather than failing
/// to record it on every reconcile for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_merged_after_its_machine_was_rejected_approves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, gh) = start_on_fake_github(dir.path(), |c| set(c, "forge.github.reconcile_seconds", json!(1))).await;
    report(&p, A, "packet-c3small-asrockrack-e3c246d4i-nl.json").await;
    let pr = number(&state_reached(&p, A, "proposed").await);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/machines/{A}/reject", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"actor": "ops", "reason": "not this one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(!gh.pull(pr).open, "the rejection closed the pull request");

    gh.reopen_quietly(pr);
    gh.merge_quietly(pr, "reviewer");
    let approved = state_reached(&p, A, "approved").await;
    assert_eq!(approved["proposal"]["number"], pr, "{approved:#}");
    assert_eq!(approved["proposal"]["state"], "merged");
    assert_eq!(approved["machine"]["suppressed"], false, "{approved:#}");
    assert!(p.stop().success());
}

/// A reviewer merged on github.com (its delivery lost); an operator, not knowing, rejects
/// the machine through the API. The rejection cannot happen — git holds the machine — so
/// the API says so with a 409 and Registrar records the merge, rather than answering 200
/// for a rejection GitHub never saw.
#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_of_a_pull_request_merged_meanwhile_is_refused_and_the_merge_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, gh) = start_on_fake_github(dir.path(), |_| {}).await;
    report(&p, A, "packet-c3small-asrockrack-e3c246d4i-nl.json").await;
    let pr = number(&state_reached(&p, A, "proposed").await);
    gh.merge_quietly(pr, "reviewer");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/machines/{A}/reject", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"actor": "ops", "reason": "not this one"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("merged before the rejection reached the forge"), "{body}");
    let m = machine(&p, A).await;
    assert_eq!(m["machine"]["state"], "approved", "{m:#}");
    assert_eq!(m["proposal"]["state"], "merged");
    assert!(p.stop().success());
}

/// Found by tests/model.rs (seed 3953551552): SIGKILL while git held a ref's lock in the
/// mirror left `<ref>.lock` behind, and every later push of that machine's branch failed with
/// "failed to lock file" for ever. A restart clears what a killed Registrar left.
#[tokio::test(flavor = "multi_thread")]
async fn a_git_lock_left_by_a_killed_registrar_does_not_stall_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, gh) = start_on_fake_github(dir.path(), |_| {}).await;
    let status = p.stop();
    assert!(status.success(), "{}", p.log());

    // What SIGKILL between git's lock and its rename leaves: the ref's lock file, and the
    // packed-refs one.
    let mirror = dir.path().join("state/mirror.git");
    let heads = mirror.join("refs/heads/registrar");
    std::fs::create_dir_all(&heads).unwrap();
    std::fs::write(heads.join("0c-c4-7a-15-00-0a.lock"), "").unwrap();
    std::fs::write(mirror.join("packed-refs.lock"), "").unwrap();

    p.start_again().await;
    report(&p, A, "packet-c3small-asrockrack-e3c246d4i-nl.json").await;
    let m = state_reached(&p, A, "proposed").await;
    let pr = gh.pull(number(&m));
    assert_eq!(pr.head, "registrar/0c-c4-7a-15-00-0a", "{pr:?}");
    assert!(pr.open, "{pr:?}");
    assert!(!heads.join("0c-c4-7a-15-00-0a.lock").exists());
    assert!(!mirror.join("packed-refs.lock").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_not_shaped_as_githubs_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, gh) = start_on_fake_github(dir.path(), |_| {}).await;
    report(&p, A, "packet-c3small-asrockrack-e3c246d4i-nl.json").await;
    let n = number(&state_reached(&p, A, "proposed").await);
    // Closed on GitHub without a delivery; then a correctly signed "closed" delivery whose
    // pull request lacks what GitHub always sends (its head).
    gh.state
        .lock()
        .unwrap()
        .pulls
        .iter_mut()
        .find(|x| x.number == n)
        .unwrap()
        .open = false;
    let mut payload = gh.payload("closed", n, "reviewer", None);
    payload["pull_request"].as_object_mut().unwrap().remove("head");
    let delivery = fake_github::uuid();
    let resp = gh
        .deliver(
            "pull_request",
            &delivery,
            serde_json::to_vec(&payload).unwrap(),
            Some(fake_github::SECRET),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let error = resp.json::<Value>().await.unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not a GitHub pull_request event"),
        "{error:#}"
    );
    wait_metric_binary(&p, r#"registrar_webhook_deliveries_total{result="malformed"}"#, 1.0).await;
    assert_eq!(machine(&p, A).await["machine"]["state"], "proposed", "nothing acted on");

    // Nothing was stored, not even its delivery id: GitHub's redelivery of the same id, now
    // whole, is accepted and acted on.
    let whole = serde_json::to_vec(&gh.payload("closed", n, "reviewer", None)).unwrap();
    let resp = gh
        .deliver("pull_request", &delivery, whole, Some(fake_github::SECRET))
        .await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let m = state_reached(&p, A, "rejected").await;
    assert!(
        m["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["actor"] == "github:reviewer"),
        "{m:#}"
    );
    assert!(p.stop().success());
}
