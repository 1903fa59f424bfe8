//! The embedded store: one SQLite file in WAL mode behind a mutex. Every method is one
//! transaction; callers in async code run them on the blocking pool.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Batch, BatchRow, MachineQuery, Pending, Recorded, Result, Sort, Store, StoreError};
use crate::domain::{
    Expected, Facts, ImportMode, Mac, Machine, Proposal, ProposalState, Sighting, Source, State, Transition,
};

/// Each entry runs once, in order; `PRAGMA user_version` remembers how far a file got.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE machines (
    mac         TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    source      TEXT NOT NULL,
    facts       TEXT,
    facts_fp    TEXT,
    name        TEXT,
    workflow    TEXT,
    suppressed  INTEGER NOT NULL DEFAULT 0,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    seen_count  INTEGER NOT NULL DEFAULT 1,
    rev         INTEGER NOT NULL DEFAULT 0,
    synced_rev  INTEGER NOT NULL DEFAULT 0,
    pending_since TEXT,
    last_error  TEXT
);
CREATE INDEX machines_pending ON machines(pending_since) WHERE rev > synced_rev;
CREATE INDEX machines_state ON machines(state);
CREATE INDEX machines_name ON machines(name);
CREATE TABLE transitions (
    id         INTEGER PRIMARY KEY,
    mac        TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         TEXT NOT NULL,
    cause      TEXT NOT NULL,
    actor      TEXT NOT NULL
);
CREATE INDEX transitions_mac ON transitions(mac, id);
CREATE TABLE proposals (
    id         INTEGER PRIMARY KEY,
    mac        TEXT NOT NULL UNIQUE,
    forge      TEXT NOT NULL,
    number     INTEGER,
    url        TEXT,
    branch     TEXT NOT NULL,
    path       TEXT NOT NULL,
    name       TEXT NOT NULL,
    title      TEXT NOT NULL,
    summary    TEXT NOT NULL,
    head       TEXT NOT NULL,
    rule       TEXT NOT NULL,
    workflow   TEXT,
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX proposals_state ON proposals(state);
"#,
    r#"
ALTER TABLE machines ADD COLUMN sighting TEXT;
"#,
    r#"
CREATE TABLE once (key TEXT PRIMARY KEY, at TEXT NOT NULL);
"#,
    r#"
ALTER TABLE proposals ADD COLUMN hands_off INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE report_tokens (hash TEXT PRIMARY KEY, mac TEXT NOT NULL, expires_at TEXT NOT NULL);
"#,
    r#"
ALTER TABLE machines ADD COLUMN expected TEXT;
CREATE TABLE import_batches (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    mode       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    rows       TEXT NOT NULL
);
CREATE INDEX machines_last_seen ON machines(last_seen);
CREATE INDEX machines_first_seen ON machines(first_seen);
CREATE INDEX machines_source ON machines(source);
"#,
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
    changes: tokio::sync::watch::Sender<u64>,
}

const MACHINE_COLUMNS: &str = "mac, state, source, facts, name, workflow, suppressed, first_seen, last_seen, seen_count, rev > synced_rev, last_error, sighting, expected";

impl SqliteStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        Self::init(conn)
    }

    pub fn in_memory() -> anyhow::Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> anyhow::Result<Self> {
        // WAL with synchronous=NORMAL survives any crash of the process; after a power
        // loss the newest transactions may be lost, and the reconcile rebuilds from git.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            anyhow::bail!(
                "the database is from a newer Registrar (schema {version}, this build knows {})",
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&rusqlite::Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let before = conn.total_changes();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        if conn.total_changes() != before {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(out)
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn conv<T, E: std::error::Error + Send + Sync + 'static>(r: std::result::Result<T, E>) -> rusqlite::Result<T> {
    r.map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

#[derive(Debug)]
struct Msg(String);
impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Msg {}

fn machine_from_row(r: &Row) -> rusqlite::Result<Machine> {
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
    })
}

fn proposal_from_row(r: &Row) -> rusqlite::Result<Proposal> {
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
    })
}

const PROPOSAL_COLUMNS: &str =
    "mac, forge, number, url, branch, path, name, title, summary, head, rule, workflow, state, created_at, updated_at";
const PROPOSAL_SELECT: &str = "mac, forge, number, url, branch, path, name, title, summary, head, rule, workflow, state, created_at, updated_at, hands_off";

/// The WHERE clause for a machine list and its arguments; values are always bound, never
/// spliced into the SQL.
fn machine_filter(q: &MachineQuery) -> (String, Vec<Option<String>>) {
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

fn batch_from_row(r: &Row) -> rusqlite::Result<Batch> {
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
fn with_fates(tx: &rusqlite::Transaction, mut b: Batch) -> Result<Batch> {
    let mut stmt = tx.prepare_cached("SELECT state FROM machines WHERE mac = ?1")?;
    for row in b.rows.iter_mut().filter(|r| r.error.is_none()) {
        if let Some(mac) = row.mac {
            let state: Option<String> = stmt.query_row([mac.to_string()], |r| r.get(0)).optional()?;
            row.state = state.and_then(|s| s.parse().ok());
        }
    }
    Ok(b)
}

fn get_machine(tx: &rusqlite::Transaction, mac: Mac) -> Result<Option<Machine>> {
    Ok(tx
        .query_row(
            &format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE mac = ?1"),
            [mac.to_string()],
            machine_from_row,
        )
        .optional()?)
}

fn must_get(tx: &rusqlite::Transaction, mac: Mac) -> Result<Machine> {
    get_machine(tx, mac)?.ok_or(StoreError::NotFound(mac))
}

fn log_transition(
    tx: &rusqlite::Transaction,
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

fn move_to(
    tx: &rusqlite::Transaction,
    m: &Machine,
    to: State,
    cause: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    if !m.state.can_become(to) {
        return Err(StoreError::Transition {
            mac: m.mac,
            from: m.state,
            to,
        });
    }
    tx.execute(
        "UPDATE machines SET state = ?2 WHERE mac = ?1",
        params![m.mac.to_string(), to.as_str()],
    )?;
    log_transition(tx, m.mac, Some(m.state), to, cause, actor, now)
}

/// Bumps the revision: the machine has something new for git.
fn queue(tx: &rusqlite::Transaction, mac: Mac, now: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "UPDATE machines SET rev = rev + 1, pending_since = COALESCE(CASE WHEN rev > synced_rev THEN pending_since END, ?2) WHERE mac = ?1",
        params![mac.to_string(), ts(now)],
    )?;
    Ok(())
}

impl Store for SqliteStore {
    fn record_facts(&self, mac: Mac, source: Source, facts: &Facts, now: DateTime<Utc>) -> Result<Recorded> {
        let json = serde_json::to_string(facts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let fp = facts.fingerprint();
        self.with(|tx| {
            let existing = get_machine(tx, mac)?;
            let (new, queued) = match &existing {
                None => {
                    tx.execute(
                        "INSERT INTO machines (mac, state, source, facts, facts_fp, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                        params![mac.to_string(), State::Reported.as_str(), source.as_str(), json, fp, ts(now)],
                    )?;
                    log_transition(tx, mac, None, State::Reported, &format!("facts received ({})", source.as_str()), "registrar", now)?;
                    queue(tx, mac, now)?;
                    (true, true)
                }
                Some(m) => {
                    tx.execute(
                        "UPDATE machines SET last_seen = ?2, seen_count = seen_count + 1 WHERE mac = ?1",
                        params![mac.to_string(), ts(now)],
                    )?;
                    let old_fp: Option<String> = tx.query_row("SELECT facts_fp FROM machines WHERE mac = ?1", [mac.to_string()], |r| r.get(0))?;
                    let changed = old_fp.as_deref() != Some(fp.as_str());
                    let awaited = matches!(m.state, State::Detected | State::Waiting | State::Discovering);
                    if m.suppressed || !m.state.accepts_facts() || !(changed || awaited) {
                        (false, false)
                    } else {
                        tx.execute("UPDATE machines SET facts = ?2, facts_fp = ?3 WHERE mac = ?1", params![mac.to_string(), json, fp])?;
                        if matches!(m.state, State::Detected | State::Waiting | State::Discovering) {
                            move_to(tx, m, State::Reported, &format!("facts received ({})", source.as_str()), "registrar", now)?;
                        }
                        queue(tx, mac, now)?;
                        (false, true)
                    }
                }
            };
            Ok(Recorded { machine: must_get(tx, mac)?, new, queued })
        })
    }

    fn record_detection(
        &self,
        mac: Mac,
        source: Source,
        sighting: Option<&Sighting>,
        now: DateTime<Utc>,
    ) -> Result<Recorded> {
        let json = sighting
            .map(|s| serde_json::to_string(s).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?;
        self.with(|tx| {
            let existing = get_machine(tx, mac)?;
            let mut queued = false;
            match &existing {
                None => {
                    tx.execute(
                        "INSERT INTO machines (mac, state, source, sighting, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![mac.to_string(), State::Detected.as_str(), source.as_str(), json, ts(now)],
                    )?;
                    log_transition(tx, mac, None, State::Detected, &format!("seen ({})", source.as_str()), "registrar", now)?;
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
            Ok(Recorded { machine: must_get(tx, mac)?, new: existing.is_none(), queued })
        })
    }

    fn machine(&self, mac: Mac) -> Result<Option<Machine>> {
        self.with(|tx| get_machine(tx, mac))
    }

    fn machines(&self, q: &MachineQuery) -> Result<Vec<Machine>> {
        self.with(|tx| {
            let (filter, args) = machine_filter(q);
            let order = match q.sort {
                Sort::LastSeen => "last_seen",
                Sort::FirstSeen => "first_seen",
                Sort::Mac => "mac",
                Sort::Name => "name",
                Sort::State => "state",
            };
            let dir = if q.descending { "DESC" } else { "ASC" };
            let limit = if q.limit == 0 { 100 } else { q.limit.min(1000) };
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {MACHINE_COLUMNS} FROM machines WHERE {filter} ORDER BY {order} {dir}, mac {dir} LIMIT {limit} OFFSET {}",
                q.offset
            ))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), machine_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn count_by_state(&self) -> Result<Vec<(State, u64)>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached("SELECT state, COUNT(*) FROM machines GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (s, n) = row?;
                out.push((s.parse::<State>().map_err(StoreError::Corrupt)?, n as u64));
            }
            Ok(out)
        })
    }

    fn transitions(&self, mac: Mac) -> Result<Vec<Transition>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT from_state, to_state, at, cause, actor FROM transitions WHERE mac = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([mac.to_string()], |r| {
                Ok(Transition {
                    from: r
                        .get::<_, Option<String>>(0)?
                        .map(|s| conv(s.parse::<State>().map_err(Msg)))
                        .transpose()?,
                    to: conv(r.get::<_, String>(1)?.parse::<State>().map_err(Msg))?,
                    at: parse_ts(&r.get::<_, String>(2)?)?,
                    cause: r.get(3)?,
                    actor: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn pending(&self, limit: u32) -> Result<Vec<Pending>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT mac, rev FROM machines WHERE rev > synced_rev ORDER BY pending_since, mac LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                Ok(Pending {
                    mac: conv(Mac::parse(&r.get::<_, String>(0)?))?,
                    rev: r.get::<_, i64>(1)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn queue_summary(&self) -> Result<(u64, Option<DateTime<Utc>>)> {
        self.with(|tx| {
            let (n, oldest): (i64, Option<String>) = tx.query_row(
                "SELECT COUNT(*), MIN(pending_since) FROM machines WHERE rev > synced_rev",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok((n as u64, oldest.map(|o| parse_ts(&o)).transpose()?))
        })
    }

    fn mark_synced(
        &self,
        work: Pending,
        proposal: Option<&Proposal>,
        name: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.with(|tx| {
            let m = must_get(tx, work.mac)?;
            if let Some(p) = proposal {
                tx.execute(
                    &format!(
                        "INSERT INTO proposals ({PROPOSAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
                         ON CONFLICT (mac) DO UPDATE SET forge = ?2, number = COALESCE(?3, number), url = COALESCE(?4, url), branch = ?5, path = ?6,
                           name = ?7, title = ?8, summary = ?9, head = ?10, rule = ?11, workflow = ?12, state = ?13, updated_at = ?14"
                    ),
                    params![
                        p.mac.to_string(), p.forge, p.number.map(|n| n as i64), p.url, p.branch, p.path, p.name, p.title, p.summary,
                        p.head, p.rule, p.workflow, p.state.as_str(), ts(now)
                    ],
                )?;
                // The local forge numbers proposals itself: the row id is that number.
                tx.execute("UPDATE proposals SET number = id WHERE mac = ?1 AND number IS NULL", [p.mac.to_string()])?;
                if m.state != State::Proposed && p.state == ProposalState::Open {
                    move_to(tx, &m, State::Proposed, &format!("proposal {} pushed", p.branch), "registrar", now)?;
                }
            }
            tx.execute(
                "UPDATE machines SET synced_rev = MAX(synced_rev, ?2), name = COALESCE(?3, name), last_error = NULL,
                   pending_since = CASE WHEN rev > MAX(synced_rev, ?2) THEN pending_since END WHERE mac = ?1",
                params![work.mac.to_string(), work.rev as i64, name],
            )?;
            Ok(())
        })
    }

    fn set_error(&self, mac: Mac, error: Option<&str>) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "UPDATE machines SET last_error = ?2 WHERE mac = ?1",
                params![mac.to_string(), error],
            )?;
            Ok(())
        })
    }

    fn requeue(&self, mac: Mac, now: DateTime<Utc>) -> Result<Pending> {
        self.with(|tx| {
            queue(tx, mac, now)?;
            let rev: i64 = tx
                .query_row("SELECT rev FROM machines WHERE mac = ?1", [mac.to_string()], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or(StoreError::NotFound(mac))?;
            Ok(Pending { mac, rev: rev as u64 })
        })
    }

    fn transition(&self, mac: Mac, to: State, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
        self.with(|tx| {
            let m = must_get(tx, mac)?;
            move_to(tx, &m, to, cause, actor, now)?;
            must_get(tx, mac)
        })
    }

    fn reject(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
        self.with(|tx| {
            let m = must_get(tx, mac)?;
            if m.state != State::Rejected {
                move_to(tx, &m, State::Rejected, cause, actor, now)?;
            }
            // Nothing more goes to git for it: mark every revision synced.
            tx.execute("UPDATE machines SET suppressed = 1, synced_rev = rev, pending_since = NULL WHERE mac = ?1", [mac.to_string()])?;
            tx.execute(
                "UPDATE proposals SET state = 'rejecting', updated_at = ?2 WHERE mac = ?1 AND state IN ('open', 'approving')",
                params![mac.to_string(), ts(now)],
            )?;
            must_get(tx, mac)
        })
    }

    fn unsuppress(&self, mac: Mac, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
        self.with(|tx| {
            let m = must_get(tx, mac)?;
            tx.execute("UPDATE machines SET suppressed = 0 WHERE mac = ?1", [mac.to_string()])?;
            if m.state == State::Rejected {
                let next = if m.facts.is_some() {
                    State::Reported
                } else {
                    State::Detected
                };
                move_to(tx, &m, next, "suppression lifted", actor, now)?;
                if m.facts.is_some() {
                    queue(tx, mac, now)?;
                }
            }
            must_get(tx, mac)
        })
    }

    fn set_workflow(&self, mac: Mac, workflow: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
        self.with(|tx| {
            let m = must_get(tx, mac)?;
            if m.workflow.as_deref() == Some(workflow) {
                return Ok(m);
            }
            tx.execute(
                "UPDATE machines SET workflow = ?2 WHERE mac = ?1",
                params![mac.to_string(), workflow],
            )?;
            log_transition(
                tx,
                mac,
                Some(m.state),
                m.state,
                &format!("workflow set to {workflow}"),
                actor,
                now,
            )?;
            if m.state.accepts_facts() && m.facts.is_some() && !m.suppressed {
                queue(tx, mac, now)?;
            }
            must_get(tx, mac)
        })
    }

    fn name_owner(&self, name: &str) -> Result<Option<Mac>> {
        self.with(|tx| {
            let mac: Option<String> = tx
                .query_row("SELECT mac FROM machines WHERE name = ?1 LIMIT 1", [name], |r| r.get(0))
                .optional()?;
            mac.map(|m| Mac::parse(&m).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
    }

    fn remember_once(&self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        self.with(|tx| {
            Ok(tx.execute(
                "INSERT OR IGNORE INTO once (key, at) VALUES (?1, ?2)",
                params![key, ts(now)],
            )? == 1)
        })
    }

    fn add_report_token(&self, mac: Mac, hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
        self.with(|tx| {
            tx.execute("DELETE FROM report_tokens WHERE expires_at < ?1", [ts(Utc::now())])?;
            tx.execute(
                "INSERT OR REPLACE INTO report_tokens (hash, mac, expires_at) VALUES (?1, ?2, ?3)",
                params![hash, mac.to_string(), ts(expires_at)],
            )?;
            Ok(())
        })
    }

    fn report_token_mac(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<Mac>> {
        self.with(|tx| {
            let mac: Option<String> = tx
                .query_row(
                    "SELECT mac FROM report_tokens WHERE hash = ?1 AND expires_at >= ?2",
                    params![hash, ts(now)],
                    |r| r.get(0),
                )
                .optional()?;
            mac.map(|m| Mac::parse(&m).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
    }

    fn extend_report_tokens(&self, mac: Mac, until: DateTime<Utc>) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "UPDATE report_tokens SET expires_at = ?2 WHERE mac = ?1 AND expires_at < ?2",
                params![mac.to_string(), ts(until)],
            )?;
            Ok(())
        })
    }

    fn report_token_expiry(&self, mac: Mac) -> Result<Option<DateTime<Utc>>> {
        self.with(|tx| {
            let latest: Option<String> = tx.query_row(
                "SELECT MAX(expires_at) FROM report_tokens WHERE mac = ?1",
                [mac.to_string()],
                |r| r.get(0),
            )?;
            Ok(latest.map(|t| parse_ts(&t)).transpose()?)
        })
    }

    fn was_remembered(&self, key: &str) -> Result<bool> {
        self.with(|tx| {
            Ok(tx
                .query_row("SELECT 1 FROM once WHERE key = ?1", [key], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }

    fn set_hands_off(&self, mac: Mac, now: DateTime<Utc>) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "UPDATE proposals SET hands_off = 1, updated_at = ?2 WHERE mac = ?1",
                params![mac.to_string(), ts(now)],
            )?;
            Ok(())
        })
    }

    fn proposal(&self, mac: Mac) -> Result<Option<Proposal>> {
        self.with(|tx| {
            Ok(tx
                .query_row(
                    &format!("SELECT {PROPOSAL_SELECT} FROM proposals WHERE mac = ?1"),
                    [mac.to_string()],
                    proposal_from_row,
                )
                .optional()?)
        })
    }

    fn proposals(&self, state: Option<ProposalState>) -> Result<Vec<Proposal>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {PROPOSAL_SELECT} FROM proposals WHERE (?1 IS NULL OR state = ?1) ORDER BY id"
            ))?;
            let rows = stmt.query_map([state.map(ProposalState::as_str)], proposal_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn set_proposal_state(&self, mac: Mac, state: ProposalState, now: DateTime<Utc>) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "UPDATE proposals SET state = ?2, updated_at = ?3 WHERE mac = ?1",
                params![mac.to_string(), state.as_str(), ts(now)],
            )?;
            Ok(())
        })
    }

    fn count_machines(&self, q: &MachineQuery) -> Result<u64> {
        self.with(|tx| {
            let (filter, args) = machine_filter(q);
            let n: i64 = tx.query_row(
                &format!("SELECT COUNT(*) FROM machines WHERE {filter}"),
                rusqlite::params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
    }

    fn import(
        &self,
        name: &str,
        mode: ImportMode,
        actor: &str,
        imported: &[(Mac, Expected)],
        skipped: &[BatchRow],
        now: DateTime<Utc>,
    ) -> Result<Batch> {
        self.with(|tx| {
            tx.execute(
                "INSERT INTO import_batches (name, mode, actor, created_at, rows) VALUES (?1, ?2, ?3, ?4, '[]')",
                params![name, mode.as_str(), actor, ts(now)],
            )?;
            let id = tx.last_insert_rowid();
            let mut rows: Vec<BatchRow> = skipped.to_vec();
            for (mac, values) in imported {
                let expected = Expected { batch_id: id, batch: name.to_string(), mode, ..values.clone() };
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
                    Some(m) if m.expected.is_some() || m.suppressed || !matches!(m.state, State::Detected | State::Waiting | State::Discovering | State::Reported) => {
                        let why = match &m.expected {
                            Some(e) => format!("{mac} became expected meanwhile ({})", e.provenance()),
                            None => format!("{mac} became {} meanwhile", m.state),
                        };
                        rows.push(BatchRow { line: expected.row, mac: Some(*mac), error: Some(why), state: None });
                        continue;
                    }
                    Some(m) => {
                        tx.execute(
                            "UPDATE machines SET expected = ?2, workflow = COALESCE(?3, workflow) WHERE mac = ?1",
                            params![mac.to_string(), json, expected.workflow],
                        )?;
                        let mut m = m;
                        if mode == ImportMode::Propose && m.facts.is_none() && matches!(m.state, State::Detected | State::Waiting | State::Discovering) {
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
                rows.push(BatchRow { line: expected.row, mac: Some(*mac), error: None, state: None });
            }
            rows.sort_by_key(|r| r.line);
            let json = serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute("UPDATE import_batches SET rows = ?2 WHERE id = ?1", params![id, json])?;
            let batch = tx.query_row("SELECT id, name, mode, actor, created_at, rows FROM import_batches WHERE id = ?1", [id], batch_from_row)?;
            with_fates(tx, batch)
        })
    }

    fn batches(&self, limit: u32) -> Result<Vec<Batch>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT id, name, mode, actor, created_at, rows FROM import_batches ORDER BY id DESC LIMIT ?1",
            )?;
            let batches = stmt
                .query_map([limit], batch_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            batches.into_iter().map(|b| with_fates(tx, b)).collect()
        })
    }

    fn batch(&self, id: i64) -> Result<Option<Batch>> {
        self.with(|tx| {
            let b = tx
                .query_row(
                    "SELECT id, name, mode, actor, created_at, rows FROM import_batches WHERE id = ?1",
                    [id],
                    batch_from_row,
                )
                .optional()?;
            b.map(|b| with_fates(tx, b)).transpose()
        })
    }

    fn forget(&self, mac: Mac, actor: &str, now: DateTime<Utc>) -> Result<()> {
        self.with(|tx| {
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
                    State::Approved | State::Applied | State::Provisioned | State::Failed
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
            tx.execute("DELETE FROM machines WHERE mac = ?1", [mac.to_string()])?;
            tx.execute("DELETE FROM transitions WHERE mac = ?1", [mac.to_string()])?;
            tx.execute("DELETE FROM proposals WHERE mac = ?1", [mac.to_string()])?;
            tx.execute("DELETE FROM report_tokens WHERE mac = ?1", [mac.to_string()])?;
            Ok(())
        })
    }

    fn note(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<()> {
        self.with(|tx| {
            let m = must_get(tx, mac)?;
            log_transition(tx, mac, Some(m.state), m.state, cause, actor, now)
        })
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
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
}
