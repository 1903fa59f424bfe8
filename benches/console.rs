//! The console with 10,000 machines: server time and page weight of the machine list
//! (first page, a text filter, a sort by name, a deep page), and a 10,000-row import.
//!
//! Run: `cargo bench --bench console` (prints Markdown; see docs/benchmarks.md).
//! Options: `-- --machines N` (default 10000), `--samples N` (default 200).
//!
//! Server time is measured from the client over loopback (request sent → last byte read),
//! so it includes HTTP and the local socket; the server's own share is a little smaller.

#[path = "support/args.rs"]
mod args;

use args::arg;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use registrar::app::App;
use registrar::config::Config;
use registrar::domain::{Mac, Source};
use registrar::store::{Pending, SqliteStore, Store};
use serde_json::Value;

const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789abcdef";
const REPORT_TOKEN: &str = "bench-report-token-0123456789abcdef";

fn mac(i: usize) -> Mac {
    Mac::parse(&format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        (i >> 24) & 0xff,
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    ))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// 10,000 machines with full facts (the 16-disk Supermicro), recorded and marked synced so
/// the worker has nothing to do while the pages are timed.
fn seed(state_dir: &Path, n: usize) {
    let lshw_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/lshw/supermicro-ssg-6029p-x11dph-t.json");
    let lshw: Value = serde_json::from_str(&std::fs::read_to_string(lshw_path).expect("the lshw fixture")).unwrap();
    let base = registrar::domain::facts::from_lshw(&lshw);
    let store = SqliteStore::open(&state_dir.join("registrar.db")).unwrap();
    let now = Utc::now();
    for i in 0..n {
        let mut facts = base.clone();
        facts.serial = Some(format!("BENCH{i:08}"));
        let m = mac(i);
        let r = store
            .record_facts(m, Source::Report, &facts, now - chrono::Duration::seconds(i as i64))
            .unwrap();
        store
            .mark_synced(Pending { mac: m, rev: 1 }, None, Some(&format!("bench{i:08}")), now)
            .unwrap();
        assert!(r.new);
    }
}

#[tokio::main]
async fn main() {
    let n = arg("--machines", 10_000);
    let samples = arg("--samples", 200);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let started = Instant::now();
    seed(&state, n);
    eprintln!("seeded {n} machines in {:.1} s", started.elapsed().as_secs_f64());

    let mut config = Config {
        state_dir: state.clone(),
        templates_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware-templates"),
        ..Config::default()
    };
    config.auth.operator_token = Some(OPERATOR_TOKEN.to_string().into());
    config.auth.report_token = Some(REPORT_TOKEN.to_string().into());
    let app = tokio::task::spawn_blocking(move || App::build(config))
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = registrar::shutdown::channel();
    let server = tokio::spawn(app.serve(listener, shutdown));

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{url}/login"))
        .form(&[("token", OPERATOR_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    println!("| Machine list ({n} machines) | p50 (ms) | p90 (ms) | p99 (ms) | page weight (KB) | rows |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, path) in [
        ("first page (newest first)", "/".to_string()),
        ("free-text filter (serial)", "/?q=BENCH00004242".to_string()),
        ("sorted by name", "/?sort=name&order=asc".to_string()),
        ("deep page (offset 9,000)", "/?offset=9000".to_string()),
        (
            "state filter + sort by MAC",
            "/?state=reported&sort=mac&order=desc".to_string(),
        ),
    ] {
        let mut times = Vec::with_capacity(samples);
        let mut weight = 0;
        let mut rows = 0;
        for i in 0..samples + 10 {
            let t = Instant::now();
            let resp = client
                .get(format!("{url}{path}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let body = resp.bytes().await.unwrap();
            let elapsed = t.elapsed();
            if i >= 10 {
                times.push(elapsed);
            }
            weight = body.len();
            rows = String::from_utf8_lossy(&body).matches("<tr data-mac=").count();
        }
        times.sort();
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {rows} |",
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            percentile(&times, 0.99),
            weight as f64 / 1000.0
        );
    }

    // A 10,000-row import: every row with hostname, IP, netmask, gateway, location.
    let rows = 10_000;
    let mut csv = String::from("mac,hostname,ip,netmask,gateway,nameservers,location,labels\n");
    for i in 0..rows {
        let m = mac(0x1000_0000 + i);
        csv.push_str(&format!(
            "{m},node-{i:05},10.{}.{}.{},24,10.{}.{}.1,10.0.0.2 10.0.0.3,DC1 Rack {},team=infra\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i / 40
        ));
    }
    println!();
    println!(
        "| Import ({rows} rows, {:.0} KB CSV) | seconds | rows/s |",
        csv.len() as f64 / 1000.0
    );
    println!("|---|---:|---:|");
    for (label, query) in [
        ("preview (dry run)", "?dry_run=true"),
        ("import (one transaction)", "?name=bench"),
    ] {
        let t = Instant::now();
        let resp = client
            .post(format!("{url}/api/v1/imports{query}"))
            .bearer_auth(OPERATOR_TOKEN)
            .header("content-type", "text/csv")
            .body(csv.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let _ = resp.bytes().await.unwrap();
        let s = t.elapsed().as_secs_f64();
        assert!(status.is_success(), "{label}: {status}");
        println!("| {label} | {s:.2} | {:.0} |", rows as f64 / s);
    }
    trigger.fire();
    let _ = server.await;
}
