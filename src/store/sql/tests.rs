//! The store against a real SQLite file.
use super::*;
use crate::store::SqliteStore;

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
