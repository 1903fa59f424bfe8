//! A machine's life after its first merge: merges and closes of any kind of proposal, in
//! one transaction each, and the changes people ask for.

use super::tx::{Tx, params};
use chrono::{DateTime, Utc};

use super::super::{Result, StoreError};
use super::rows::{log_transition, move_to, must_get, queue, ts};
use crate::domain::{Basis, Mac, Machine, ProposalKind, ProposalState, State};

/// A proposal's kind, the basis it was rendered from (JSON), and the machine it replaces.
type KindBasis = (ProposalKind, Option<String>, Option<Mac>);

/// The machine's proposal: its kind, the basis it was rendered from, and the machine it
/// replaces, if any.
fn proposal_kind_and_basis(tx: &Tx, mac: Mac) -> Result<Option<KindBasis>> {
    use super::tx::OptionalExtension;
    let row: Option<(String, Option<String>, Option<String>)> = tx
        .query_row(
            "SELECT kind, basis, replaces FROM proposals WHERE mac = ?1",
            [mac.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(kind, basis, replaces)| {
        let kind = kind.parse::<ProposalKind>().map_err(StoreError::Corrupt)?;
        let replaces = replaces
            .map(|m| Mac::parse(&m).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?;
        Ok((kind, basis, replaces))
    })
    .transpose()
}

/// Ends the machine's proposal in `state` (merged, closed): the machine as it was, and
/// what its proposal was.
fn end_proposal(tx: &Tx, mac: Mac, state: ProposalState, now: DateTime<Utc>) -> Result<(Machine, KindBasis)> {
    let m = must_get(tx, mac)?;
    let proposal = proposal_kind_and_basis(tx, mac)?.ok_or(StoreError::NotFound(mac))?;
    tx.execute(
        "UPDATE proposals SET state = ?2, updated_at = ?3 WHERE mac = ?1",
        params![mac.to_string(), state.as_str(), ts(now)],
    )?;
    Ok((m, proposal))
}

/// A new board took over `old`'s file: `old` is decommissioned (its history kept) and its
/// addresses are the newcomer's now, so the machine keeps its address.
fn hand_over(tx: &Tx, old: Mac, new: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<()> {
    let Some(m) = super::rows::get_machine(tx, old)? else {
        return Ok(());
    };
    if m.state.is_settled() {
        move_to(
            tx,
            &m,
            State::Decommissioning,
            &format!("replaced by {new}: {cause}"),
            actor,
            now,
        )?;
        let m = must_get(tx, old)?;
        move_to(
            tx,
            &m,
            State::Decommissioned,
            &format!("its new board {new} took over its Hardware"),
            actor,
            now,
        )?;
    }
    tx.execute("UPDATE machines SET wanted = NULL WHERE mac = ?1", [old.to_string()])?;
    // A change of the old board still open (netboot off, say) would rewrite the file the
    // newcomer holds now: it is to be closed, recorded here so that a crash cannot lose it.
    tx.execute(
        "UPDATE proposals SET state = 'rejecting', updated_at = ?2
           WHERE mac = ?1 AND kind != 'register' AND kind != 'replace' AND state IN ('open', 'approving')",
        params![old.to_string(), ts(now)],
    )?;
    // The newcomer's own addresses in those pools (none, normally) make room first.
    tx.execute(
        "UPDATE allocations SET held = 0, free_after = ?3 WHERE mac = ?2 AND held = 1
           AND pool IN (SELECT pool FROM allocations WHERE mac = ?1 AND held = 1)",
        params![old.to_string(), new.to_string(), ts(now)],
    )?;
    tx.execute(
        "UPDATE allocations SET mac = ?2, at = ?3 WHERE mac = ?1 AND held = 1",
        params![old.to_string(), new.to_string(), ts(now)],
    )?;
    Ok(())
}

/// The machine's proposal is merged: git holds what it was rendered from. A registration
/// approves the machine, an update changes no state, a decommission starts it.
pub(super) fn record_merge(tx: &Tx, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
    let (m, (kind, basis, replaces)) = end_proposal(tx, mac, ProposalState::Merged, now)?;
    // Rows from before proposals kept their basis: the machine's facts then.
    let basis = match basis {
        Some(b) => Some(b),
        None => m
            .facts
            .as_ref()
            .map(|facts| serde_json::to_string(&Basis::registered(facts.clone())))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
    };
    tx.execute(
        "UPDATE machines SET settled = COALESCE(?2, settled) WHERE mac = ?1",
        params![mac.to_string(), basis],
    )?;
    match kind {
        ProposalKind::Register | ProposalKind::Replace if !m.state.is_settled() => {
            move_to(tx, &m, State::Approved, cause, actor, now)?;
            if let Some(old) = replaces.filter(|_| kind == ProposalKind::Replace) {
                hand_over(tx, old, mac, cause, actor, now)?;
            }
        }
        ProposalKind::Register | ProposalKind::Replace => {}
        ProposalKind::Update => {
            log_transition(tx, mac, Some(m.state), m.state, &format!("update: {cause}"), actor, now)?;
            // A decommission asked for while this update was open is proposed now.
            if m.wanted.is_some() {
                queue(tx, mac, now)?;
            }
        }
        ProposalKind::Reprovision => {
            // A decommission asked for meanwhile stays wanted, and is proposed next.
            tx.execute(
                "UPDATE machines SET wanted = NULL WHERE mac = ?1 AND wanted = 'reprovision'",
                [mac.to_string()],
            )?;
            if m.wanted.is_some_and(|w| w != ProposalKind::Reprovision) {
                queue(tx, mac, now)?;
            }
            // Its Hardware is in the cluster already: it follows its new Workflow from here.
            if m.state != State::Applied {
                move_to(tx, &m, State::Applied, &format!("re-provision: {cause}"), actor, now)?;
            }
        }
        ProposalKind::Decommission => {
            tx.execute("UPDATE machines SET wanted = NULL WHERE mac = ?1", [mac.to_string()])?;
            if m.state != State::Decommissioning {
                move_to(
                    tx,
                    &m,
                    State::Decommissioning,
                    &format!("decommission: {cause}"),
                    actor,
                    now,
                )?;
            }
        }
    }
    must_get(tx, mac)
}

/// A change of a machine git holds was closed unmerged: only the change is refused; the
/// machine keeps its state, and a decommission it asked for is no longer wanted.
pub(super) fn record_change_closed(tx: &Tx, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
    let (m, (kind, _, _)) = end_proposal(tx, mac, ProposalState::Closed, now)?;
    if kind == ProposalKind::Decommission || m.wanted == Some(kind) {
        tx.execute("UPDATE machines SET wanted = NULL WHERE mac = ?1", [mac.to_string()])?;
    } else if m.wanted.is_some() {
        // A decommission asked for while this update was open is proposed now.
        queue(tx, mac, now)?;
    }
    log_transition(
        tx,
        mac,
        Some(m.state),
        m.state,
        &format!("{} closed: {cause}", kind.as_str()),
        actor,
        now,
    )?;
    must_get(tx, mac)
}

/// A person asks for a change of a machine git holds (a decommission, a re-provisioning):
/// recorded and queued, so the sync proposes it even after a crash.
pub(super) fn want(tx: &Tx, mac: Mac, kind: ProposalKind, actor: &str, now: DateTime<Utc>) -> Result<Machine> {
    let m = must_get(tx, mac)?;
    let (allowed, to) = match kind {
        ProposalKind::Reprovision => (matches!(m.state, State::Provisioned | State::Failed), State::Applied),
        _ => (m.state.is_settled(), State::Decommissioning),
    };
    if !allowed {
        return Err(StoreError::Transition { mac, from: m.state, to });
    }
    if m.wanted != Some(kind) {
        tx.execute(
            "UPDATE machines SET wanted = ?2 WHERE mac = ?1",
            params![mac.to_string(), kind.as_str()],
        )?;
        log_transition(
            tx,
            mac,
            Some(m.state),
            m.state,
            &format!("{} asked for", kind.as_str()),
            actor,
            now,
        )?;
        queue(tx, mac, now)?;
    }
    must_get(tx, mac)
}

/// What git holds for the machine was rendered from `basis` (facts that change nothing in
/// its manifests are taken as they come, so later differences are told from them).
pub(super) fn settle(tx: &Tx, mac: Mac, basis: &Basis) -> Result<()> {
    let json = serde_json::to_string(basis).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute(
        "UPDATE machines SET settled = ?2 WHERE mac = ?1",
        params![mac.to_string(), json],
    )?;
    Ok(())
}
