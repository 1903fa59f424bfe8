//! The store's behaviour, the same on both backends: every scenario runs on an SQLite file
//! (the embedded default) and on PostgreSQL (for replicas), each in a fresh database. The
//! PostgreSQL server is a throwaway one (tests/support/postgres.rs): without it the test
//! says why and skips, except under REGISTRAR_CI=1 (.ci/run), where it fails.

mod support;

use chrono::Utc;
use registrar::domain::{
    Expected, Facts, GroupKey, GroupMember, ImportMode, Mac, Proposal, ProposalState, Sighting, Source, State,
};
use registrar::store::{BatchRow, MachineQuery, Pending, PostgresStore, SqliteStore, Store, StoreError};
use support::postgres::Postgres;

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn facts(serial: &str) -> Facts {
    Facts {
        serial: Some(serial.into()),
        ..Facts::default()
    }
}

type Scenario = (&'static str, fn(&dyn Store));

const SCENARIOS: &[Scenario] = &[
    (
        "an import is read back, searched and its address kept",
        an_import_is_read_back_searched_and_its_address_kept,
    ),
    (
        "repeats queue nothing and changes queue once",
        repeats_queue_nothing_and_changes_queue_once,
    ),
    ("a report during sync stays pending", a_report_during_sync_stays_pending),
    ("rejection suppresses until lifted", rejection_suppresses_until_lifted),
    ("illegal transitions are refused", illegal_transitions_are_refused),
    (
        "a dhcp sighting is kept and a change rerenders an open proposal",
        a_dhcp_sighting_is_kept_and_a_change_rerenders_an_open_proposal,
    ),
    (
        "a forgotten machines transition ids are never given again",
        a_forgotten_machines_transition_ids_are_never_given_again,
    ),
    (
        "a decommission asked for during an open update is proposed once the update is closed",
        a_decommission_asked_for_during_an_open_update_is_proposed_once_the_update_is_closed,
    ),
    (
        "machines sharing a serial uuid or asset tag are found and placeholders never match",
        machines_sharing_a_serial_uuid_or_asset_tag_are_found_and_placeholders_never_match,
    ),
    (
        "the slot queue is first come first served",
        the_slot_queue_is_first_come_first_served,
    ),
    (
        "a full group takes no more and a repeat changes nothing",
        a_full_group_takes_no_more_and_a_repeat_changes_nothing,
    ),
    (
        "another key moves the member and leaving marks the group",
        another_key_moves_the_member_and_leaving_marks_the_group,
    ),
    (
        "an ended group takes no one and finishing leaves nothing",
        an_ended_group_takes_no_one_and_finishing_leaves_nothing,
    ),
    (
        "a rejected member leaves its group in the same step",
        a_rejected_member_leaves_its_group_in_the_same_step,
    ),
];

/// Runs every scenario on both backends, in order, naming the one that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_behaves_the_same_on_sqlite_and_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, scenario)) in SCENARIOS.iter().enumerate() {
        let sqlite = SqliteStore::open(&dir.path().join(format!("{i}.db"))).unwrap();
        run("SQLite", name, || scenario(&sqlite));
    }
    let Some(pg) = Postgres::start() else { return };
    for (i, (name, scenario)) in SCENARIOS.iter().enumerate() {
        let postgres = PostgresStore::connect(&pg.create_database(&format!("scenario_{i}")))
            .await
            .unwrap();
        run("PostgreSQL", name, || scenario(&postgres));
    }
}

fn run(backend: &str, name: &str, scenario: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario)) {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{name} on {backend}: {why}");
    }
}

fn repeats_queue_nothing_and_changes_queue_once(s: &dyn Store) {
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

fn a_report_during_sync_stays_pending(s: &dyn Store) {
    let m = mac("aa:bb:cc:dd:ee:02");
    s.record_facts(m, Source::Report, &facts("A"), Utc::now()).unwrap();
    let work = s.pending(1).unwrap()[0];
    s.record_facts(m, Source::Report, &facts("B"), Utc::now()).unwrap();
    s.mark_synced(work, None, None, Utc::now()).unwrap();
    assert_eq!(s.pending(1).unwrap()[0].rev, 2);
}

fn rejection_suppresses_until_lifted(s: &dyn Store) {
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

fn illegal_transitions_are_refused(s: &dyn Store) {
    let m = mac("aa:bb:cc:dd:ee:04");
    s.record_detection(m, Source::Dhcp, None, Utc::now()).unwrap();
    assert!(matches!(
        s.transition(m, State::Approved, "x", "y", Utc::now()),
        Err(StoreError::Transition { .. })
    ));
}

fn a_dhcp_sighting_is_kept_and_a_change_rerenders_an_open_proposal(s: &dyn Store) {
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

fn a_forgotten_machines_transition_ids_are_never_given_again(s: &dyn Store) {
    // Notifications read every timeline from a cursor: an id given twice would hide news.
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
fn open_proposal(m: Mac, kind: registrar::domain::ProposalKind, branch: &str) -> Proposal {
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

fn a_decommission_asked_for_during_an_open_update_is_proposed_once_the_update_is_closed(s: &dyn Store) {
    use registrar::domain::ProposalKind;
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

fn machines_sharing_a_serial_uuid_or_asset_tag_are_found_and_placeholders_never_match(s: &dyn Store) {
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
    let placeholder = registrar::domain::facts::clean("No Asset Tag");
    assert_eq!(placeholder, None);
    assert!(s.sharing_identity(newcomer, &tagged("S9", None)).unwrap().is_empty());
}

fn the_slot_queue_is_first_come_first_served(s: &dyn Store) {
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

fn member(i: u8, manifest: &str) -> GroupMember {
    GroupMember {
        mac: Mac::from_bytes([0x02, 0, 0, 0, 0, i]).unwrap(),
        path: format!("hardware/m{i}.yaml"),
        name: format!("m{i}"),
        manifest: manifest.into(),
        workflow: None,
        address: None,
        expected: None,
        warnings: vec![],
        exact: false,
    }
}

fn key(k: &str) -> GroupKey {
    GroupKey::new("import", k, format!("import batch {k}")).unwrap()
}

fn a_full_group_takes_no_more_and_a_repeat_changes_nothing(s: &dyn Store) {
    let now = Utc::now();
    let a = s.join_group(&key("1"), 2, &member(1, "a"), now).unwrap();
    let b = s.join_group(&key("1"), 2, &member(2, "b"), now).unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(b.members, 2);
    let c = s.join_group(&key("1"), 2, &member(3, "c"), now).unwrap();
    assert_ne!(c.id, a.id, "full: a new group");
    assert_eq!(c.branch, format!("registrar/group-import-1-{}", c.id));
    // Pushed, then the same member again: nothing to push.
    s.mark_group_synced(a.id, b.rev, Some(7), None, "abc").unwrap();
    let again = s.join_group(&key("1"), 2, &member(2, "b"), now).unwrap();
    assert_eq!(again.id, a.id);
    assert_eq!(again.rev, again.synced_rev, "unchanged member, nothing to push");
    // A changed manifest is something to push.
    let changed = s.join_group(&key("1"), 2, &member(2, "b2"), now).unwrap();
    assert!(changed.rev > changed.synced_rev);
}

fn another_key_moves_the_member_and_leaving_marks_the_group(s: &dyn Store) {
    let now = Utc::now();
    let first = s.join_group(&key("1"), 10, &member(1, "a"), now).unwrap();
    s.join_group(&key("1"), 10, &member(2, "b"), now).unwrap();
    let moved = s.join_group(&key("2"), 10, &member(1, "a"), now).unwrap();
    assert_ne!(moved.id, first.id);
    assert_eq!(s.group(first.id).unwrap().unwrap().members, 1);
    let before = s.group(first.id).unwrap().unwrap();
    s.mark_group_synced(first.id, before.rev, Some(1), None, "h").unwrap();
    assert_eq!(s.leave_group(member(2, "b").mac).unwrap(), Some(first.id));
    let after = s.group(first.id).unwrap().unwrap();
    assert!(after.rev > after.synced_rev, "rewritten without it");
    assert_eq!(after.members, 0);
}

fn an_ended_group_takes_no_one_and_finishing_leaves_nothing(s: &dyn Store) {
    let now = Utc::now();
    let g = s.join_group(&key("1"), 10, &member(1, "a"), now).unwrap();
    s.set_group_state(g.id, "merged").unwrap();
    let next = s.join_group(&key("1"), 10, &member(2, "b"), now).unwrap();
    assert_ne!(next.id, g.id, "a merged group takes no newcomer");
    s.finish_group(g.id).unwrap();
    assert!(s.group(g.id).unwrap().is_none());
    assert!(s.group_members(g.id).unwrap().is_empty());
    assert_eq!(s.groups().unwrap().len(), 1);
    // A finished group's id (its branch's name) is never given to another group.
    s.set_group_state(next.id, "closed").unwrap();
    s.finish_group(next.id).unwrap();
    assert!(s.groups().unwrap().is_empty());
    let third = s.join_group(&key("1"), 10, &member(3, "c"), now).unwrap();
    assert!(third.id > next.id, "{} after {}", third.id, next.id);
    assert_ne!(third.branch, next.branch);
}

fn a_rejected_member_leaves_its_group_in_the_same_step(s: &dyn Store) {
    let now = Utc::now();
    let m = member(1, "a");
    s.record_facts(m.mac, Source::Report, &Facts::default(), now).unwrap();
    let g = s.join_group(&key("1"), 10, &m, now).unwrap();
    s.reject(m.mac, "left out", "github:ops", now).unwrap();
    assert!(s.group_members(g.id).unwrap().is_empty());
}

/// Two replicas on one database: they start together (the schema is made once), then both
/// record the same machines at once from several threads. Every write is whole: no error,
/// one machine per MAC, and each new machine's first transition logged exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_writing_the_same_machines_at_once_never_duplicate_nor_fail() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("replicas");
    let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
    let replicas = [std::sync::Arc::new(a.unwrap()), std::sync::Arc::new(b.unwrap())];
    // What one replica writes, the other's console hears of (NOTIFY at commit). Its
    // listener connects in the background, so the first writes may come before it listens.
    let mut heard = replicas[0].changes();
    let mut told = false;
    for i in 0..20 {
        replicas[1]
            .record_detection(mac(&format!("aa:00:00:00:04:{i:02x}")), Source::Dhcp, None, Utc::now())
            .unwrap();
        if tokio::time::timeout(std::time::Duration::from_millis(500), heard.changed())
            .await
            .is_ok()
        {
            told = true;
            break;
        }
    }
    assert!(told, "a write on one replica never moved the other's change counter");
    let macs: Vec<Mac> = (0..40).map(|i| mac(&format!("aa:00:00:00:02:{i:02x}"))).collect();
    let mut writers = Vec::new();
    for (n, store) in replicas.iter().cycle().take(6).enumerate() {
        let (store, macs) = (store.clone(), macs.clone());
        writers.push(tokio::task::spawn_blocking(move || {
            for m in macs.iter().skip(n % 3).chain(macs.iter()) {
                store.record_facts(*m, Source::Report, &facts(&format!("S-{m}")), Utc::now())?;
                store.record_detection(*m, Source::Dhcp, None, Utc::now())?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for w in writers {
        w.await.unwrap().expect("every write succeeds");
    }
    for (k, m) in macs.iter().enumerate() {
        let log = replicas[1].transitions(*m).unwrap();
        let firsts = log.iter().filter(|t| t.from.is_none()).count();
        assert_eq!(firsts, 1, "{m}: {log:?}");
        // Each writer sees every MAC once, and again if its skip did not pass over it; each
        // visit is a report and a sighting. A lost update would count fewer.
        let visits = (0..6).map(|n| 1 + u64::from(k >= n % 3)).sum::<u64>();
        assert_eq!(replicas[0].machine(*m).unwrap().unwrap().seen_count, 2 * visits, "{m}");
    }
}

/// A database a newer Registrar migrated is refused, not written to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_registrar_is_refused() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("newer");
    drop(PostgresStore::connect(&url).await.unwrap());
    let out = pg
        .psql(&url)
        .args(["-c", "INSERT INTO registrar_schema (version) VALUES (99)"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = PostgresStore::connect(&url).await.err().expect("refused").to_string();
    assert!(err.contains("newer Registrar (schema 99"), "{err}");
}

fn an_import_is_read_back_searched_and_its_address_kept(s: &dyn Store) {
    let now = Utc::now();
    let (owner, other) = (mac("aa:00:00:00:03:01"), mac("aa:00:00:00:03:02"));
    let row = Expected {
        row: 2,
        serial: Some("IMP1".into()),
        ip: Some("10.0.0.2".into()),
        rack: Some("R7".into()),
        ..Default::default()
    };
    let skipped = BatchRow {
        line: 3,
        mac: None,
        error: Some("not a MAC".into()),
        state: None,
    };
    let batch = s
        .import(
            "delivery",
            ImportMode::Expected,
            "api:alice",
            &[(owner, row)],
            &[skipped],
            now,
        )
        .unwrap();
    assert_eq!(batch.rows.len(), 2);
    assert_eq!(s.batches(5).unwrap()[0].id, batch.id);
    let read = s.batch(batch.id).unwrap().unwrap();
    let imported = read.rows.iter().find(|r| r.mac == Some(owner)).unwrap();
    assert_eq!(imported.state, Some(State::Detected));
    // The console's search ignores case, whichever database holds the rows.
    let search = MachineQuery {
        text: Some("r7".into()),
        ..Default::default()
    };
    assert_eq!(
        s.machines(&search).unwrap().iter().map(|m| m.mac).collect::<Vec<_>>(),
        vec![owner]
    );
    assert_eq!(s.count_machines(&search).unwrap(), 1);
    // The address its import row names is the owner's: another machine never gets it.
    let config = serde_json::from_value(serde_json::json!({"name": "lab", "cidr": "10.0.0.0/29"})).unwrap();
    let pool = registrar::ipam::Pool::from_config("lab", &config).unwrap();
    let got = s.allocate(other, &pool, None, &|_| false, now).unwrap().unwrap();
    assert_ne!(got.to_string(), "10.0.0.2");
    assert_eq!(
        s.allocate(other, &pool, Some("10.0.0.2".parse().unwrap()), &|_| false, now)
            .unwrap(),
        None
    );
    assert_eq!(s.address_holder("lab", got).unwrap(), Some(other));
    assert_eq!(s.addresses_used("lab", now).unwrap(), 1);
    // A person's step is in the audit trail.
    assert!(
        s.audit(Some("api:alice"), None, 10)
            .unwrap()
            .iter()
            .any(|a| a.mac == owner.to_string())
    );
}
