//! One delivery of 10,000 machines (one import batch) proposed as grouped pull requests on
//! (a fake) GitHub that enforces GitHub's secondary limits (80 content-creating requests a
//! minute, 500 an hour), on GitHub's own clock by default (`--scale 60` runs its limits 60×
//! faster; Registrar's own work is not, so a scaled run overstates the GitHub time a
//! drain takes). Registrar runs on its default pacing with `discovery.group_by: import`.
//!
//! Measured: the GitHub time until every machine is listed in a pull request, the requests
//! that took, secondary-limit errors (must be none), the reviewer actions left (one merge
//! per pull request), and how fast the store and renderer took the machines in (SQLite).
//!
//! Run: `cargo bench --bench grouped_delivery` (options: `-- --machines N --group-size N`);
//! takes a few minutes.

#[path = "support/args.rs"]
mod args;
#[path = "support/pacing.rs"]
mod pacing;

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use args::arg;
use std::time::{Duration, Instant};

use support::fake_github::FakeGithub;
use support::*;

fn mac(i: usize) -> String {
    format!(
        "02:10:00:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// The machines a grouped pull request's description lists.
fn listed(body: &str) -> usize {
    body.lines().filter(|l| l.starts_with("- [x] `")).count()
}

fn main() {
    let machines = arg("--machines", 10_000);
    let group_size = arg("--group-size", 100);
    let scale = arg("--scale", 1) as u32;
    let (minute, _) = pacing::clock(scale);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let gh = FakeGithub::start().await;
        let (api, git) = (gh.url.clone(), gh.git_url());
        let r = Registrar::start_with(move |c| {
            support::fake_github::configure(c, &api, &git);
            pacing::default_pacing(c, scale);
            c.discovery.group_by = registrar::domain::GroupBy::Import;
            c.discovery.group_size = group_size as u64;
            c.discovery.max_new_per_minute = 0;
            c.discovery.max_undiscovered = 0;
            c.queue.retry_seconds = 1;
        })
        .await;
        *gh.hook_url.lock().unwrap() = Some(format!("{}/webhooks/github", r.url));
        gh.set_faults(pacing::enforced(scale));
        while !gh.state.lock().unwrap().labels.contains_key("registrar") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut csv = String::from("mac,serial\n");
        for i in 0..machines {
            csv.push_str(&format!("{},GROUP{i:06}\n", mac(i)));
        }
        support::journey::import_csv(&r.url, "delivery", csv).await;

        let requests_before = gh.requests().len();
        let started = Instant::now();
        let template = lshw("packet-c3small-asrockrack-e3c246d4i-nl.json");
        for i in 0..machines {
            let mut specs = template.clone();
            specs[0]["serial"] = serde_json::Value::String(format!("GROUP{i:06}"));
            assert_eq!(r.report(&report_body(&mac(i), specs)).await.status(), 202);
        }
        let reported = started.elapsed();
        // Every machine rendered, stored and in its group (what the store and the renderer
        // do), then every one listed on GitHub (what the forge's pacing allows).
        let mut joined = None;
        let pulls = loop {
            if joined.is_none() {
                let v: serde_json::Value = r.get("/api/v1/machines?state=proposed&limit=1").await;
                if v["total"].as_u64() == Some(machines as u64) {
                    joined = Some(started.elapsed());
                }
            }
            let pulls = gh.pulls();
            if joined.is_some() && pulls.iter().map(|p| listed(&p.body)).sum::<usize>() == machines {
                break pulls;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let joined = joined.expect("set before the loop ends");
        let took = started.elapsed();
        let calls: Vec<(String, String)> = gh.requests()[requests_before..].to_vec();
        let mutations = calls.iter().filter(|(m, _)| m != "GET").count();
        let creates = calls.iter().filter(|(m, p)| m == "POST" && p.ends_with("/pulls")).count();
        let hits = gh.state.lock().unwrap().secondary_limit_hits;
        println!("| machines | group size | pull requests | reviewer merges | REST calls | mutations (of which PR creates) | secondary-limit errors | reports sent in | all listed after (wall) | GitHub time |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {machines} | {group_size} | {} | {} | {} | {mutations} ({creates}) | {hits} | {:.1} s | {:.1} s | {:.1} min |",
            pulls.len(),
            pulls.len(),
            calls.len(),
            reported.as_secs_f64(),
            took.as_secs_f64(),
            took.as_secs_f64() * scale as f64 / 60.0,
        );
        println!();
        println!("Time scale: 1/{scale} (a budget minute is {minute:?}); GitHub time is wall time × {scale}.");
        println!(
            "Store and render (SQLite): every machine rendered and in its group {:.1} s after the first report ({:.0} machines/s, reports over HTTP included).",
            joined.as_secs_f64(),
            machines as f64 / joined.as_secs_f64()
        );
    });
}
