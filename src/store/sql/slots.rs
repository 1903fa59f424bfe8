//! The slot queue: machines whose first proposal waits for fewer pull requests to be open
//! (`discovery.max_open_proposals`). A row per waiting machine, gone when it is let through.

use super::tx::{Tx, params};
use chrono::{DateTime, Utc};

use super::Result;
use super::rows::{parse_ts, queue, ts};
use crate::domain::Mac;
use crate::store::{Pending, SlotQueue};

/// `work` is done for now: its machine waits in the slot queue, saying why.
pub(super) fn wait(tx: &Tx, work: Pending, why: &str, now: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "INSERT INTO slot_queue (mac, since) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![work.mac.to_string(), ts(now)],
    )?;
    tx.execute(
        "UPDATE machines SET synced_rev = CASE WHEN synced_rev > ?2 THEN synced_rev ELSE ?2 END, last_error = ?3,
           pending_since = CASE WHEN rev > synced_rev AND rev > ?2 THEN pending_since END WHERE mac = ?1",
        params![work.mac.to_string(), work.rev as i64, why],
    )?;
    Ok(())
}

/// Queues again the `n` machines that waited longest; they keep their place until one of
/// them is let through (`leave`), so a machine that arrives meanwhile never jumps ahead.
pub(super) fn release(tx: &Tx, n: u64, now: DateTime<Utc>) -> Result<Vec<Mac>> {
    let macs: Vec<String> = tx
        .prepare_cached("SELECT mac FROM slot_queue ORDER BY since, mac LIMIT ?1")?
        .query_map([n as i64], |r| r.get(0))?
        .collect::<Result<_>>()?;
    let mut released = Vec::new();
    for mac in macs {
        if let Ok(m) = Mac::parse(&mac) {
            queue(tx, m, now)?;
            released.push(m);
        }
    }
    Ok(released)
}

/// How many machines wait ahead of `mac` (all of them, if it does not wait).
pub(super) fn position(tx: &Tx, mac: Mac) -> Result<u64> {
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM slot_queue AS q WHERE NOT EXISTS (SELECT 1 FROM slot_queue AS me WHERE me.mac = ?1)
            OR (q.since, q.mac) < (SELECT since, mac FROM slot_queue WHERE mac = ?1)",
        [mac.to_string()],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// `mac` got its slot.
pub(super) fn leave(tx: &Tx, mac: Mac) -> Result<()> {
    tx.execute("DELETE FROM slot_queue WHERE mac = ?1", [mac.to_string()])?;
    Ok(())
}

/// How many machines wait for a slot, and the `limit` that waited longest.
pub(super) fn list(tx: &Tx, limit: u32) -> Result<SlotQueue> {
    let count: i64 = tx.query_row("SELECT COUNT(*) FROM slot_queue", (), |r| r.get(0))?;
    let rows: Vec<(String, String)> = tx
        .prepare_cached("SELECT mac, since FROM slot_queue ORDER BY since, mac LIMIT ?1")?
        .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_>>()?;
    let waiting = rows
        .into_iter()
        .filter_map(|(mac, since)| Some((Mac::parse(&mac).ok()?, parse_ts(&since).ok()?)))
        .collect();
    Ok(SlotQueue {
        count: count as u64,
        oldest: waiting,
    })
}
