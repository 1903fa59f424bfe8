//! The store against a real SQLite file.
use super::*;

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
fn repeats_queue_nothing_and_changes_queue_once() {
    let s = SqliteStore::in_memory().unwrap();
    let m = mac("aa:bb:cc:dd:ee:01");
    let now = Utc::now();
    assert!(s.record_facts(m, Source::Report, &facts("A"), now).unwrap().queued);
    assert!(!s.record_facts(m, Source::Report, &facts("A"), now).unwrap().queued);
    let work = s.pending(10).unwrap();
    assert_eq!(work, vec![Pending { mac: m, rev: 1 }]);
    s.mark_synced(work[0], None, Some("a"), now).unwrap();
    assert!(s.pending(10).unwrap().is_empty());
    assert!(s.record_facts(m, Source::Report, &facts("B"), now).unwrap().queued);
    assert_eq!(s.pending(10).unwrap(), vec![Pending { mac: m, rev: 2 }]);
    assert_eq!(s.machine(m).unwrap().unwrap().seen_count, 3);
}

#[test]
fn a_report_during_sync_stays_pending() {
    let s = SqliteStore::in_memory().unwrap();
    let m = mac("aa:bb:cc:dd:ee:02");
    s.record_facts(m, Source::Report, &facts("A"), Utc::now()).unwrap();
    let work = s.pending(1).unwrap()[0];
    s.record_facts(m, Source::Report, &facts("B"), Utc::now()).unwrap();
    s.mark_synced(work, None, None, Utc::now()).unwrap();
    assert_eq!(s.pending(1).unwrap()[0].rev, 2);
}

#[test]
fn rejection_suppresses_until_lifted() {
    let s = SqliteStore::in_memory().unwrap();
    let m = mac("aa:bb:cc:dd:ee:03");
    s.record_facts(m, Source::Report, &facts("A"), Utc::now()).unwrap();
    s.reject(m, "not ours", "api:alice", Utc::now()).unwrap();
    assert!(s.pending(10).unwrap().is_empty());
    let again = s.record_facts(m, Source::Report, &facts("Z"), Utc::now()).unwrap();
    assert!(!again.queued);
    assert_eq!(again.machine.state, State::Rejected);
    let lifted = s.unsuppress(m, "api:alice", Utc::now()).unwrap();
    assert_eq!(lifted.state, State::Reported);
    assert_eq!(s.pending(10).unwrap().len(), 1);
    let log = s.transitions(m).unwrap();
    assert_eq!(
        log.iter().map(|t| t.to).collect::<Vec<_>>(),
        vec![State::Reported, State::Rejected, State::Reported]
    );
    assert_eq!(log[1].actor, "api:alice");
    assert_eq!(log[1].cause, "not ours");
}

#[test]
fn illegal_transitions_are_refused() {
    let s = SqliteStore::in_memory().unwrap();
    let m = mac("aa:bb:cc:dd:ee:04");
    s.record_detection(m, Source::Dhcp, None, Utc::now()).unwrap();
    assert!(matches!(
        s.transition(m, State::Approved, "x", "y", Utc::now()),
        Err(StoreError::Transition { .. })
    ));
}

#[test]
fn a_dhcp_sighting_is_kept_and_a_change_rerenders_an_open_proposal() {
    let s = SqliteStore::in_memory().unwrap();
    let m = mac("aa:bb:cc:dd:ee:06");
    let seen = Sighting {
        arch: Some("x86_64".into()),
        uefi: Some(false),
        ..Default::default()
    };
    let r = s.record_detection(m, Source::Dhcp, Some(&seen), Utc::now()).unwrap();
    assert!(r.new && !r.queued);
    assert_eq!(r.machine.state, State::Detected);
    let r = s.record_facts(m, Source::Report, &facts("A"), Utc::now()).unwrap();
    assert_eq!(r.machine.state, State::Reported);
    assert_eq!(r.machine.sighting, Some(seen.clone()));
    s.mark_synced(s.pending(1).unwrap()[0], None, None, Utc::now()).unwrap();
    assert!(
        !s.record_detection(m, Source::Dhcp, Some(&seen), Utc::now())
            .unwrap()
            .queued
    );
    let uefi = Sighting {
        uefi: Some(true),
        ..seen
    };
    assert!(
        s.record_detection(m, Source::Dhcp, Some(&uefi), Utc::now())
            .unwrap()
            .queued
    );
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
            [],
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

#[test]
fn a_forgotten_machines_transition_ids_are_never_given_again() {
    // Notifications read every timeline from a cursor: an id given twice would hide news.
    let s = SqliteStore::in_memory().unwrap();
    let (a, b) = (mac("aa:bb:cc:dd:ee:31"), mac("aa:bb:cc:dd:ee:32"));
    s.record_facts(a, Source::Report, &facts("A"), Utc::now()).unwrap();
    let cursor = s.last_transition_id().unwrap();
    assert!(cursor > 0);
    s.forget(a, "ops", Utc::now()).unwrap();
    s.record_facts(b, Source::Report, &facts("B"), Utc::now()).unwrap();
    let news = s.transitions_after(cursor, 10).unwrap();
    assert!(news.iter().any(|e| e.mac == b), "{news:?}");
}

/// A proposal record of `kind` on `branch`, open.
fn open_proposal(m: Mac, kind: crate::domain::ProposalKind, branch: &str) -> Proposal {
    let now = Utc::now();
    Proposal {
        mac: m,
        forge: "local".into(),
        number: None,
        url: None,
        branch: branch.into(),
        path: "hardware/a.yaml".into(),
        name: "a".into(),
        title: "a".into(),
        summary: String::new(),
        head: String::new(),
        rule: "default".into(),
        workflow: None,
        state: ProposalState::Open,
        created_at: now,
        updated_at: now,
        hands_off: false,
        kind,
        basis: None,
        replaces: None,
    }
}

#[test]
fn a_decommission_asked_for_during_an_open_update_is_proposed_once_the_update_is_closed() {
    use crate::domain::ProposalKind;
    let s = SqliteStore::in_memory().unwrap();
    let m = mac("aa:bb:cc:dd:ee:60");
    let now = Utc::now();
    s.record_facts(m, Source::Report, &facts("A"), now).unwrap();
    let work = s.pending(1).unwrap()[0];
    s.mark_synced(
        work,
        Some(&open_proposal(m, ProposalKind::Register, "registrar/x")),
        Some("a"),
        now,
    )
    .unwrap();
    assert_eq!(
        s.record_merge(m, "merged", "api:alice", now).unwrap().state,
        State::Approved
    );
    s.transition(m, State::Applied, "applied", "registrar", now).unwrap();
    // An update is open; the decommission waits for it.
    let work = s.requeue(m, now).unwrap();
    s.mark_synced(
        work,
        Some(&open_proposal(m, ProposalKind::Update, "registrar/x-update-2")),
        None,
        now,
    )
    .unwrap();
    let work = s.want(m, ProposalKind::Decommission, "api:alice", now).unwrap();
    assert_eq!(work.wanted, Some(ProposalKind::Decommission));
    let queued = s.pending(1).unwrap()[0];
    s.mark_synced(queued, None, None, now).unwrap();
    assert!(s.pending(1).unwrap().is_empty());
    // Closing the update brings the decommission back to the queue; the machine keeps its state.
    let closed = s.record_change_closed(m, "closed", "api:bob", now).unwrap();
    assert_eq!(closed.state, State::Applied);
    assert_eq!(closed.wanted, Some(ProposalKind::Decommission));
    assert_eq!(s.pending(1).unwrap().len(), 1);
}

#[test]
fn machines_sharing_a_serial_uuid_or_asset_tag_are_found_and_placeholders_never_match() {
    let s = SqliteStore::in_memory().unwrap();
    let now = Utc::now();
    let tagged = |serial: &str, tag: Option<&str>| Facts {
        asset_tag: tag.map(str::to_string),
        ..facts(serial)
    };
    s.record_facts(
        mac("aa:00:00:00:00:01"),
        Source::Report,
        &tagged("S1", Some("ACME-1")),
        now,
    )
    .unwrap();
    s.record_facts(mac("aa:00:00:00:00:02"), Source::Report, &tagged("S2", None), now)
        .unwrap();
    let newcomer = mac("aa:00:00:00:00:09");
    let by_tag = s.sharing_identity(newcomer, &tagged("S9", Some("ACME-1"))).unwrap();
    assert_eq!(by_tag, vec![(mac("aa:00:00:00:00:01"), "asset tag ACME-1".to_string())]);
    let by_serial = s.sharing_identity(newcomer, &tagged("S2", None)).unwrap();
    assert_eq!(by_serial, vec![(mac("aa:00:00:00:00:02"), "serial S2".to_string())]);
    // Reported facts never carry a placeholder: it is dropped when they are read.
    let placeholder = crate::domain::facts::clean("No Asset Tag");
    assert_eq!(placeholder, None);
    assert!(s.sharing_identity(newcomer, &tagged("S9", None)).unwrap().is_empty());
}

#[test]
fn the_slot_queue_is_first_come_first_served() {
    let s = SqliteStore::in_memory().unwrap();
    let t0 = Utc::now();
    let macs: Vec<Mac> = (1..=3).map(|i| mac(&format!("aa:00:00:00:01:0{i}"))).collect();
    for (i, m) in macs.iter().enumerate() {
        let rec = s
            .record_facts(*m, Source::Report, &facts(&format!("Q{i}")), t0)
            .unwrap();
        let work = Pending {
            mac: *m,
            rev: rec.machine.mac.to_string().len() as u64,
        };
        s.wait_for_slot(work, "waiting", t0 + chrono::Duration::seconds(i as i64))
            .unwrap();
    }
    let newcomer = mac("aa:00:00:00:01:09");
    assert_eq!(s.slot_position(macs[0]).unwrap(), 0);
    assert_eq!(s.slot_position(macs[2]).unwrap(), 2);
    assert_eq!(
        s.slot_position(newcomer).unwrap(),
        3,
        "a newcomer waits behind everyone"
    );
    // Released, the oldest keeps its place until it is let through.
    assert_eq!(s.release_slots(1, t0).unwrap(), vec![macs[0]]);
    assert_eq!(s.slot_position(macs[1]).unwrap(), 1);
    s.leave_slot_queue(macs[0]).unwrap();
    assert_eq!(s.slot_position(macs[1]).unwrap(), 0);
    assert_eq!(s.slot_queue(10).unwrap().count, 2);
}
