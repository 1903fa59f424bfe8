//! Issue 19 on the shipped binary: a delivery bigger than reviewers read at once.
//!
//! Review slots and the dashboard: with
//! `discovery.max_open_proposals: 2`, five machines become two pull requests; the other
//! three wait for a review slot and say so; each merge or close lets the next one through,
//! and never are more than two open. The dashboard issue says what is open and what waits,
//! with links: one issue, edited in place, found again after a restart.
//!
//! Auto-approval (`discovery.auto_approve: expected`): a machine that reports exactly what
//! its import row says gets GitHub's auto-merge, and is merged only once the required
//! checks pass; a machine whose serial differs from its row, and one nobody imported, wait
//! for a person.

mod support;

use serde_json::{Value, json};
use support::OPERATOR_TOKEN;
use support::binary::{Process, eventually, example, listen_on, point_at_github, set, token_env};
use support::fake_github::{FakeGithub, Issue};
use support::journey::{import_csv, machine, report_specs, supermicro};

fn mac_of(i: usize) -> String {
    format!("0c:c4:7a:19:00:{i:02x}")
}

fn open_pulls(gh: &FakeGithub) -> Vec<u64> {
    let open: Vec<u64> = gh.pulls().into_iter().filter(|p| p.open).map(|p| p.number).collect();
    assert!(open.len() <= 2, "never more than two open: {open:?}");
    open
}

fn dashboards(gh: &FakeGithub) -> Vec<Issue> {
    gh.issues()
        .into_iter()
        .filter(|i| i.labels.iter().any(|l| l == "registrar/dashboard"))
        .collect()
}

/// The dashboard, once its text contains every one of `wanted`.
async fn dashboard_saying(gh: &FakeGithub, wanted: &[&str]) -> Issue {
    eventually(60, &format!("the dashboard to say {wanted:?}"), || async {
        let all = dashboards(gh);
        assert!(all.len() <= 1, "one dashboard issue: {all:?}");
        all.into_iter().find(|i| wanted.iter().all(|w| i.body.contains(w)))
    })
    .await
}

async fn waiting_for_a_slot(p: &Process) -> Vec<String> {
    let mut waiting = Vec::new();
    for i in 0..5 {
        let m: Value = machine(p, &mac_of(i)).await;
        if m["machine"]["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("waiting for a review slot"))
        {
            waiting.push(mac_of(i));
        }
    }
    waiting
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_waits_for_review_slots_and_the_dashboard_says_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let mut config = example("github.yaml");
    point_at_github(&mut config, dir.path(), &gh);
    let url = listen_on(&mut config);
    set(&mut config, "discovery.max_open_proposals", json!(2));
    set(&mut config, "forge.github.dashboard", json!(true));
    set(&mut config, "forge.github.mutation_interval_ms", json!(0));
    *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;

    support::journey::step("five machines report; two pull requests open, three wait for a slot");
    for i in 0..5 {
        let specs = supermicro(&format!("SLOT{i:04}"), 0x1900 + i as u32);
        report_specs(&p.url, &mac_of(i), specs).await;
    }
    eventually(60, "two pull requests and three machines waiting", || async {
        let open = open_pulls(&gh);
        let waiting = waiting_for_a_slot(&p).await;
        (open.len() == 2 && waiting.len() == 3).then_some(())
    })
    .await;
    eventually(30, "the waiting to be counted", || async {
        (p.metric("registrar_review_slot_waiting ").await == 3.0).then_some(())
    })
    .await;
    let first = open_pulls(&gh);
    let dashboard = dashboard_saying(&gh, &["## Open for review (2)", "## Waiting for a review slot (3)"]).await;
    for n in &first {
        assert!(
            dashboard
                .body
                .contains(&format!("[#{n}](https://github.example/acme/gitops/pull/{n})")),
            "a link to #{n}: {}",
            dashboard.body
        );
    }

    support::journey::step("one merged, one closed: the next two are proposed, two open at most");
    assert!(gh.merge(first[0], "reviewer").await.status().is_success());
    eventually(60, "a third pull request", || async {
        (gh.pulls().len() == 3 && open_pulls(&gh).len() == 2).then_some(())
    })
    .await;
    assert!(gh.close(first[1], "reviewer").await.status().is_success());
    eventually(60, "a fourth pull request", || async {
        (gh.pulls().len() == 4 && open_pulls(&gh).len() == 2).then_some(())
    })
    .await;
    assert_eq!(waiting_for_a_slot(&p).await.len(), 1);
    let edited = dashboard_saying(&gh, &["## Waiting for a review slot (1)"]).await;
    assert_eq!(edited.number, dashboard.number, "edited in place");

    support::journey::step("restarted: the same dashboard is found again and kept current");
    p.restart().await;
    let open = open_pulls(&gh);
    assert!(gh.merge(open[0], "reviewer").await.status().is_success());
    let after = dashboard_saying(&gh, &["## Waiting for a review slot (0)"]).await;
    assert_eq!(after.number, dashboard.number, "no second dashboard after a restart");
    eventually(60, "the last machine's pull request", || async {
        (gh.pulls().len() == 5 && open_pulls(&gh).len() == 2).then_some(())
    })
    .await;
    assert!(waiting_for_a_slot(&p).await.is_empty());
    assert!(p.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_exact_expected_matches_are_approved_and_only_after_the_checks_pass() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    gh.state.lock().unwrap().required_checks = true;
    let mut config = example("github.yaml");
    point_at_github(&mut config, dir.path(), &gh);
    let url = listen_on(&mut config);
    set(&mut config, "discovery.auto_approve", json!("expected"));
    set(&mut config, "forge.github.mutation_interval_ms", json!(0));
    *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;

    support::journey::step("two rows imported; three machines report, one of them a stranger");
    let (exact, wrong_serial, stranger) = (mac_of(0x10), mac_of(0x11), mac_of(0x12));
    import_csv(
        &p.url,
        "delivery-7",
        format!("mac,serial\n{exact},AUTO0010\n{wrong_serial},AUTO9999\n"),
    )
    .await;
    // Machines of their own (serial and system UUID): a shared identity would warn the
    // reviewer, and no warned proposal is approved by policy.
    for (i, mac) in [(0x10, &exact), (0x11, &wrong_serial), (0x12, &stranger)] {
        report_specs(&p.url, mac, supermicro(&format!("AUTO{i:04x}"), 0x2000 + i)).await;
    }
    let pull_of = |mac: &str| {
        let branch = format!("registrar/{}", mac.replace(':', "-"));
        gh.pulls().into_iter().find(|p| p.head == branch)
    };
    eventually(60, "three pull requests, auto-merge on the exact match", || async {
        let all = [&exact, &wrong_serial, &stranger].map(|m| pull_of(m));
        all.iter()
            .all(Option::is_some)
            .then(|| all[0].clone().unwrap())
            .filter(|p| p.auto_merge)
    })
    .await;
    // Each machine's sync, auto-approval step included, is done before anything is judged.
    for mac in [&exact, &wrong_serial, &stranger] {
        eventually(60, "its sync to finish", || async {
            let m = machine(&p, mac).await;
            (m["machine"]["pending"] == false && m["machine"]["state"] == "proposed").then_some(())
        })
        .await;
    }
    for mac in [&exact, &wrong_serial, &stranger] {
        let m = machine(&p, mac).await;
        assert!(
            !m["proposal"]["summary"]
                .as_str()
                .unwrap_or_default()
                .contains("Identity:"),
            "no identity warning: {m}"
        );
    }
    assert!(
        !pull_of(&wrong_serial).unwrap().auto_merge,
        "a serial other than its row's"
    );
    assert!(!pull_of(&stranger).unwrap().auto_merge, "nobody imported it");
    let m = machine(&p, &exact).await;
    assert_eq!(m["machine"]["state"], "proposed", "not merged before the checks pass");
    let causes: Vec<String> = m["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cause"].as_str().unwrap().to_string())
        .collect();
    assert!(
        causes
            .iter()
            .any(|c| c.contains("approved by policy (it matches expected — delivery-7, row 2 exactly)")),
        "{causes:?}"
    );

    support::journey::step("the checks pass: GitHub merges the exact match; the others wait for a person");
    assert!(gh.checks_pass(pull_of(&exact).unwrap().number).await);
    assert!(!gh.checks_pass(pull_of(&wrong_serial).unwrap().number).await);
    assert!(!gh.checks_pass(pull_of(&stranger).unwrap().number).await);
    support::journey::state_reached(&p, &exact, "approved").await;
    for mac in [&wrong_serial, &stranger] {
        assert_eq!(machine(&p, mac).await["machine"]["state"], "proposed");
    }
    assert!(p.stop().success());
}

/// The embedded default reviews in the console: there, an exact match is approved at once
/// (there are no checks to wait for), by the policy, and the audit trail says so.
#[tokio::test(flavor = "multi_thread")]
async fn on_the_local_forge_an_exact_match_is_approved_at_once_by_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = example("local.yaml");
    set(&mut config, "discovery.auto_approve", json!("expected"));
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;
    let (exact, other) = (mac_of(0x20), mac_of(0x21));
    import_csv(
        &p.url,
        "delivery-8",
        format!("mac,serial\n{exact},LOCAL0020\n{other},LOCAL9999\n"),
    )
    .await;
    report_specs(&p.url, &exact, supermicro("LOCAL0020", 0x2100)).await;
    report_specs(&p.url, &other, supermicro("LOCAL0021", 0x2101)).await;
    support::journey::state_reached(&p, &exact, "approved").await;
    support::journey::state_reached(&p, &other, "proposed").await;
    let (_, audit) = support::journey::get(&format!("{}/api/v1/audit", p.url), OPERATOR_TOKEN).await;
    assert!(
        audit.to_string().contains("policy:auto_approve"),
        "the trail names the policy: {audit}"
    );
    assert_eq!(machine(&p, &other).await["machine"]["state"], "proposed");
    assert!(p.stop().success());
}
