//! The SQLite file itself: reopening, migrating older files, restarts.
use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::{SqliteStore, schema};
use crate::domain::{Facts, Mac, Source, State};
use crate::store::Store;

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn facts(serial: &str) -> Facts {
    Facts {
        serial: Some(serial.into()),
        ..Facts::default()
    }
}

#[test]
fn a_name_number_is_given_once_to_one_machine_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (a, b) = (mac("aa:bb:cc:dd:ee:0a"), mac("aa:bb:cc:dd:ee:0b"));
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.next_name_number().unwrap(), 1);
    assert_eq!(s.claim_name_number(a, 1).unwrap(), Some(1));
    // B cannot have A's number, and A keeps its own whatever it asks for later.
    assert_eq!(s.claim_name_number(b, 1).unwrap(), None);
    assert_eq!(s.claim_name_number(a, 5).unwrap(), Some(1));
    assert_eq!(s.next_name_number().unwrap(), 2);
    assert_eq!(s.claim_name_number(b, 2).unwrap(), Some(2));
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        (s.name_number(a).unwrap(), s.name_number(b).unwrap()),
        (Some(1), Some(2))
    );
}

#[test]
fn survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let m = mac("aa:bb:cc:dd:ee:05");
    SqliteStore::open(&path)
        .unwrap()
        .record_facts(m, Source::Report, &facts("A"), Utc::now())
        .unwrap();
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.pending(10).unwrap().len(), 1);
    assert_eq!(
        s.machine(m).unwrap().unwrap().facts.unwrap().serial.as_deref(),
        Some("A")
    );
}

#[test]
fn a_file_from_an_older_registrar_migrates_and_keeps_its_machines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrar.db");
    {
        // As the release with the first three steps left it.
        let conn = Connection::open(&path).unwrap();
        for step in &schema::STEPS[..3] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO machines (mac, state, source, first_seen, last_seen) VALUES ('aa:bb:cc:dd:ee:07', 'detected', 'dhcp', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            (),
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let m = s
        .machine(mac("aa:bb:cc:dd:ee:07"))
        .unwrap()
        .expect("the machine survives");
    assert_eq!(m.state, State::Detected);
    assert!(m.expected.is_none(), "columns added later start empty");
    drop(s);
    let conn = Connection::open(&path).unwrap();
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, schema::STEPS.len());
}

#[test]
fn a_file_from_a_newer_registrar_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrar.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).err().expect("refused").to_string();
    assert!(err.contains("newer Registrar (schema 99"), "{err}");
}

mod addresses {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::ipam::Pools;

    fn pool() -> crate::ipam::Pool {
        let config: crate::config::ipam::IpamConfig = yaml_serde::from_str(
            "pools: [{name: small, cidr: 10.1.0.0/28, ranges: [10.1.0.2-10.1.0.9], exclude: [10.1.0.5], gateway: 10.1.0.1}]",
        )
        .unwrap();
        Pools::from_config(&config).unwrap().production[0].clone()
    }

    #[derive(Debug, Clone)]
    enum Step {
        Allocate(u8),
        Release(u8),
        /// An import row names an address (by its index among the pool's) for a machine.
        Import(u8, u8),
        Restart,
        Wait(u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..12).prop_map(Step::Allocate),
            2 => (0u8..12).prop_map(Step::Release),
            1 => (0u8..12, 0u8..8).prop_map(|(n, i)| Step::Import(n, i)),
            1 => Just(Step::Restart),
            1 => (1u16..120).prop_map(Step::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the order of allocations, releases, restarts and waits: no address is held
        /// by two machines, a machine keeps its address, a released one is unused for the
        /// quarantine, and none leaks (a machine is refused only when every address is held,
        /// quarantined or taken elsewhere).
        #[test]
        fn never_twice_never_leaked(steps in proptest::collection::vec(step(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("registrar.db");
            let mut store = SqliteStore::open(&path).unwrap();
            let pool = pool();
            let taken_elsewhere: Ipv4Addr = "10.1.0.3".parse().unwrap();
            let taken = move |ip: Ipv4Addr| ip == taken_elsewhere;
            let quarantine = chrono::Duration::seconds(60);
            let mut now = Utc::now();
            let mut held: BTreeMap<u8, Ipv4Addr> = BTreeMap::new();
            let mut resting: BTreeMap<Ipv4Addr, (DateTime<Utc>, u8)> = BTreeMap::new();
            let mut imported: BTreeMap<u8, Ipv4Addr> = BTreeMap::new();
            let size = pool.candidates().filter(|ip| !taken(*ip)).count();
            let all: Vec<Ipv4Addr> = pool.candidates().collect();
            for s in steps {
                match s {
                    Step::Allocate(n) => {
                        let m = mac(&format!("02:00:00:00:00:{n:02x}"));
                        // As production_address does: an imported address is the one asked for.
                        let wanted = imported.get(&n).copied();
                        let got = store.allocate(m, &pool, wanted, &taken, now).unwrap();
                        resting.retain(|_, (until, _)| *until > now);
                        match (held.get(&n), got) {
                            (Some(had), got) => prop_assert_eq!(Some(*had), got, "a machine keeps its address"),
                            (None, Some(ip)) => {
                                prop_assert!(!held.values().any(|h| *h == ip), "{ip} handed out twice");
                                prop_assert!(!taken(ip) && pool.may_hand_out(ip));
                                prop_assert!(wanted.is_none_or(|w| w == ip), "asked for {wanted:?}, got {ip}");
                                prop_assert!(
                                    !imported.iter().any(|(other, i)| *other != n && *i == ip),
                                    "{ip} is another machine's by its import row"
                                );
                                // Only its own quarantined address may come back early.
                                if let Some((_, owner)) = resting.remove(&ip) {
                                    prop_assert_eq!(owner, n, "{} came out of quarantine early for another machine", ip);
                                }
                                held.insert(n, ip);
                            }
                            (None, None) if wanted.is_some() => {}
                            (None, None) => {
                                let busy: BTreeSet<Ipv4Addr> = held
                                    .values()
                                    .chain(resting.keys())
                                    .chain(imported.iter().filter(|(other, _)| **other != n).map(|(_, ip)| ip))
                                    .copied()
                                    .filter(|ip| !taken(*ip))
                                    .collect();
                                prop_assert_eq!(busy.len(), size, "refused while addresses were free: {:?}", busy);
                            }
                        }
                    }
                    // Only for a machine that holds nothing and was never imported: a row that
                    // moves a machine is another story.
                    Step::Import(n, i) if !held.contains_key(&n) && !imported.contains_key(&n) => {
                        let ip = all[i as usize % all.len()];
                        let m = mac(&format!("02:00:00:00:00:{n:02x}"));
                        let row = crate::domain::Expected {
                            ip: Some(ip.to_string()),
                            ..Default::default()
                        };
                        store.import("prop", crate::domain::ImportMode::Expected, "test", &[(m, row)], &[], now).unwrap();
                        imported.insert(n, ip);
                    }
                    Step::Import(..) => {}
                    Step::Release(n) => {
                        let m = mac(&format!("02:00:00:00:00:{n:02x}"));
                        store.release_addresses(m, None, now + quarantine).unwrap();
                        if let Some(ip) = held.remove(&n) {
                            resting.insert(ip, (now + quarantine, n));
                        }
                    }
                    Step::Restart => {
                        drop(store);
                        store = SqliteStore::open(&path).unwrap();
                    }
                    Step::Wait(secs) => now += chrono::Duration::seconds(secs as i64),
                }
            }
        }
    }
}
