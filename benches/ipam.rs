//! Allocating addresses: 10,000 machines from one pool beside 10,000 addresses that
//! Hardware already holds, recorded in the real SQLite store (one write transaction each,
//! as Registrar does). Per-allocation time, early and late, in a /17 and a /16: the goal is
//! p50 ≤ 1 ms, flat in the number held and in the pool's size.
//!
//! Run: `cargo bench --bench ipam` (options: `-- --machines N`); a few seconds.

#[path = "support/args.rs"]
mod args;

use args::arg;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chrono::Utc;
use registrar::config::ipam::IpamConfig;
use registrar::domain::Mac;
use registrar::ipam::Pools;
use registrar::store::{SqliteStore, Store};

fn ms(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

fn main() {
    let machines = arg("--machines", 10_000);
    println!(
        "| pool | addresses Hardware already holds | allocations | p50 first 1,000 | p50 last 1,000 | p99 overall |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for cidr in ["10.20.0.0/17", "10.20.0.0/16"] {
        let config: IpamConfig = yaml_serde::from_str(&format!("pools: [{{name: bench, cidr: {cidr}}}]")).unwrap();
        let pool = Pools::from_config(&config).unwrap().production[0].clone();
        // Existing Hardware holds every other address of the first 20,000: the worst case
        // for a scan, a busy address at every step.
        let taken: HashSet<Ipv4Addr> = pool.candidates().take(2 * machines).step_by(2).collect();
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("registrar.db")).unwrap();
        let mut times = Vec::with_capacity(machines);
        for i in 0..machines {
            let mac = Mac::parse(&format!(
                "02:44:00:{:02x}:{:02x}:{:02x}",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            ))
            .unwrap();
            let started = Instant::now();
            let ip = store
                .allocate(mac, &pool, None, &|ip| taken.contains(&ip), Utc::now())
                .unwrap()
                .expect("an address");
            times.push(started.elapsed());
            assert!(!taken.contains(&ip));
        }
        let mut first: Vec<_> = times[..1000.min(machines)].to_vec();
        let mut last: Vec<_> = times[machines.saturating_sub(1000)..].to_vec();
        first.sort();
        last.sort();
        times.sort();
        println!(
            "| {cidr} ({} addresses) | {} | {machines} | {:.3} ms | {:.3} ms | {:.3} ms |",
            pool.size(),
            taken.len(),
            ms(&first, 0.5),
            ms(&last, 0.5),
            ms(&times, 0.99)
        );
    }
}
