//! What finished machines cost at rest: GitHub requests per hour, and the time of one
//! reconcile pass, with 10, 1,000 and 10,000 machines whose pull requests were merged or
//! closed long ago (the store and the fake GitHub seeded with them). Registrar runs with its
//! reconcile loops every second, to count many passes quickly; the per-hour figures are
//! scaled to the defaults (forge reconcile every 300 s, proposal reconcile every 60 s).
//!
//! Run: `cargo bench --bench at_rest` (options: `-- --seconds N`); about a minute.

#[path = "support/args.rs"]
mod args;

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use args::arg;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use registrar::app::App;
use registrar::config::Config;
use registrar::domain::{Mac, Proposal, ProposalState, Source, State, branch_for};
use registrar::store::{Pending, SqliteStore, Store};
use support::fake_github::{FakeGithub, Pull};

fn mac(i: usize) -> Mac {
    Mac::parse(&format!(
        "02:43:00:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    ))
    .unwrap()
}

/// `n` machines: even ones merged (approved), odd ones closed (rejected), each with the
/// pull request GitHub holds for it.
fn seed(state_dir: &Path, gh: &FakeGithub, n: usize) {
    let base = registrar::domain::facts::from_lshw(&support::lshw("packet-c3small-asrockrack-e3c246d4i-nl.json"));
    let store = SqliteStore::open(&state_dir.join("registrar.db")).unwrap();
    let long_ago = Utc::now() - chrono::Duration::days(30);
    let mut pulls = Vec::with_capacity(n);
    for i in 0..n {
        let (m, number, merged) = (mac(i), i as u64 + 1, i % 2 == 0);
        let mut facts = base.clone();
        facts.serial = Some(format!("REST{i:08}"));
        store.record_facts(m, Source::Report, &facts, long_ago).unwrap();
        let proposal = Proposal {
            mac: m,
            forge: "github".into(),
            number: Some(number),
            url: None,
            branch: branch_for(&m),
            path: format!("hardware/rest{i:08}.yaml"),
            name: format!("rest{i:08}"),
            title: format!("Register rest{i:08}"),
            summary: String::new(),
            head: "0".repeat(40),
            rule: "default".into(),
            workflow: None,
            state: ProposalState::Open,
            created_at: long_ago,
            updated_at: long_ago,
            hands_off: false,
            kind: Default::default(),
            basis: None,
            replaces: None,
        };
        store
            .mark_synced(
                Pending { mac: m, rev: 1 },
                Some(&proposal),
                Some(&proposal.name),
                long_ago,
            )
            .unwrap();
        if merged {
            store.set_proposal_state(m, ProposalState::Merged, long_ago).unwrap();
            store
                .transition(m, State::Approved, "merged", "bench", long_ago)
                .unwrap();
        } else {
            store.reject(m, "closed", "bench", long_ago).unwrap();
            store.set_proposal_state(m, ProposalState::Closed, long_ago).unwrap();
        }
        pulls.push(Pull {
            number,
            title: proposal.title.clone(),
            body: String::new(),
            head: proposal.branch.clone(),
            base: "main".into(),
            open: false,
            merged,
            merged_by: merged.then(|| "reviewer".into()),
            labels: vec![],
            fork: None,
            auto_merge: false,
        });
    }
    gh.state.lock().unwrap().pulls = pulls;
}

fn main() {
    let seconds = arg("--seconds", 15) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| finished machines | GitHub requests per forge pass (counted / 304) | per hour at the defaults (counted / 304) | proposal reconcile pass |"
    );
    println!("|---:|---:|---:|---:|");
    for n in [10, 1_000, 10_000] {
        rt.block_on(async {
            let gh = FakeGithub::start().await;
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            std::fs::create_dir_all(&state).unwrap();
            seed(&state, &gh, n);
            let mut config = Config {
                state_dir: state.clone(),
                templates_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware-templates"),
                ..Config::default()
            };
            support::fake_github::configure(&mut config, &gh.url, &gh.git_url());
            config.auth.operator_token = Some(support::OPERATOR_TOKEN.to_string().into());
            config.auth.report_token = Some(support::REPORT_TOKEN.to_string().into());
            config.forge.github.reconcile_seconds = 1;
            config.queue.reconcile_seconds = 1;
            let app = tokio::task::spawn_blocking(move || App::build(config))
                .await
                .unwrap()
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let (trigger, shutdown) = registrar::shutdown::channel();
            let server = tokio::spawn(app.serve(listener, shutdown));

            // Let start-up (labels, the first listing) settle, then count.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let counts = |gh: &FakeGithub| {
                let st = gh.state.lock().unwrap();
                let listings = st
                    .requests
                    .iter()
                    .filter(|(m, p)| m == "GET" && p.ends_with("/pulls"))
                    .count();
                (st.requests.len() as u64 - st.not_modified, st.not_modified, listings)
            };
            let passes = |text: &str| support::metric_in(text, "registrar_reconcile_passes_total");
            let metrics = || async {
                reqwest::get(format!("{url}/metrics"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            };
            let seconds_sum = |text: &str| support::metric_in(text, "registrar_reconcile_seconds_sum");
            let (counted0, free0, listings0) = counts(&gh);
            let before = metrics().await;
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let after = metrics().await;
            let (counted1, free1, listings1) = counts(&gh);
            let _ = started;
            // Two listings (open, closed) per forge pass.
            let forge_passes = ((listings1 - listings0) as f64 / 2.0).max(1.0);
            let per_pass = (
                (counted1 - counted0) as f64 / forge_passes,
                (free1 - free0) as f64 / forge_passes,
            );
            let proposal_passes = (passes(&after) - passes(&before)).max(1.0);
            let pass_ms = 1000.0 * (seconds_sum(&after) - seconds_sum(&before)) / proposal_passes;
            let per_hour = 3600.0 / 300.0;
            println!(
                "| {n} | {:.1} / {:.1} | {:.0} / {:.0} | {pass_ms:.1} ms |",
                per_pass.0,
                per_pass.1,
                per_pass.0 * per_hour,
                per_pass.1 * per_hour
            );
            trigger.fire();
            let _ = server.await;
        });
    }
}
