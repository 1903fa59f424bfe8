//! Imports of expected machines: one batch, its rows and their machines, in one
//! transaction, each row checked again inside it.

use super::tx::{Tx, params};
use chrono::{DateTime, Utc};

use super::super::{Batch, BatchRow, Result, StoreError};
use super::rows::*;
use crate::domain::{Expected, ImportMode, Mac, State};

pub(super) fn import(
    tx: &Tx,
    name: &str,
    mode: ImportMode,
    actor: &str,
    imported: &[(Mac, Expected)],
    skipped: &[BatchRow],
    now: DateTime<Utc>,
) -> Result<Batch> {
    let id: i64 = tx.query_row(
        "INSERT INTO import_batches (name, mode, actor, created_at, rows) VALUES (?1, ?2, ?3, ?4, '[]') RETURNING id",
        params![name, mode.as_str(), actor, ts(now)],
        |r| r.get(0),
    )?;
    let mut rows: Vec<BatchRow> = skipped.to_vec();
    for (mac, values) in imported {
        let expected = Expected {
            batch_id: id,
            batch: name.to_string(),
            mode,
            ..values.clone()
        };
        let json = serde_json::to_string(&expected).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let cause = format!("imported as {} ({})", mode, expected.provenance());
        match get_machine(tx, *mac)? {
            None => {
                // In propose mode the imported values alone make the proposal; the
                // empty facts are replaced when the machine reports.
                let (state, facts) = match mode {
                    ImportMode::Expected => (State::Detected, None),
                    ImportMode::Propose => (State::Reported, Some("{}")),
                };
                tx.execute(
                    "INSERT INTO machines (mac, state, source, facts, workflow, expected, first_seen, last_seen, seen_count)
                     VALUES (?1, ?2, 'import', ?3, ?4, ?5, ?6, ?6, 0)",
                    params![mac.to_string(), state.as_str(), facts, expected.workflow, json, ts(now)],
                )?;
                log_transition(tx, *mac, None, state, &cause, actor, now)?;
                if mode == ImportMode::Propose {
                    queue(tx, *mac, now)?;
                }
            }
            // Checked again inside this transaction: the preview ran before it, and a
            // review or another import may have come in between.
            Some(m)
                if m.expected.is_some()
                    || m.suppressed
                    || !matches!(
                        m.state,
                        State::Detected | State::Waiting | State::Discovering | State::Reported
                    ) =>
            {
                let why = match &m.expected {
                    Some(e) => format!("{mac} became expected meanwhile ({})", e.provenance()),
                    None => format!("{mac} became {} meanwhile", m.state),
                };
                rows.push(BatchRow {
                    line: expected.row,
                    mac: Some(*mac),
                    error: Some(why),
                    state: None,
                });
                continue;
            }
            Some(m) => {
                tx.execute(
                    "UPDATE machines SET expected = ?2, workflow = COALESCE(?3, workflow) WHERE mac = ?1",
                    params![mac.to_string(), json, expected.workflow],
                )?;
                let mut m = m;
                if mode == ImportMode::Propose
                    && m.facts.is_none()
                    && matches!(m.state, State::Detected | State::Waiting | State::Discovering)
                {
                    tx.execute("UPDATE machines SET facts = '{}' WHERE mac = ?1", [mac.to_string()])?;
                    move_to(tx, &m, State::Reported, &cause, actor, now)?;
                    m = must_get(tx, *mac)?;
                } else {
                    log_transition(tx, *mac, Some(m.state), m.state, &cause, actor, now)?;
                }
                if m.facts.is_some() && m.state.accepts_facts() && !m.suppressed {
                    queue(tx, *mac, now)?;
                }
            }
        }
        rows.push(BatchRow {
            line: expected.row,
            mac: Some(*mac),
            error: None,
            state: None,
        });
    }
    rows.sort_by_key(|r| r.line);
    let json = serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute("UPDATE import_batches SET rows = ?2 WHERE id = ?1", params![id, json])?;
    let batch = tx.query_row(
        "SELECT id, name, mode, actor, created_at, rows FROM import_batches WHERE id = ?1",
        [id],
        batch_from_row,
    )?;
    with_fates(tx, batch)
}

/// The newest `limit` import batches, each with its rows' fates.
pub(super) fn batches(tx: &Tx, limit: u32) -> Result<Vec<Batch>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, name, mode, actor, created_at, rows FROM import_batches ORDER BY id DESC LIMIT ?1",
    )?;
    let batches = stmt.query_map([limit], batch_from_row)?.collect::<Result<Vec<_>>>()?;
    batches.into_iter().map(|b| with_fates(tx, b)).collect()
}

pub(super) fn batch(tx: &Tx, id: i64) -> Result<Option<Batch>> {
    use super::tx::OptionalExtension;
    let b = tx
        .query_row(
            "SELECT id, name, mode, actor, created_at, rows FROM import_batches WHERE id = ?1",
            [id],
            batch_from_row,
        )
        .optional()?;
    b.map(|b| with_fates(tx, b)).transpose()
}
