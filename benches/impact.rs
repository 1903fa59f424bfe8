//! The rules-change impact preview (`registrar check --impact`) over 10,000 recorded
//! machines: how long the whole comparison takes (every machine rendered under the base's
//! and the working copy's templates, and diffed), with an edit that changes a tenth of them.
//!
//! Run: `cargo bench --bench impact` (prints Markdown; see docs/benchmarks.md).
//! Options: `-- --machines N` (default 10000).

#[path = "support/args.rs"]
mod args;

use std::path::Path;
use std::time::Instant;

use args::arg;
use chrono::Utc;
use registrar::app::impact::{Base, preview};
use registrar::config::Config;
use registrar::domain::{Mac, Source};
use registrar::store::{SqliteStore, Store};
use serde_json::Value;

fn main() {
    let machines = arg("--machines", 10_000);
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lshw = |name: &str| -> Value {
        let path = root.join("../shared/fixtures/lshw").join(name);
        serde_json::from_str(&std::fs::read_to_string(path).expect("the lshw fixture")).unwrap()
    };
    let (supermicro, packet) = (
        registrar::domain::facts::from_lshw(&lshw("supermicro-ssg-6029p-x11dph-t.json")),
        registrar::domain::facts::from_lshw(&lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")),
    );
    let store = SqliteStore::open(&dir.path().join("state/registrar.db")).unwrap();
    let now = Utc::now();
    for i in 0..machines {
        let mut facts = if i % 10 == 0 {
            supermicro.clone()
        } else {
            packet.clone()
        };
        facts.serial = Some(format!("BENCH{i:08}"));
        let mac = Mac::parse(&format!(
            "02:42:00:{:02x}:{:02x}:{:02x}",
            i >> 16 & 0xff,
            i >> 8 & 0xff,
            i & 0xff
        ))
        .unwrap();
        store.record_facts(mac, Source::Report, &facts, now).unwrap();
    }
    drop(store);
    // The base: the shipped templates; the working copy: the same with one rule added.
    let base = root.join("hardware-templates");
    let working = dir.path().join("templates");
    copy(&base, &working);
    let rules = std::fs::read_to_string(working.join("rules.yaml")).unwrap();
    std::fs::write(
        working.join("rules.yaml"),
        rules.replacen(
            "rules:\n",
            "rules:\n  - name: supermicro\n    when: 'facts.vendor == \"Supermicro\"'\n    values:\n      storage_class: dense\n\n",
            1,
        ),
    )
    .unwrap();
    let config = Config {
        state_dir: dir.path().join("state"),
        templates_dir: working,
        ..Config::default()
    };
    let started = Instant::now();
    let impact = preview(&config, &Base::Directory(base)).unwrap();
    let took = started.elapsed();
    println!("| machines compared | would change | time |");
    println!("|---:|---:|---:|");
    println!(
        "| {} | {} | {:.2} s |",
        impact.compared,
        impact.changed.len(),
        took.as_secs_f64()
    );
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
