//! Rows to domain values and back, and the steps every write shares (read a machine, move
//! it to a state with its transition, queue it).

use super::tx::{OptionalExtension, Row, Tx, params};
use chrono::{DateTime, Utc};

use super::super::{Batch, BatchRow, MachineQuery, Result, StoreError};
use super::{Bounds, MACHINE_COLUMNS};
use crate::domain::{
    Basis, Expected, Facts, ImportMode, Mac, Machine, Proposal, ProposalKind, ProposalState, Sighting, Source, State,
};

pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    conv(DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)))
}

/// A stored value that does not parse: the row is corrupt.
pub(super) fn conv<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[derive(Debug)]
pub(super) struct Msg(pub(super) String);
impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Msg {}

pub(super) fn machine_from_row(r: &Row) -> Result<Machine> {
    let facts: Option<String> = r.get(3)?;
    Ok(Machine {
        mac: conv(Mac::parse(&r.get::<_, String>(0)?))?,
        state: conv(r.get::<_, String>(1)?.parse::<State>().map_err(Msg))?,
        source: conv(r.get::<_, String>(2)?.parse::<Source>().map_err(Msg))?,
        facts: facts.map(|f| conv(serde_json::from_str::<Facts>(&f))).transpose()?,
        name: r.get(4)?,
        workflow: r.get(5)?,
        suppressed: r.get(6)?,
        first_seen: parse_ts(&r.get::<_, String>(7)?)?,
        last_seen: parse_ts(&r.get::<_, String>(8)?)?,
        seen_count: r.get::<_, i64>(9)? as u64,
        pending: r.get(10)?,
        last_error: r.get(11)?,
        sighting: r
            .get::<_, Option<String>>(12)?
            .map(|s| conv(serde_json::from_str::<Sighting>(&s)))
            .transpose()?,
        expected: r
            .get::<_, Option<String>>(13)?
            .map(|s| conv(serde_json::from_str::<Expected>(&s)))
            .transpose()?,
        settled: r
            .get::<_, Option<String>>(14)?
            .map(|s| conv(serde_json::from_str::<Basis>(&s)))
            .transpose()?,
        wanted: r
            .get::<_, Option<String>>(15)?
            .map(|s| conv(s.parse::<ProposalKind>().map_err(Msg)))
            .transpose()?,
    })
}

pub(super) fn proposal_from_row(r: &Row) -> Result<Proposal> {
    Ok(Proposal {
        mac: conv(Mac::parse(&r.get::<_, String>(0)?))?,
        forge: r.get(1)?,
        number: r.get::<_, Option<i64>>(2)?.map(|n| n as u64),
        url: r.get(3)?,
        branch: r.get(4)?,
        path: r.get(5)?,
        name: r.get(6)?,
        title: r.get(7)?,
        summary: r.get(8)?,
        head: r.get(9)?,
        rule: r.get(10)?,
        workflow: r.get(11)?,
        state: conv(r.get::<_, String>(12)?.parse::<ProposalState>().map_err(Msg))?,
        created_at: parse_ts(&r.get::<_, String>(13)?)?,
        updated_at: parse_ts(&r.get::<_, String>(14)?)?,
        hands_off: r.get(15)?,
        kind: conv(r.get::<_, String>(16)?.parse::<ProposalKind>().map_err(Msg))?,
        basis: r
            .get::<_, Option<String>>(17)?
            .map(|s| conv(serde_json::from_str::<Basis>(&s)))
            .transpose()?,
        replaces: r
            .get::<_, Option<String>>(18)?
            .map(|s| conv(Mac::parse(&s)))
            .transpose()?,
    })
}

pub(super) const PROPOSAL_COLUMNS: &str = "mac, forge, number, url, branch, path, name, title, summary, head, rule, workflow, state, created_at, updated_at, kind, basis, replaces";
pub(super) const PROPOSAL_SELECT: &str = "mac, forge, number, url, branch, path, name, title, summary, head, rule, workflow, state, created_at, updated_at, hands_off, kind, basis, replaces";

/// The WHERE clause for a machine list and its arguments; values are always bound, never
/// spliced into the SQL.
pub(super) fn machine_filter(q: &MachineQuery) -> (String, Vec<Option<String>>) {
    let like = q
        .text
        .as_ref()
        .map(|t| format!("%{}%", t.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    let expected = q.expected.map(|e| if e { "1" } else { "0" }.to_string());
    (
        "(?1 IS NULL OR state = ?1)
         AND (?2 IS NULL OR source = ?2)
         AND (?3 IS NULL OR (expected IS NOT NULL) = (?3 = '1'))
         AND (?4 IS NULL OR mac LIKE ?4 ESCAPE '\\' OR name LIKE ?4 ESCAPE '\\' OR facts LIKE ?4 ESCAPE '\\' OR expected LIKE ?4 ESCAPE '\\')"
            .to_string(),
        vec![q.state.map(|s| s.as_str().to_string()), q.source.map(|s| s.as_str().to_string()), expected, like],
    )
}

pub(super) fn batch_from_row(r: &Row) -> Result<Batch> {
    Ok(Batch {
        id: r.get(0)?,
        name: r.get(1)?,
        mode: conv(r.get::<_, String>(2)?.parse::<ImportMode>().map_err(Msg))?,
        actor: r.get(3)?,
        created_at: parse_ts(&r.get::<_, String>(4)?)?,
        rows: conv(serde_json::from_str::<Vec<BatchRow>>(&r.get::<_, String>(5)?))?,
    })
}

/// Fills in each imported row's current state.
pub(super) fn with_fates(tx: &Tx, mut b: Batch) -> Result<Batch> {
    let mut stmt = tx.prepare_cached("SELECT state FROM machines WHERE mac = ?1")?;
    for row in b.rows.iter_mut().filter(|r| r.error.is_none()) {
        if let Some(mac) = row.mac {
            let state: Option<String> = stmt.query_row([mac.to_string()], |r| r.get(0)).optional()?;
            row.state = state.and_then(|s| s.parse().ok());
        }
    }
    Ok(b)
}

pub(super) fn get_machine(tx: &Tx, mac: Mac) -> Result<Option<Machine>> {
    tx.query_row(
        &format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE mac = ?1"),
        [mac.to_string()],
        machine_from_row,
    )
    .optional()
}

pub(super) fn must_get(tx: &Tx, mac: Mac) -> Result<Machine> {
    get_machine(tx, mac)?.ok_or(StoreError::NotFound(mac))
}

pub(super) fn log_transition(
    tx: &Tx,
    mac: Mac,
    from: Option<State>,
    to: State,
    cause: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO transitions (mac, from_state, to_state, at, cause, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            mac.to_string(),
            from.map(State::as_str),
            to.as_str(),
            ts(now),
            cause,
            actor
        ],
    )?;
    Ok(())
}

pub(super) fn move_to(tx: &Tx, m: &Machine, to: State, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<()> {
    if !m.state.can_become(to) {
        return Err(StoreError::Transition {
            mac: m.mac,
            from: m.state,
            to,
        });
    }
    // Leaving "rejected" lifts the suppression that came with it, whichever way it is left.
    tx.execute(
        "UPDATE machines SET state = ?2, suppressed = CASE WHEN ?3 = 1 THEN 0 ELSE suppressed END WHERE mac = ?1",
        params![m.mac.to_string(), to.as_str(), m.state == State::Rejected],
    )?;
    log_transition(tx, m.mac, Some(m.state), to, cause, actor, now)
}

/// Bumps the revision: the machine has something new for git.
pub(super) fn queue(tx: &Tx, mac: Mac, now: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "UPDATE machines SET rev = rev + 1, pending_since = COALESCE(CASE WHEN rev > synced_rev THEN pending_since END, ?2) WHERE mac = ?1",
        params![mac.to_string(), ts(now)],
    )?;
    Ok(())
}

/// Refuses a new machine when more than `max_new_per_minute` were first seen in the last
/// minute (a flood of spoofed MACs), before anything is written.
pub(super) fn refuse_a_flood(tx: &Tx, bounds: Bounds, now: DateTime<Utc>) -> Result<()> {
    if bounds.max_new_per_minute == 0 {
        return Ok(());
    }
    let since = now - chrono::Duration::minutes(1);
    let recent: i64 = tx.query_row(
        "SELECT COUNT(*) FROM machines WHERE first_seen > ?1",
        [ts(since)],
        |r| r.get(0),
    )?;
    if recent as u64 >= bounds.max_new_per_minute {
        return Err(StoreError::Flood(format!(
            "{recent} new machines in the last minute (discovery.max_new_per_minute: {})",
            bounds.max_new_per_minute
        )));
    }
    Ok(())
}

/// Machines only ever seen (no facts, not expected, no proposal, not suppressed), beyond
/// `keep`, oldest first, with their timelines: a flood never grows the store without bound.
pub(super) fn evict_undiscovered(tx: &Tx, keep: u64) -> Result<u64> {
    if keep == 0 {
        return Ok(0);
    }
    const UNDISCOVERED: &str = "state IN ('detected', 'waiting') AND facts IS NULL AND expected IS NULL \
         AND suppressed = 0 AND mac NOT IN (SELECT mac FROM proposals)";
    let count: i64 = tx.query_row(
        &format!("SELECT COUNT(*) FROM machines WHERE {UNDISCOVERED}"),
        (),
        |r| r.get(0),
    )?;
    let excess = (count as u64).saturating_sub(keep);
    if excess == 0 {
        return Ok(0);
    }
    let victims = format!("SELECT mac FROM machines WHERE {UNDISCOVERED} ORDER BY first_seen, mac LIMIT {excess}");
    tx.execute(&format!("DELETE FROM transitions WHERE mac IN ({victims})"), ())?;
    tx.execute(&format!("DELETE FROM machines WHERE mac IN ({victims})"), ())?;
    Ok(excess)
}

/// Deletes a machine no proposal of which is open or merged, with its history and tokens,
/// so that it is noticed afresh.
pub(super) fn forget(tx: &Tx, mac: Mac, actor: &str, now: DateTime<Utc>) -> Result<()> {
    let m = must_get(tx, mac)?;
    let open: Option<String> = tx
        .query_row(
            "SELECT state FROM proposals WHERE mac = ?1 AND state IN ('open', 'approving', 'rejecting', 'merged')",
            [mac.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    if open.is_some()
        || matches!(
            m.state,
            State::Approved | State::Applied | State::Provisioned | State::Inventorying | State::Failed
        )
    {
        // Git holds it (or is about to): forgetting would hide it, not remove it.
        return Err(StoreError::Transition {
            mac,
            from: m.state,
            to: State::Detected,
        });
    }
    tracing::info!(%mac, actor, at = %ts(now), "machine forgotten");
    tx.execute(
        "INSERT INTO audit (at, actor, mac, action) VALUES (?1, ?2, ?3, 'forgotten: every record of it dropped')",
        params![ts(now), actor, mac.to_string()],
    )?;
    tx.execute("DELETE FROM machines WHERE mac = ?1", [mac.to_string()])?;
    tx.execute("DELETE FROM transitions WHERE mac = ?1", [mac.to_string()])?;
    tx.execute("DELETE FROM proposals WHERE mac = ?1", [mac.to_string()])?;
    tx.execute("DELETE FROM report_tokens WHERE mac = ?1", [mac.to_string()])?;
    tx.execute("DELETE FROM slot_queue WHERE mac = ?1", [mac.to_string()])?;
    Ok(())
}

/// A machine seen (DHCP, Smee's log, an auto-discovered Hardware): recorded, or its
/// sighting updated; a changed sighting re-renders an open proposal.
pub(super) fn record_detection(
    tx: &Tx,
    bounds: Bounds,
    mac: Mac,
    source: Source,
    (sighting, json): (Option<&Sighting>, Option<&str>),
    now: DateTime<Utc>,
) -> Result<crate::store::Recorded> {
    let existing = get_machine(tx, mac)?;
    let mut queued = false;
    let mut evicted = 0;
    match &existing {
        None => {
            refuse_a_flood(tx, bounds, now)?;
            tx.execute(
                "INSERT INTO machines (mac, state, source, sighting, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![mac.to_string(), State::Detected.as_str(), source.as_str(), json, ts(now)],
            )?;
            log_transition(
                tx,
                mac,
                None,
                State::Detected,
                &format!("seen ({})", source.as_str()),
                "registrar",
                now,
            )?;
            evicted = evict_undiscovered(tx, bounds.max_undiscovered)?;
        }
        Some(m) => {
            tx.execute(
                "UPDATE machines SET last_seen = ?2, seen_count = seen_count + 1, sighting = COALESCE(?3, sighting) WHERE mac = ?1",
                params![mac.to_string(), ts(now), json],
            )?;
            // What DHCP reveals (arch, UEFI) shapes the manifest: re-render an open proposal.
            let changed = sighting.is_some() && m.sighting.as_ref() != sighting;
            if changed && m.facts.is_some() && m.state.accepts_facts() && !m.suppressed {
                queue(tx, mac, now)?;
                queued = true;
            }
        }
    }
    Ok(crate::store::Recorded {
        machine: must_get(tx, mac)?,
        new: existing.is_none(),
        queued,
        evicted,
    })
}
