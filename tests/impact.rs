//! What a rules edit would do (issue 18), on the shipped binary: 1,000 machines report to
//! the embedded default, whose templates live in a git repository of their own; an
//! operator edits rules.yaml in the working copy, and `registrar check --impact` lists
//! exactly the machines the edit changes — the 100 Supermicros — with the diff, compared
//! with HEAD. Committed, the same edit changes nothing against HEAD any more.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::binary::{Process, binary, example, set, token_env};
use support::*;

const MACHINES: usize = 1000;
const SUPERMICROS: usize = 100;

fn mac_of(i: usize) -> String {
    format!("0c:c4:7a:18:{:02x}:{:02x}", i / 256, i % 256)
}

/// One Supermicro and two Packet (ASRock Rack) machines report to `url`, serials `prefix<i>`.
async fn three_machines(url: &str, macs: [&str; 3], prefix: &str) {
    let files = [
        "supermicro-ssg-6029p-x11dph-t.json",
        "packet-c3small-asrockrack-e3c246d4i-nl.json",
        "packet-c3small-asrockrack-e3c246d4i-nl.json",
    ];
    for (i, (mac, file)) in macs.iter().zip(files).enumerate() {
        let mut specs = lshw(file);
        let system = if specs.is_array() { &mut specs[0] } else { &mut specs };
        system["serial"] = json!(format!("{prefix}{i:04}"));
        support::journey::report_specs(url, mac, specs).await;
    }
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=ops", "-c", "user.email=ops@example.com"])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn impact(config: &Path) -> Value {
    let out = Command::new(binary())
        .args(["check", "--impact", "--json", "--config"])
        .arg(config)
        .env("REGISTRAR_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check --impact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn check_impact_lists_exactly_the_machines_a_rules_edit_changes() {
    let dir = tempfile::tempdir().unwrap();
    // The operator's repository of rules and templates.
    let repo = dir.path().join("registrar-config");
    let templates = repo.join("hardware-templates");
    std::fs::create_dir_all(&templates).unwrap();
    copy_dir(&manifest_dir().join("hardware-templates"), &templates);
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "templates as shipped"]);

    let mut config = example("local.yaml");
    set(&mut config, "templates_dir", json!(templates.display().to_string()));
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;
    let client = reqwest::Client::new();
    let mut supermicros = Vec::new();
    for chunk in (0..MACHINES).collect::<Vec<_>>().chunks(50) {
        let posts = chunk.iter().map(|&i| {
            let supermicro = i % (MACHINES / SUPERMICROS) == 0;
            let mut specs = lshw(if supermicro {
                "supermicro-ssg-6029p-x11dph-t.json"
            } else {
                "packet-c3small-asrockrack-e3c246d4i-nl.json"
            });
            let system = if specs.is_array() { &mut specs[0] } else { &mut specs };
            system["serial"] = json!(format!("IMPACT{i:04}"));
            let (client, url) = (client.clone(), p.url.clone());
            async move {
                let resp = client
                    .post(format!("{url}/api/v1/reports"))
                    .bearer_auth(REPORT_TOKEN)
                    .json(&report_body(&mac_of(i), specs))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
            }
        });
        futures::future::join_all(posts).await;
        supermicros.extend(
            chunk
                .iter()
                .filter(|&&i| i % (MACHINES / SUPERMICROS) == 0)
                .map(|&i| mac_of(i)),
        );
    }
    assert_eq!(supermicros.len(), SUPERMICROS);
    // Every report is stored before it is answered; stopped, nothing changes underneath.
    assert!(p.stop().success(), "{}", p.log());

    // Unedited: nothing would change.
    let none = impact(&p.config);
    assert_eq!(none["compared"], MACHINES, "{none:#}");
    assert_eq!(none["changed"], json!([]), "{none:#}");

    // The operator gives Supermicros their own storage class, in the working copy.
    let rules = templates.join("rules.yaml");
    let text = std::fs::read_to_string(&rules).unwrap();
    let edited = text.replacen(
        "rules:\n",
        "rules:\n  - name: supermicro\n    when: 'facts.vendor == \"Supermicro\"'\n    values:\n      storage_class: dense\n\n",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(&rules, &edited).unwrap();
    let some = impact(&p.config);
    assert_eq!(some["compared"], MACHINES);
    let changed: Vec<&str> = some["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mac"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = supermicros.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(changed, expected);
    let first = &some["changed"][0];
    let diff = first["diff"].as_str().unwrap();
    assert!(
        diff.contains("-    registrar.dev/class: \"general\"") && diff.contains("+    registrar.dev/class: \"dense\""),
        "{diff}"
    );
    assert!(first["name"].as_str().unwrap().starts_with("impact"), "{first:#}");

    // Committed, the edit is the base: nothing would change against HEAD, while the
    // previous revision still shows the 100.
    git(&repo, &["commit", "-q", "-am", "Supermicros are dense"]);
    assert_eq!(impact(&p.config)["changed"], json!([]));
    let out = Command::new(binary())
        .args(["check", "--impact", "--base", "HEAD~1", "--config"])
        .arg(&p.config)
        .env("REGISTRAR_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.starts_with(&format!(
            "{SUPERMICROS} of {MACHINES} machines would render differently"
        )),
        "{text}"
    );
}

/// The console's view of the same question while Registrar runs: the templates it runs with
/// against the ones on disk now (what a restart would render), machine by machine.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_what_the_templates_on_disk_would_change() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("hardware-templates");
    std::fs::create_dir_all(&templates).unwrap();
    copy_dir(&manifest_dir().join("hardware-templates"), &templates);
    let mut config = example("local.yaml");
    set(&mut config, "templates_dir", json!(templates.display().to_string()));
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;
    let machines = [mac_of(1), mac_of(2), mac_of(3)];
    three_machines(&p.url, [&machines[0], &machines[1], &machines[2]], "CONSOLE").await;
    let (cookie, _) = console_page(&p.url, &machines[0]).await;
    let page = console_get(&p.url, "/impact", &cookie).await;
    // (The readiness probe's own machine is compared too.)
    assert!(page.contains("<p id=\"impact-summary\">0 of "), "{page}");

    std::fs::write(
        templates.join("rules.yaml"),
        std::fs::read_to_string(templates.join("rules.yaml")).unwrap().replacen(
            "rules:\n",
            "rules:\n  - name: supermicro\n    when: 'facts.vendor == \"Supermicro\"'\n    values:\n      storage_class: dense\n\n",
            1,
        ),
    )
    .unwrap();
    let page = console_get(&p.url, "/impact", &cookie).await;
    assert!(page.contains("<p id=\"impact-summary\">1 of "), "{page}");
    let section = &page[page
        .find(&format!("id=\"impact-{}\"", machines[0]))
        .expect("the Supermicro is listed")..];
    // HTML-escaped, as every fact on a page is.
    assert!(
        section.contains("+    registrar.dev&#x2f;class: &quot;dense&quot;"),
        "{section}"
    );
    assert!(!page.contains(&format!("id=\"impact-{}\"", machines[1])));

    // A broken edit is what a restart would trip over: said first, nothing compared.
    std::fs::write(templates.join("rules.yaml"), "rules: [\n").unwrap();
    let page = console_get(&p.url, "/impact", &cookie).await;
    assert!(page.contains("id=\"load-error\""), "{page}");
    assert!(page.contains("rules.yaml"), "{page}");
    assert!(p.stop().success());
}

/// The same question asked by a pull request: the GitOps repository keeps the rules and
/// templates Registrar is deployed with (`gitops.templates_path`); a person's pull request
/// that edits them gets one comment listing exactly the machines the edit changes, with
/// the diff, and a later push to it updates that comment rather than adding another.
#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_that_edits_the_rules_is_told_which_machines_it_changes() {
    use support::binary::{listen_on, point_at_github};
    use support::fake_github::FakeGithub;

    const KEPT: &str = "registrar/hardware-templates";
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let shipped = manifest_dir().join("hardware-templates");
    gh.repo().push_dir("main", &shipped, KEPT);
    let mut config = example("github.yaml");
    point_at_github(&mut config, dir.path(), &gh);
    let url = listen_on(&mut config);
    set(&mut config, "gitops.templates_path", json!(KEPT));
    set(&mut config, "forge.github.mutation_interval_ms", json!(0));
    *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;

    // Three machines under review: one Supermicro, two ASRock Rack.
    let machines = ["0c:c4:7a:18:77:01", "0c:c4:7a:18:77:02", "0c:c4:7a:18:77:03"];
    three_machines(&p.url, machines, "RULES").await;
    for mac in machines {
        support::journey::state_reached(&p, mac, "proposed").await;
    }

    // A person gives Supermicros their own storage class, in a pull request.
    let edited = dir.path().join("edited");
    copy_dir(&shipped, &edited);
    let rules = std::fs::read_to_string(edited.join("rules.yaml")).unwrap().replacen(
        "rules:\n",
        "rules:\n  - name: supermicro\n    when: 'facts.vendor == \"Supermicro\"'\n    values:\n      storage_class: dense\n\n",
        1,
    );
    gh.repo().branch_from("main", "dense-supermicros");
    gh.repo()
        .push_on_top("dense-supermicros", &format!("{KEPT}/rules.yaml"), &rules);
    let number = gh.open_pull("dense-supermicros", "Supermicros are dense", "ops").await;
    let comment = support::binary::eventually(60, "the impact comment", || async {
        gh.comments(number).into_iter().find(|c| c.contains("registrar:impact"))
    })
    .await;
    assert!(comment.contains("**1 of 3 recorded machines**"), "{comment}");
    assert!(comment.contains("0c:c4:7a:18:77:01"), "{comment}");
    assert!(
        !comment.contains("0c:c4:7a:18:77:02") && !comment.contains("0c:c4:7a:18:77:03"),
        "{comment}"
    );
    assert!(comment.contains("+    registrar.dev/class: \"dense\""), "{comment}");

    // The author forges Registrar's marker in a comment of their own, ahead of Registrar's:
    // it is neither taken for Registrar's nor edited.
    let forged = format!(
        "<!-- registrar:impact head={} sig=0000 -->\nnothing changes, trust me",
        gh.head_of("dense-supermicros")
    );
    gh.state
        .lock()
        .unwrap()
        .comments
        .entry(number)
        .or_default()
        .insert(0, forged.clone());

    // A second push adds a rule for the Packet machines: the same comment, updated.
    let both = rules.replacen(
        "rules:\n",
        "rules:\n  - name: packet\n    when: 'facts.vendor == \"Packet\"'\n    values:\n      storage_class: edge\n\n",
        1,
    );
    gh.push_to_pull(number, &format!("{KEPT}/rules.yaml"), &both, "ops")
        .await;
    let updated = support::binary::eventually(60, "the comment to be updated", || async {
        let ours: Vec<String> = gh
            .comments(number)
            .into_iter()
            .filter(|c| c.contains("registrar:impact") && *c != forged)
            .collect();
        assert_eq!(ours.len(), 1, "one comment, kept current: {ours:?}");
        ours.into_iter().find(|c| c.contains("**3 of 3 recorded machines**"))
    })
    .await;
    assert!(updated.contains("0c:c4:7a:18:77:02"), "{updated}");
    assert_eq!(gh.comments(number)[0], forged, "the author's comment is left as it was");

    // Rules that do not load are said to, before anyone merges them.
    gh.push_to_pull(number, &format!("{KEPT}/rules.yaml"), "rules: [\n", "ops")
        .await;
    support::binary::eventually(60, "the comment to say the rules do not load", || async {
        gh.comments(number)
            .into_iter()
            .find(|c| c.contains("registrar:impact") && c.contains("do not load"))
    })
    .await;
    assert!(p.stop().success());
}
