//! Issue 19 on the shipped binary: a delivery reviewed as a few pull requests.
//!
//! With `discovery.group_by: import` and `group_size: 50`, an import batch of 200
//! machines becomes four pull requests, one file per machine. In one of them a reviewer
//! without write access is not heard; a maintainer leaves two machines out with
//! `/registrar reject` and changes a third one's workflow with `/registrar workflow`, and
//! unchecks a fourth in the description. Registrar rewrites the branch without the ones
//! left out, and merging registers exactly the rest.

mod support;

use serde_json::{Value, json};
use support::OPERATOR_TOKEN;
use support::binary::{Process, eventually, example, listen_on, point_at_github, set, token_env};
use support::fake_github::{FakeGithub, Pull};
use support::journey::{get, import_csv, machine, report_specs, supermicro};

const MACHINES: usize = 200;

fn mac_of(i: usize) -> String {
    format!("0c:c4:7a:2a:{:02x}:{:02x}", i / 256, i % 256)
}

fn serial_of(i: usize) -> String {
    format!("GRP{i:05}")
}

fn group_pulls(gh: &FakeGithub) -> Vec<Pull> {
    gh.pulls()
        .into_iter()
        .filter(|p| p.head.starts_with("registrar/group-import-"))
        .collect()
}

/// The MACs a grouped pull request's description lists, checked or not.
fn listed(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("- [x] `").or_else(|| l.strip_prefix("- [ ] `")))
        .filter_map(|rest| rest.split_once('`').map(|(mac, _)| mac.to_string()))
        .collect()
}

/// The machine files on a branch of the fake's repository.
fn files_on(gh: &FakeGithub, branch: &str) -> Vec<String> {
    gh.repo()
        .files(branch)
        .into_iter()
        .filter(|f| f.starts_with("hardware/") && f.ends_with(".yaml") && !f.ends_with("kustomization.yaml"))
        .collect()
}

async fn states(p: &Process) -> std::collections::BTreeMap<String, usize> {
    let (_, list) = get(&format!("{}/api/v1/machines?limit=1000", p.url), OPERATOR_TOKEN).await;
    let mut counts = std::collections::BTreeMap::new();
    for m in list["machines"].as_array().unwrap() {
        *counts.entry(m["state"].as_str().unwrap().to_string()).or_default() += 1;
    }
    counts
}

/// Registrar on the fake GitHub from the GitHub example, grouping by import batch, with
/// `extra` settings: the process and its state directory.
async fn start_grouped(gh: &FakeGithub, extra: &[(&str, Value)]) -> (Process, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = example("github.yaml");
    point_at_github(&mut config, dir.path(), gh);
    let url = listen_on(&mut config);
    set(&mut config, "discovery.group_by", json!("import"));
    for (key, value) in extra {
        set(&mut config, key, value.clone());
    }
    *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;
    (p, dir)
}

/// Machines `first..first + n`, imported as batch `batch` with their serials: their MACs.
async fn import_batch(p: &Process, batch: &str, first: usize, n: usize) -> Vec<String> {
    let macs: Vec<String> = (first..first + n).map(mac_of).collect();
    let mut csv = String::from("mac,serial\n");
    for (i, mac) in macs.iter().enumerate() {
        csv.push_str(&format!("{mac},{}\n", serial_of(first + i)));
    }
    import_csv(&p.url, batch, csv).await;
    macs
}

/// Machine `i` reports what its import row says.
async fn report_as_imported(p: &Process, i: usize) {
    report_specs(&p.url, &mac_of(i), supermicro(&serial_of(i), 0x3000 + i as u32)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_batch_of_200_becomes_four_pull_requests_and_reviewers_leave_machines_out() {
    let gh = FakeGithub::start().await;
    gh.grant("ops-lead", "maintain");
    gh.grant("visitor", "read");
    let settings = [
        ("discovery.group_size", json!(50)),
        ("queue.concurrency", json!(8)),
        ("forge.github.reconcile_seconds", json!(2)),
    ];
    let (mut p, _dir) = start_grouped(&gh, &settings).await;

    support::journey::step("200 machines imported as one batch, and all of them report");
    import_batch(&p, "delivery-2026-12", 0, MACHINES).await;
    for i in 0..MACHINES {
        report_as_imported(&p, i).await;
    }
    let pulls = eventually(180, "four grouped pull requests listing all 200 machines", || async {
        let pulls = group_pulls(&gh);
        let listed: usize = pulls.iter().map(|p| listed(&p.body).len()).sum();
        (pulls.len() == 4 && listed == MACHINES).then_some(pulls)
    })
    .await;
    assert_eq!(gh.pulls().len(), 4, "no pull request of a single machine");
    for pull in &pulls {
        assert_eq!(listed(&pull.body).len(), 50, "{}", pull.body);
        assert!(
            pull.title
                .starts_with("Register 50 machines of import batch delivery-2026-12"),
            "{}",
            pull.title
        );
        assert!(
            pull.body.contains("expected (row "),
            "each machine says which row expected it"
        );
        assert_eq!(
            files_on(&gh, &pull.head).len(),
            50,
            "one file per machine on {}",
            pull.head
        );
    }
    eventually(60, "every machine proposed, nothing pending", || async {
        (states(&p).await.get("proposed") == Some(&MACHINES)).then_some(())
    })
    .await;

    let pull = pulls[0].clone();
    let members = listed(&pull.body);
    let (a, b, c, d) = (&members[0], &members[1], &members[2], &members[3]);

    support::journey::step("someone without write access asks to reject a machine: not heard");
    let resp = gh
        .comment_as(pull.number, "visitor", &format!("/registrar reject {a}"))
        .await;
    assert_eq!(resp.status(), 202);
    let refusal = eventually(30, "Registrar's answer", || async {
        gh.comments(pull.number)
            .into_iter()
            .find(|c| c.contains("only people with write access"))
    })
    .await;
    assert!(refusal.contains("`visitor` has `read`"), "{refusal}");
    assert_eq!(machine(&p, a).await["machine"]["state"], "proposed");

    support::journey::step("a maintainer rejects two by comment and switches a third's workflow");
    let command = format!(
        "Two of these are in the wrong rack.\n/registrar reject {a} wrong rack\n/registrar reject {b}\n/registrar workflow {c} ubuntu-2404\n/registrar reject 0c:c4:7a:ff:ff:ff\n"
    );
    assert_eq!(gh.comment_as(pull.number, "ops-lead", &command).await.status(), 202);
    let answer = eventually(30, "Registrar's answer to the maintainer", || async {
        gh.comments(pull.number)
            .into_iter()
            .find(|c| c.contains(&format!("left out `{a}`: wrong rack")))
    })
    .await;
    assert!(answer.contains(&format!("left out `{b}`")), "{answer}");
    assert!(
        answer.contains(&format!("`{c}` will be provisioned with `ubuntu-2404`")),
        "{answer}"
    );
    assert!(
        answer.contains("`0c:c4:7a:ff:ff:ff` is not a machine this pull request proposes"),
        "{answer}"
    );

    support::journey::step("and unchecks a fourth in the description");
    let unchecked = gh
        .pull(pull.number)
        .body
        .replace(&format!("- [x] `{d}`"), &format!("- [ ] `{d}`"));
    assert_eq!(gh.edit_body(pull.number, &unchecked, "ops-lead").await.status(), 202);

    let rewritten = eventually(60, "the branch and description without the three left out", || async {
        let now = gh.pull(pull.number);
        let shown = listed(&now.body);
        let workflow_c = gh
            .repo()
            .read(
                &now.head,
                &format!("hardware/{}.yaml", machine(&p, c).await["machine"]["name"].as_str()?),
            )
            .filter(|f| f.contains("ubuntu-2404"));
        (shown.len() == 47 && files_on(&gh, &now.head).len() == 47 && workflow_c.is_some()).then_some(now)
    })
    .await;
    for left_out in [a, b, d] {
        assert!(!listed(&rewritten.body).contains(left_out), "{left_out} left out");
        let m = machine(&p, left_out).await;
        assert_eq!(m["machine"]["state"], "rejected", "{m}");
    }
    let m: Value = machine(&p, a).await;
    let causes: Vec<&str> = m["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["cause"].as_str())
        .collect();
    assert!(causes.iter().any(|c| c.contains("wrong rack")), "{causes:?}");
    assert!(
        m["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["actor"] == "github:ops-lead"),
        "the rejection names who asked: {m}"
    );
    assert!(gh.pull(pull.number).open, "the pull request stays open for the rest");

    support::journey::step("a command whose delivery is lost is read by the reconcile, once");
    let other_pull = &pulls[2];
    let e = &listed(&other_pull.body)[0];
    gh.comment_quietly(
        other_pull.number,
        "ops-lead",
        &format!("/registrar reject {e} not ours"),
    );
    eventually(60, "the lost command carried out", || async {
        let now = gh.pull(other_pull.number);
        (listed(&now.body).len() == 49 && !listed(&now.body).contains(e)).then_some(())
    })
    .await;
    assert_eq!(machine(&p, e).await["machine"]["state"], "rejected");
    let answers = eventually(30, "one answer", || async {
        let answers: Vec<String> = gh
            .comments(other_pull.number)
            .into_iter()
            .filter(|c| c.contains(&format!("left out `{e}`")))
            .collect();
        (!answers.is_empty()).then_some(answers)
    })
    .await;
    assert_eq!(answers.len(), 1, "{answers:?}");

    support::journey::step("merged: the 47 left are registered, the ones left out are not");
    assert!(gh.merge(pull.number, "ops-lead").await.status().is_success());
    eventually(60, "47 approved", || async {
        (states(&p).await.get("approved") == Some(&47)).then_some(())
    })
    .await;
    let on_main = files_on(&gh, "main");
    assert_eq!(on_main.len(), 47, "{on_main:?}");
    let counts = states(&p).await;
    assert_eq!(counts.get("rejected"), Some(&4), "{counts:?}");
    assert_eq!(
        counts.get("proposed"),
        Some(&149),
        "the other three groups wait: {counts:?}"
    );

    support::journey::step("restarted, a machine of another group reports again: still one file, one pull request");
    p.restart().await;
    let other = &listed(&pulls[1].body)[0];
    report_as_imported(&p, (0..MACHINES).find(|i| &mac_of(*i) == other).unwrap()).await;
    eventually(60, "the repeat to be taken", || async {
        let m = machine(&p, other).await;
        (m["machine"]["seen_count"].as_u64() >= Some(2) && m["machine"]["pending"] == false).then_some(())
    })
    .await;
    let again = group_pulls(&gh);
    assert_eq!(again.len(), 4, "no new pull request after a restart");
    assert_eq!(again.iter().filter(|p| p.open).count(), 3);
    assert_eq!(listed(&gh.pull(pulls[1].number).body).len(), 50);
    assert_eq!(files_on(&gh, &pulls[1].head).len(), 50);
    // Many reconcile passes later (and a restart whose first pass looks a day back), the
    // lost command was still carried out and answered once.
    let answered = gh
        .comments(other_pull.number)
        .into_iter()
        .filter(|c| c.contains(&format!("left out `{e}`")))
        .count();
    assert_eq!(answered, 1);
    assert!(p.stop().success());
}

/// Approval by policy of a group: auto-merge only while every machine in it matches its
/// import row exactly, and GitHub merges only once the checks pass.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_of_exact_matches_merges_by_policy_only_after_the_checks_and_never_with_a_stranger() {
    let gh = FakeGithub::start().await;
    gh.state.lock().unwrap().required_checks = true;
    gh.grant("ops-lead", "write");
    let (mut p, _dir) = start_grouped(&gh, &[("discovery.auto_approve", json!("expected"))]).await;

    support::journey::step("four rows imported, three exact reports: one pull request, auto-merge on");
    let macs = import_batch(&p, "rack-7", 0x100, 4).await;
    let (exact, wrong) = (macs[..3].to_vec(), macs[3].clone());
    for i in 0x100..0x103 {
        report_as_imported(&p, i).await;
    }
    let pull = eventually(60, "one pull request with auto-merge", || async {
        let pulls = group_pulls(&gh);
        (pulls.len() == 1 && pulls[0].auto_merge && listed(&pulls[0].body).len() == 3).then(|| pulls[0].clone())
    })
    .await;
    assert!(pull.body.contains("Approved by policy"), "{}", pull.body);
    assert_eq!(
        machine(&p, &exact[0]).await["machine"]["state"],
        "proposed",
        "not before the checks"
    );

    support::journey::step("a machine of the same batch reports another serial: auto-merge is taken back");
    report_specs(&p.url, &wrong, supermicro("NOT-ITS-ROW", 0x4103)).await;
    eventually(60, "four listed, auto-merge off", || async {
        let now = gh.pull(pull.number);
        (listed(&now.body).len() == 4 && !now.auto_merge).then_some(())
    })
    .await;
    assert!(!gh.checks_pass(pull.number).await, "GitHub does not merge it now");

    support::journey::step("the reviewer leaves it out: the rest qualify again and merge once the checks pass");
    gh.comment_as(
        pull.number,
        "ops-lead",
        &format!("/registrar reject {wrong} serial differs"),
    )
    .await;
    eventually(60, "three listed, auto-merge on again", || async {
        let now = gh.pull(pull.number);
        (listed(&now.body).len() == 3 && now.auto_merge).then_some(())
    })
    .await;
    assert!(gh.checks_pass(pull.number).await);
    for mac in &exact {
        support::journey::state_reached(&p, mac, "approved").await;
    }
    assert_eq!(machine(&p, &wrong).await["machine"]["state"], "rejected");
    assert_eq!(files_on(&gh, "main").len(), 3);
    assert!(p.stop().success());
}

/// A person who pushes to a group's branch gets it: Registrar says so once and stops
/// rewriting it, a newcomer of the same batch goes to a new group, and merging still
/// registers the machines whose files the base then holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_branch_someone_pushed_to_is_left_to_them() {
    let gh = FakeGithub::start().await;
    gh.state.lock().unwrap().push_webhooks = true;
    let (mut p, _dir) = start_grouped(&gh, &[]).await;
    let macs = import_batch(&p, "row-b", 0x200, 3).await;
    report_as_imported(&p, 0x200).await;
    report_as_imported(&p, 0x201).await;
    let pull = eventually(60, "one pull request of two machines", || async {
        let pulls = group_pulls(&gh);
        (pulls.len() == 1 && listed(&pulls[0].body).len() == 2).then(|| pulls[0].clone())
    })
    .await;

    support::journey::step("a person pushes a note to the group's branch");
    gh.push_to_pull(pull.number, "hardware/NOTES.md", "racked on Tuesday\n", "ops-lead")
        .await;
    let said = eventually(30, "Registrar to say it stops updating the branch", || async {
        gh.comments(pull.number)
            .into_iter()
            .find(|c| c.contains("will not update this branch"))
    })
    .await;
    assert!(said.contains(&pull.head), "{said}");
    let their_head = gh.head_of(&pull.head);

    support::journey::step("the third machine reports: a new group, the person's branch untouched");
    report_as_imported(&p, 0x202).await;
    let second = eventually(60, "a second group's pull request", || async {
        group_pulls(&gh).into_iter().find(|p| p.number != pull.number)
    })
    .await;
    assert_eq!(listed(&second.body), vec![macs[2].clone()]);
    assert_eq!(gh.head_of(&pull.head), their_head, "never rewritten");
    let notes = gh
        .comments(pull.number)
        .into_iter()
        .filter(|c| c.contains("will not update this branch"))
        .count();
    assert_eq!(notes, 1, "said once");

    support::journey::step("merged as the person left it: both machines are registered");
    assert!(gh.merge(pull.number, "ops-lead").await.status().is_success());
    for mac in macs.iter().take(2) {
        support::journey::state_reached(&p, mac, "approved").await;
    }
    assert_eq!(machine(&p, &macs[2]).await["machine"]["state"], "proposed");
    assert!(p.stop().success());
}

/// Closing a group's pull request rejects its machines, and its branch goes, so the pull
/// request cannot be reopened (and merged) behind Registrar's back.
#[tokio::test(flavor = "multi_thread")]
async fn closing_a_group_rejects_its_machines_and_deletes_its_branch() {
    let gh = FakeGithub::start().await;
    let (mut p, _dir) = start_grouped(&gh, &[]).await;
    let macs = import_batch(&p, "wrong-site", 0x300, 2).await;
    report_as_imported(&p, 0x300).await;
    report_as_imported(&p, 0x301).await;
    let pull = eventually(60, "one pull request of two machines", || async {
        let pulls = group_pulls(&gh);
        (pulls.len() == 1 && listed(&pulls[0].body).len() == 2).then(|| pulls[0].clone())
    })
    .await;
    assert!(gh.close(pull.number, "ops-lead").await.status().is_success());
    for mac in &macs {
        support::journey::state_reached(&p, mac, "rejected").await;
    }
    eventually(30, "the group's branch deleted", || async {
        gh.head_of(&pull.head).is_empty().then_some(())
    })
    .await;
    assert!(files_on(&gh, "main").is_empty());
    assert!(p.stop().success());
}
