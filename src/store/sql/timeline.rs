//! Machines' timelines: each one's transitions, and every machine's since a cursor (what
//! notifications have told), with the cursors themselves.

use super::tx::{OptionalExtension, Row, Tx, params};

use super::super::{AuditEntry, Result, TimelineEntry};
use super::rows::{Msg, conv, parse_ts};
use crate::domain::{Mac, State, Transition};

fn transition(r: &Row, first: usize) -> Result<Transition> {
    Ok(Transition {
        from: r
            .get::<_, Option<String>>(first)?
            .map(|s| conv(s.parse::<State>().map_err(Msg)))
            .transpose()?,
        to: conv(r.get::<_, String>(first + 1)?.parse::<State>().map_err(Msg))?,
        at: parse_ts(&r.get::<_, String>(first + 2)?)?,
        cause: r.get(first + 3)?,
        actor: r.get(first + 4)?,
    })
}

pub(super) fn of(tx: &Tx, mac: Mac) -> Result<Vec<Transition>> {
    let mut stmt =
        tx.prepare_cached("SELECT from_state, to_state, at, cause, actor FROM transitions WHERE mac = ?1 ORDER BY id")?;
    let rows = stmt.query_map([mac.to_string()], |r| transition(r, 0))?;
    rows.collect::<Result<Vec<_>>>()
}

/// Every machine's transitions after `after` (an id), oldest first, with the machine's name.
pub(super) fn after(tx: &Tx, after: i64, limit: u32) -> Result<Vec<TimelineEntry>> {
    let mut stmt = tx.prepare_cached(
        "SELECT t.id, t.mac, m.name, t.from_state, t.to_state, t.at, t.cause, t.actor
         FROM transitions t LEFT JOIN machines m ON m.mac = t.mac
         WHERE t.id > ?1 ORDER BY t.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], |r| {
        Ok(TimelineEntry {
            id: r.get(0)?,
            mac: conv(r.get::<_, String>(1)?.parse::<Mac>().map_err(|e| Msg(e.to_string())))?,
            name: r.get(2)?,
            transition: transition(r, 3)?,
        })
    })?;
    rows.collect::<Result<Vec<_>>>()
}

pub(super) fn last_id(tx: &Tx) -> Result<i64> {
    tx.query_row("SELECT COALESCE(MAX(id), 0) FROM transitions", (), |r| r.get(0))
}

pub(super) fn cursor(tx: &Tx, name: &str) -> Result<Option<i64>> {
    tx.query_row("SELECT value FROM cursors WHERE name = ?1", [name], |r| r.get(0))
        .optional()
}

pub(super) fn set_cursor(tx: &Tx, name: &str, value: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO cursors (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}

/// People's steps, newest first, optionally one person's, older than `before` (an id).
pub(super) fn audit(tx: &Tx, actor: Option<&str>, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, at, actor, mac, action FROM audit
         WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![actor, before, limit], |r| {
        Ok(AuditEntry {
            id: r.get(0)?,
            at: parse_ts(&r.get::<_, String>(1)?)?,
            actor: r.get(2)?,
            mac: r.get(3)?,
            action: r.get(4)?,
        })
    })?;
    rows.collect::<Result<Vec<_>>>()
}
