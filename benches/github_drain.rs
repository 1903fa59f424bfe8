//! A 1,000-machine backlog drained into pull requests on (a fake) GitHub under the
//! secondary-limit budgets, with the fake enforcing those limits: REST calls per machine,
//! the drain rate as a share of what the budgets allow, and secondary-limit errors (must be
//! none). Time runs 60× faster than GitHub's (a "minute" is 1 s, an "hour" 60 s); the
//! fake enforces GitHub's limits (80 mutations a minute, 500 an hour) and Registrar runs on
//! its default settings (those limits less `mutation_headroom_percent`); the share is of
//! GitHub's own ceiling.
//!
//! Then an operator approves 50 machines one click at a time while a second backlog of the
//! same size is being proposed: the latency of a click.
//!
//! Run: `cargo bench --bench github_drain` (options: `-- --machines N --approvals N`);
//! takes ~5 minutes.

#[path = "support/args.rs"]
mod args;
#[path = "support/pacing.rs"]
mod pacing;

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use args::arg;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use registrar::propose::forge::github::client::Pacing;
use support::fake_github::FakeGithub;
use support::*;

const SCALE: u32 = 60;

/// The least time `n` mutations can take under the budgets: the ideal scheduler.
fn ideal(pacing: &Pacing, n: usize) -> Duration {
    let t0 = Instant::now();
    let mut sent = VecDeque::new();
    let mut at = t0;
    for _ in 0..n {
        at = pacing.next_slot(&mut sent, at);
        sent.push_back(at);
    }
    at - t0
}

fn main() {
    let machines = arg("--machines", 1000);
    let (minute, hour) = pacing::clock(SCALE);
    // GitHub's documented secondary limits: the ceiling.
    let (per_minute, per_hour) = (pacing::PER_MINUTE, pacing::PER_HOUR);
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
            // The defaults, which the fake's configure() turned off for the tests.
            pacing::default_pacing(c, SCALE);
            c.queue.retry_seconds = 1;
            if let Some(n) = std::env::args().position(|a| a == "--concurrency").and_then(|i| std::env::args().nth(i + 1)) {
                c.queue.concurrency = n.parse().unwrap();
            }
        })
        .await;
        *gh.hook_url.lock().unwrap() = Some(format!("{}/webhooks/github", r.url));
        // GitHub enforces its limits whatever Registrar believes.
        gh.set_faults(pacing::enforced(SCALE));
        // Wait for the start-up label creation, then build the backlog.
        while !gh.state.lock().unwrap().labels.contains_key("registrar") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let requests_before = gh.requests().len();
        let started = Instant::now();
        let template = lshw("packet-c3small-asrockrack-e3c246d4i-nl.json");
        for i in 0..machines {
            let mut specs = template.clone();
            specs[0]["serial"] = serde_json::Value::String(format!("DRAIN{i:05}"));
            assert_eq!(r.report(&report_body(&mac(i), specs)).await.status(), 202);
        }
        loop {
            if gh.pulls().len() == machines && gh.pulls().iter().all(|p| p.labels.len() == 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = started.elapsed();
        let calls: Vec<(String, String)> = gh.requests()[requests_before..].to_vec();
        let mutations = calls.iter().filter(|(m, _)| m != "GET").count();
        let reads = calls.len() - mutations;
        let creates = calls.iter().filter(|(m, p)| m == "POST" && p.ends_with("/pulls")).count();
        let hits = gh.state.lock().unwrap().secondary_limit_hits;
        let pacing = Pacing {
            mutation_interval: Duration::from_millis((1000 / SCALE) as u64),
            per_minute,
            per_hour,
            minute,
            hour,
            retry_base: Duration::ZERO,
            retry_cap: Duration::ZERO,
            max_attempts: 1,
            timeout: Duration::from_secs(1),
        };
        let best = ideal(&pacing, mutations);
        println!("| machines | REST calls | per machine | reads | mutations (of which PR creates) | secondary-limit errors | drain time | ideal under the budgets | share of the ceiling |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {machines} | {} | {:.2} | {reads} | {mutations} ({creates}) | {hits} | {:.1} s | {:.1} s | {:.1} % |",
            calls.len(),
            calls.len() as f64 / machines as f64,
            took.as_secs_f64(),
            best.as_secs_f64(),
            100.0 * best.as_secs_f64() / took.as_secs_f64()
        );
        println!();
        println!("Time scale: 1/{SCALE} (a budget minute is {minute:?}, an hour {hour:?}); at GitHub's own pace the same drain takes {:.1} h.", took.as_secs_f64() * SCALE as f64 / 3600.0);

        // An operator approves, one click at a time, while a second backlog of the same size
        // is being proposed: how long does a click wait behind the proposals?
        let clicks = arg("--approvals", 50);
        for i in machines..2 * machines {
            let mut specs = template.clone();
            specs[0]["serial"] = serde_json::Value::String(format!("DRAIN{i:05}"));
            assert_eq!(r.report(&report_body(&mac(i), specs)).await.status(), 202);
        }
        let mut latencies = Vec::with_capacity(clicks);
        for i in 0..clicks.min(machines) {
            tokio::time::sleep(minute / 50).await;
            let started = Instant::now();
            let resp = r.post(&format!("/api/v1/machines/{}/approve", mac(i)), serde_json::json!({"actor": "ops"})).await;
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
            latencies.push(started.elapsed());
        }
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
        let proposed_meanwhile = gh.pulls().len() - machines;
        println!();
        println!("| approval clicks during a {machines}-machine backlog | p50 | p90 | p99 | max | pull requests opened meanwhile |");
        println!("|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {proposed_meanwhile} |",
            latencies.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        );
    });
}

fn mac(i: usize) -> String {
    format!(
        "02:00:00:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}
