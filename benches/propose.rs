//! Report → pushed proposal, on the embedded default (local forge, file:// remote), for a
//! GitOps repository holding 10 and 10,000 Hardware files; beside it the naive way (clone,
//! commit, push with the git CLI per proposal); and resident memory with 10,000 machines.
//!
//! Then the same report → proposal way with a backlog worked at the queue's concurrency,
//! on each store: the SQLite file and PostgreSQL (a throwaway server, as the tests start).
//!
//! Run: `cargo bench --bench propose` (prints Markdown tables; see docs/benchmarks.md).
//! Options: `-- --proposals N` (default 200), `--naive N` (default 10), `--backlog N`
//! (default 500; 0 skips the store comparison).

#[path = "support/args.rs"]
mod args;
#[allow(dead_code)]
#[path = "support/pg.rs"]
mod pg;

use args::arg;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registrar::app::App;
use registrar::config::Config;
use serde_json::Value;

const REPORT_TOKEN: &str = "bench-report-token-0123456789abcdef";

fn lshw() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/lshw/supermicro-ssg-6029p-x11dph-t.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the lshw fixture")).unwrap()
}

fn mac(i: usize) -> String {
    format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        (i >> 24) & 0xff,
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// A report for machine `i`: the Supermicro server with its own serial.
fn report(template: &Value, i: usize) -> Value {
    let mut specs = template.clone();
    specs["serial"] = Value::String(format!("BENCH{i:08}"));
    serde_json::json!({"mac": mac(i), "specs": specs, "timestamp": "2026-11-25T10:00:00+00:00"})
}

/// A bare repository whose `main` holds `files` Hardware manifests in `hardware/`.
fn seed_remote(path: &Path, files: usize) {
    let repo = git2::Repository::init_bare(path).unwrap();
    let mut hw = repo.treebuilder(None).unwrap();
    for i in 0..files {
        let m = mac(0x7000_0000 + i);
        let yaml = format!(
            "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata:\n  name: seed-{i}\n  namespace: tinkerbell\nspec:\n  agentID: \"{m}\"\n  interfaces:\n    - dhcp:\n        mac: \"{m}\"\n        arch: x86_64\n        lease_time: 86400\n      netboot:\n        allowPXE: true\n"
        );
        let blob = repo.blob(yaml.as_bytes()).unwrap();
        hw.insert(format!("seed-{i}.yaml"), blob, 0o100644).unwrap();
    }
    let hw_oid = hw.write().unwrap();
    let mut root = repo.treebuilder(None).unwrap();
    root.insert("hardware", hw_oid, 0o040000).unwrap();
    let tree = repo.find_tree(root.write().unwrap()).unwrap();
    let sig = git2::Signature::now("seed", "seed@localhost").unwrap();
    repo.commit(Some("refs/heads/main"), &sig, &sig, "seed", &tree, &[])
        .unwrap();
    repo.set_head("refs/heads/main").unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

struct Row {
    files: usize,
    p50: Duration,
    p90: Duration,
    mean: Duration,
    naive_p50: Duration,
}

/// Registrar on the embedded default for a remote holding `files` Hardware files, on the
/// SQLite file or on the PostgreSQL at `postgres`: the app, the report URL, the remote.
async fn serve(
    dir: &Path,
    files: usize,
    postgres: Option<&str>,
) -> (Arc<registrar::propose::Proposer>, String, std::path::PathBuf) {
    let remote = dir.join("gitops.git");
    seed_remote(&remote, files);
    let mut config = Config {
        state_dir: dir.join("state"),
        templates_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware-templates"),
        ..Config::default()
    };
    config.gitops.remote = remote.display().to_string();
    config.auth.report_token = Some(REPORT_TOKEN.to_string().into());
    config.auth.operator_token = Some(format!("{REPORT_TOKEN}-op").into());
    config.store.postgres_url = postgres.map(|u| u.to_string().into());
    let app = App::build(config).unwrap();
    let proposer = app.proposer.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/reports", listener.local_addr().unwrap());
    // The HTTP edge without the background worker: the bench drives the queue itself, so
    // each sample is exactly one report's way from the socket to the pushed branch.
    tokio::spawn(async move {
        axum::serve(listener, registrar::server::router(app.state))
            .await
            .unwrap()
    });
    (proposer, url, remote)
}

async fn measure(files: usize, proposals: usize, naive: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let (proposer, url, remote) = serve(dir.path(), files, None).await;
    let client = reqwest::Client::new();
    let template = lshw();
    let bodies: Vec<Vec<u8>> = (0..proposals + 5)
        .map(|i| serde_json::to_vec(&report(&template, i)).unwrap())
        .collect();

    let mut samples = Vec::with_capacity(proposals);
    for (i, body) in bodies.into_iter().enumerate() {
        let started = Instant::now();
        let resp = client
            .post(&url)
            .bearer_auth(REPORT_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let synced = proposer.drain().await.unwrap();
        let took = started.elapsed();
        assert_eq!(synced, 1);
        if i >= 5 {
            samples.push(took); // the first few warm caches up
        }
    }
    let pushed = git2::Repository::open_bare(&remote)
        .unwrap()
        .branches(Some(git2::BranchType::Local))
        .unwrap()
        .count();
    assert_eq!(pushed, proposals + 5 + 1, "every proposal is a branch on the remote");
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;

    let mut naive_samples = Vec::new();
    for i in 0..naive {
        let work = dir.path().join(format!("clone-{i}"));
        let started = Instant::now();
        let git = |args: &[&str]| {
            let out = Command::new("git").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        git(&[
            "clone",
            "-q",
            &format!("file://{}", remote.display()),
            work.to_str().unwrap(),
        ]);
        std::fs::write(
            work.join(format!("hardware/naive-{i}.yaml")),
            "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\n",
        )
        .unwrap();
        let w = work.to_str().unwrap();
        git(&["-C", w, "add", "-A"]);
        git(&[
            "-C",
            w,
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-qm",
            "naive",
        ]);
        git(&["-C", w, "push", "-q", "origin", &format!("HEAD:refs/heads/naive/{i}")]);
        naive_samples.push(started.elapsed());
        std::fs::remove_dir_all(&work).unwrap();
    }
    naive_samples.sort();
    Row {
        files,
        p50: percentile(&samples, 0.5),
        p90: percentile(&samples, 0.9),
        mean,
        naive_p50: if naive_samples.is_empty() {
            Duration::ZERO
        } else {
            percentile(&naive_samples, 0.5)
        },
    }
}

/// `backlog` reports taken first, then the queue worked at its concurrency until every one
/// is a pushed proposal: proposals a second, on the SQLite file or on PostgreSQL.
async fn backlog_rate(backlog: usize, postgres: Option<&str>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (proposer, url, _) = serve(dir.path(), 10, postgres).await;
    let client = reqwest::Client::new();
    let template = lshw();
    for i in 0..backlog {
        let resp = client
            .post(&url)
            .bearer_auth(REPORT_TOKEN)
            .json(&report(&template, i))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let started = Instant::now();
    let mut done = 0;
    while done < backlog {
        done += proposer.drain().await.unwrap();
    }
    assert_eq!(done, backlog);
    backlog as f64 / started.elapsed().as_secs_f64()
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Resident memory of a serving Registrar with 10,000 machines (full facts) in its store,
/// after listing them the way the API and metrics do.
async fn memory_with_machines(machines: usize) -> (f64, f64) {
    use registrar::domain::{Mac, Source};
    use registrar::store::{MachineQuery, SqliteStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("registrar.db")).unwrap());
    let template = lshw();
    let before = rss_mb();
    for i in 0..machines {
        let mut specs = template.clone();
        specs["serial"] = Value::String(format!("MEM{i:08}"));
        let facts = registrar::domain::facts::from_lshw(&specs);
        store
            .record_facts(Mac::parse(&mac(i)).unwrap(), Source::Report, &facts, chrono::Utc::now())
            .unwrap();
    }
    for offset in (0..machines as u32).step_by(1000) {
        let page = store
            .machines(&MachineQuery {
                limit: 1000,
                offset,
                ..Default::default()
            })
            .unwrap();
        assert!(!page.is_empty());
    }
    store.count_by_state().unwrap();
    assert_eq!(store.pending(100_000).unwrap().len(), machines);
    (before, rss_mb())
}

fn main() {
    let proposals = arg("--proposals", 200);
    let naive = arg("--naive", 10);
    let backlog = arg("--backlog", 500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm the allocator, page cache and thread pool so the first row is not penalised.
        measure(10, 20, 0).await;
        let small = measure(10, proposals, naive).await;
        let large = measure(10_000, proposals, naive).await;
        println!("| Hardware files on main | p50 report → pushed (ms) | p90 (ms) | mean (ms) | clone-commit-push p50 (ms) |");
        println!("|---:|---:|---:|---:|---:|");
        for r in [&small, &large] {
            println!("| {} | {} | {} | {} | {} |", r.files, ms(r.p50), ms(r.p90), ms(r.mean), ms(r.naive_p50));
        }
        println!();
        println!(
            "p50 ratio 10,000 files / 10 files: {:.2}× (target ≤ 1.2×); mean ratio {:.2}×",
            large.p50.as_secs_f64() / small.p50.as_secs_f64(),
            large.mean.as_secs_f64() / small.mean.as_secs_f64()
        );
        println!("Resident memory of this process (server, worker, {} proposals pushed): {:.1} MB", 2 * (proposals + 5) + 25, rss_mb());
        let (before, after) = memory_with_machines(10_000).await;
        println!("Resident memory after storing and listing 10,000 machines with full facts: {after:.1} MB (before: {before:.1} MB)");
        if backlog > 0 {
            let server = pg::postgres::Postgres::start().expect("PostgreSQL for the store comparison");
            let sqlite = backlog_rate(backlog, None).await;
            let postgres = backlog_rate(backlog, Some(&server.create_database("bench"))).await;
            println!();
            println!("| store | a backlog of {backlog} reports → pushed proposals (per second) |");
            println!("|---|---:|");
            println!("| SQLite file (embedded default) | {sqlite:.0} |");
            println!("| PostgreSQL 15 on loopback | {postgres:.0} |");
        }
    });
}
