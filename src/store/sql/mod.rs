//! The store's logic in SQL that SQLite and PostgreSQL both run (`tx.rs` is the interface
//! it is written against). A backend only opens transactions: [`Database`]; every store
//! method is one transaction, a write or a read in one snapshot.

use chrono::{DateTime, Utc};

use super::{Batch, BatchRow, MachineQuery, Pending, Recorded, Result, Sort, Store, StoreError};
use crate::domain::{
    Expected, Facts, ImportMode, Mac, Machine, Proposal, ProposalState, Sighting, Source, State, Transition,
};

mod allocations;
mod groups;
mod imports;
mod lifecycle;
mod names;
pub(crate) mod rows;
mod slots;

mod timeline;
mod tokens;
pub(crate) mod tx;

use rows::*;
use tx::{OptionalExtension, Tx, params};

/// A database the store's SQL runs on.
pub trait Database: Send + Sync + 'static {
    /// `f` in one write transaction; writers never interleave (see each backend for how).
    fn write<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T>;
    /// `f` in one consistent snapshot.
    fn read<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T>;
    fn bounds(&self) -> Bounds;
    /// Moves whenever a write changed something: the console's live updates.
    fn change_counter(&self) -> &tokio::sync::watch::Sender<u64>;
}

/// How many machines that never reported the store keeps, and how fast new ones come in:
/// a flood of spoofed MACs costs bounded rows. 0: no bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    pub max_undiscovered: u64,
    pub max_new_per_minute: u64,
}

pub(crate) const MACHINE_COLUMNS: &str = "mac, state, source, facts, name, workflow, suppressed, first_seen, last_seen, seen_count, rev > synced_rev, last_error, sighting, expected, settled, wanted";

impl<D: Database> Store for D {
    fn record_facts(&self, mac: Mac, source: Source, facts: &Facts, now: DateTime<Utc>) -> Result<Recorded> {
        let json = serde_json::to_string(facts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let fp = facts.fingerprint();
        self.write(|tx| {
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
                    // New facts of a machine in the cluster may be drift: the sync compares
                    // them with what its manifests were rendered from. (Just approved, it
                    // still waits in the discovery OS: a late report there is a retry.)
                    let drift = changed
                        && matches!(m.state, State::Applied | State::Provisioned | State::Inventorying | State::Failed);
                    // The report a re-inventory asked for: the machine goes back to its own
                    // disk, whether or not anything changed.
                    if m.state == State::Inventorying {
                        move_to(tx, m, State::Provisioned, &format!("re-inventory reported ({})", source.as_str()), "registrar", now)?;
                    }
                    if !drift && (m.suppressed || !m.state.accepts_facts() || !(changed || awaited)) {
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
            Ok(Recorded { machine: must_get(tx, mac)?, new, queued, evicted: 0 })
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
        let bounds = self.bounds();
        self.write(|tx| record_detection(tx, bounds, mac, source, (sighting, json.as_deref()), now))
    }

    fn machine(&self, mac: Mac) -> Result<Option<Machine>> {
        self.read(|tx| get_machine(tx, mac))
    }

    fn machines(&self, q: &MachineQuery) -> Result<Vec<Machine>> {
        self.read(|tx| {
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
            let rows = stmt.query_map(args.clone(), machine_from_row)?;
            rows.collect::<Result<Vec<_>>>()
        })
    }

    fn count_by_state(&self) -> Result<Vec<(State, u64)>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached("SELECT state, COUNT(*) FROM machines GROUP BY state")?;
            let rows = stmt.query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (s, n) = row?;
                out.push((s.parse::<State>().map_err(StoreError::Corrupt)?, n as u64));
            }
            Ok(out)
        })
    }

    fn transitions(&self, mac: Mac) -> Result<Vec<Transition>> {
        self.read(|tx| timeline::of(tx, mac))
    }

    fn transitions_after(&self, after: i64, limit: u32) -> Result<Vec<super::TimelineEntry>> {
        self.read(|tx| timeline::after(tx, after, limit))
    }

    fn audit(&self, actor: Option<&str>, before: Option<i64>, limit: u32) -> Result<Vec<super::AuditEntry>> {
        self.read(|tx| timeline::audit(tx, actor, before, limit))
    }

    fn last_transition_id(&self) -> Result<i64> {
        self.read(timeline::last_id)
    }

    fn cursor(&self, name: &str) -> Result<Option<i64>> {
        self.read(|tx| timeline::cursor(tx, name))
    }

    fn set_cursor(&self, name: &str, value: i64) -> Result<()> {
        self.write(|tx| timeline::set_cursor(tx, name, value))
    }

    fn pending(&self, limit: u32) -> Result<Vec<Pending>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT mac, rev FROM machines WHERE rev > synced_rev ORDER BY pending_since, mac LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                Ok(Pending {
                    mac: conv(Mac::parse(&r.get::<_, String>(0)?))?,
                    rev: r.get::<_, i64>(1)? as u64,
                })
            })?;
            rows.collect::<Result<Vec<_>>>()
        })
    }

    fn queue_summary(&self) -> Result<(u64, Option<DateTime<Utc>>)> {
        self.read(|tx| {
            let (n, oldest): (i64, Option<String>) = tx.query_row(
                "SELECT COUNT(*), MIN(pending_since) FROM machines WHERE rev > synced_rev",
                (),
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
        let basis = proposal
            .and_then(|p| p.basis.as_ref())
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(|tx| {
            let m = must_get(tx, work.mac)?;
            if let Some(p) = proposal {
                tx.execute(
                    &format!(
                        "INSERT INTO proposals ({PROPOSAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16, ?17)
                         ON CONFLICT (mac) DO UPDATE SET forge = ?2, number = COALESCE(?3, proposals.number), url = COALESCE(?4, proposals.url),
                           hands_off = CASE WHEN proposals.branch = ?5 THEN proposals.hands_off ELSE 0 END,
                           created_at = CASE WHEN proposals.branch = ?5 THEN proposals.created_at ELSE ?14 END, branch = ?5, path = ?6,
                           name = ?7, title = ?8, summary = ?9, head = ?10, rule = ?11, workflow = ?12, state = ?13, updated_at = ?14,
                           kind = ?15, basis = ?16, replaces = ?17"
                    ),
                    params![
                        p.mac.to_string(), p.forge, p.number.map(|n| n as i64), p.url, p.branch, p.path, p.name, p.title, p.summary,
                        p.head, p.rule, p.workflow, p.state.as_str(), ts(now), p.kind.as_str(), basis,
                        p.replaces.map(|m| m.to_string())
                    ],
                )?;
                // The local forge numbers proposals itself: the row id is that number.
                tx.execute("UPDATE proposals SET number = id WHERE mac = ?1 AND number IS NULL", [p.mac.to_string()])?;
                // A change of a machine git holds leaves its state alone.
                if !p.kind.is_change() && m.state != State::Proposed && p.state == ProposalState::Open {
                    move_to(tx, &m, State::Proposed, &format!("proposal {} pushed", p.branch), "registrar", now)?;
                }
            }
            tx.execute(
                "UPDATE machines SET synced_rev = CASE WHEN synced_rev > ?2 THEN synced_rev ELSE ?2 END, name = COALESCE(?3, name), last_error = NULL,
                   pending_since = CASE WHEN rev > synced_rev AND rev > ?2 THEN pending_since END WHERE mac = ?1",
                params![work.mac.to_string(), work.rev as i64, name],
            )?;
            Ok(())
        })
    }

    fn set_error(&self, mac: Mac, error: Option<&str>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE machines SET last_error = ?2 WHERE mac = ?1",
                params![mac.to_string(), error],
            )?;
            Ok(())
        })
    }

    fn requeue(&self, mac: Mac, now: DateTime<Utc>) -> Result<Pending> {
        self.write(|tx| {
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
        self.write(|tx| {
            let m = must_get(tx, mac)?;
            move_to(tx, &m, to, cause, actor, now)?;
            must_get(tx, mac)
        })
    }

    fn record_merge(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
        self.write(|tx| lifecycle::record_merge(tx, mac, cause, actor, now))
    }

    fn record_change_closed(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
        self.write(|tx| lifecycle::record_change_closed(tx, mac, cause, actor, now))
    }

    fn want(&self, mac: Mac, kind: crate::domain::ProposalKind, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
        self.write(|tx| lifecycle::want(tx, mac, kind, actor, now))
    }

    fn settle(&self, mac: Mac, basis: &crate::domain::Basis) -> Result<()> {
        self.write(|tx| lifecycle::settle(tx, mac, basis))
    }

    fn reject(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
        self.write(|tx| {
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
            // A group's member leaves it: its pull request is rewritten without the machine.
            groups::leave(tx, mac)?;
            must_get(tx, mac)
        })
    }

    fn unsuppress(&self, mac: Mac, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
        self.write(|tx| {
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
        self.write(|tx| {
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
        self.read(|tx| {
            let mac: Option<String> = tx
                .query_row("SELECT mac FROM machines WHERE name = ?1 LIMIT 1", [name], |r| r.get(0))
                .optional()?;
            mac.map(|m| Mac::parse(&m).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
    }

    fn remember_once(&self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        self.write(|tx| tokens::remember_once(tx, key, now))
    }

    fn add_report_token(&self, mac: Mac, hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
        self.write(|tx| tokens::add(tx, mac, hash, expires_at))
    }

    fn report_token_mac(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<Mac>> {
        self.read(|tx| tokens::mac_of(tx, hash, now))
    }

    fn extend_report_tokens(&self, mac: Mac, until: DateTime<Utc>) -> Result<()> {
        self.write(|tx| tokens::extend(tx, mac, until))
    }

    fn report_token_expiry(&self, mac: Mac) -> Result<Option<DateTime<Utc>>> {
        self.read(|tx| tokens::expiry(tx, mac))
    }

    fn was_remembered(&self, key: &str) -> Result<bool> {
        self.read(|tx| tokens::was_remembered(tx, key))
    }

    fn set_hands_off(&self, mac: Mac, now: DateTime<Utc>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE proposals SET hands_off = 1, updated_at = ?2 WHERE mac = ?1",
                params![mac.to_string(), ts(now)],
            )?;
            Ok(())
        })
    }

    fn proposal(&self, mac: Mac) -> Result<Option<Proposal>> {
        self.read(|tx| {
            tx.query_row(
                &format!("SELECT {PROPOSAL_SELECT} FROM proposals WHERE mac = ?1"),
                [mac.to_string()],
                proposal_from_row,
            )
            .optional()
        })
    }

    fn proposals(&self, state: Option<ProposalState>) -> Result<Vec<Proposal>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {PROPOSAL_SELECT} FROM proposals WHERE (?1 IS NULL OR state = ?1) ORDER BY id"
            ))?;
            let rows = stmt.query_map([state.map(ProposalState::as_str)], proposal_from_row)?;
            rows.collect::<Result<Vec<_>>>()
        })
    }

    fn set_proposal_state(&self, mac: Mac, state: ProposalState, now: DateTime<Utc>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE proposals SET state = ?2, updated_at = ?3 WHERE mac = ?1",
                params![mac.to_string(), state.as_str(), ts(now)],
            )?;
            Ok(())
        })
    }

    fn count_machines(&self, q: &MachineQuery) -> Result<u64> {
        self.read(|tx| {
            let (filter, args) = machine_filter(q);
            let n: i64 = tx.query_row(
                &format!("SELECT COUNT(*) FROM machines WHERE {filter}"),
                args.clone(),
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
    }

    fn allocate(
        &self,
        mac: Mac,
        pool: &crate::ipam::Pool,
        wanted: Option<std::net::Ipv4Addr>,
        taken: &dyn Fn(std::net::Ipv4Addr) -> bool,
        now: DateTime<Utc>,
    ) -> Result<Option<std::net::Ipv4Addr>> {
        self.write(|tx| allocations::allocate(tx, mac, pool, wanted, taken, now))
    }

    fn release_addresses(&self, mac: Mac, pool: Option<&str>, free_after: DateTime<Utc>) -> Result<usize> {
        self.write(|tx| allocations::release(tx, mac, pool, free_after))
    }

    fn addresses_used(&self, pool: &str, now: DateTime<Utc>) -> Result<u64> {
        self.read(|tx| allocations::used(tx, pool, now))
    }

    fn addresses(&self, mac: Mac) -> Result<Vec<(String, String)>> {
        self.read(|tx| allocations::held_by(tx, mac))
    }

    fn address_holder(&self, pool: &str, ip: std::net::Ipv4Addr) -> Result<Option<Mac>> {
        self.read(|tx| allocations::holder(tx, pool, ip))
    }

    fn open_proposals(&self) -> Result<u64> {
        self.read(groups::open_pull_requests)
    }

    fn wait_for_slot(&self, work: Pending, why: &str, now: DateTime<Utc>) -> Result<()> {
        self.write(|tx| slots::wait(tx, work, why, now))
    }

    fn release_slots(&self, n: u64, now: DateTime<Utc>) -> Result<Vec<Mac>> {
        self.write(|tx| slots::release(tx, n, now))
    }

    fn slot_position(&self, mac: Mac) -> Result<u64> {
        self.read(|tx| slots::position(tx, mac))
    }

    fn leave_slot_queue(&self, mac: Mac) -> Result<()> {
        self.write(|tx| slots::leave(tx, mac))
    }

    fn slot_queue(&self, limit: u32) -> Result<super::SlotQueue> {
        self.read(|tx| slots::list(tx, limit))
    }

    fn sharing_identity(&self, mac: Mac, facts: &Facts) -> Result<Vec<(Mac, String)>> {
        self.read(|tx| names::sharing_identity(tx, mac, facts))
    }

    fn name_number(&self, mac: Mac) -> Result<Option<u64>> {
        self.read(|tx| names::number_of(tx, mac))
    }

    fn next_name_number(&self) -> Result<u64> {
        self.read(names::next_number)
    }

    fn claim_name_number(&self, mac: Mac, seq: u64) -> Result<Option<u64>> {
        self.write(|tx| names::claim_number(tx, mac, seq))
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
        self.write(|tx| imports::import(tx, name, mode, actor, imported, skipped, now))
    }

    fn batches(&self, limit: u32) -> Result<Vec<Batch>> {
        self.read(|tx| imports::batches(tx, limit))
    }

    fn batch(&self, id: i64) -> Result<Option<Batch>> {
        self.read(|tx| imports::batch(tx, id))
    }

    fn forget(&self, mac: Mac, actor: &str, now: DateTime<Utc>) -> Result<()> {
        self.write(|tx| rows::forget(tx, mac, actor, now))
    }

    fn note(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<()> {
        self.write(|tx| {
            let m = must_get(tx, mac)?;
            log_transition(tx, mac, Some(m.state), m.state, cause, actor, now)
        })
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.change_counter().subscribe()
    }
}
