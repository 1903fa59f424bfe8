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
