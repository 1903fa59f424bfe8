//! Issue 19 on the shipped binary: a delivery bigger than reviewers read at once. With
//! `discovery.max_open_proposals: 2`, five machines become two pull requests; the other
//! three wait for a review slot and say so; each merge or close lets the next one through,
//! and never are more than two open. The dashboard issue says what is open and what waits,
//! with links: one issue, edited in place, found again after a restart.

mod support;

use serde_json::{Value, json};
use support::binary::{Process, eventually, example, listen_on, point_at_github, set, token_env};
use support::fake_github::{FakeGithub, Issue};
use support::journey::machine;
use support::{REPORT_TOKEN, lshw, report_body};

const LSHW: &str = "supermicro-ssg-6029p-x11dph-t.json";

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
        let mut specs = lshw(LSHW);
        specs["serial"] = json!(format!("SLOT{i:04}"));
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/reports", p.url))
            .bearer_auth(REPORT_TOKEN)
            .json(&report_body(&mac_of(i), specs))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    eventually(60, "two pull requests and three machines waiting", || async {
        let open = open_pulls(&gh);
        let waiting = waiting_for_a_slot(&p).await;
        (open.len() == 2 && waiting.len() == 3).then_some(())
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
