//! Addresses handed out from the pools: one row per (pool, address), held by one MAC or
//! released with a quarantine deadline. The choice and the record are one write
//! transaction, and the primary key refuses a second holder, so an address is never
//! handed out twice, whatever runs at once.

use std::net::Ipv4Addr;

use super::tx::{OptionalExtension, Tx, params};
use chrono::{DateTime, Utc};

use super::super::Result;
use super::rows::*;
use crate::domain::Mac;
use crate::ipam::Pool;

/// `mac`'s address in `pool`: the one it holds (or held and whose quarantine it may cut
/// short: it is its own), else `wanted` if given and free, else the next free one that
/// `taken` does not name (addresses already in Hardware elsewhere) and no other machine's
/// import row names. None: exhausted, or `wanted` is not free.
pub(super) fn allocate(
    tx: &Tx,
    mac: Mac,
    pool: &Pool,
    wanted: Option<Ipv4Addr>,
    taken: &dyn Fn(Ipv4Addr) -> bool,
    now: DateTime<Utc>,
) -> Result<Option<Ipv4Addr>> {
    // An address another machine's import row names is kept for that machine.
    let mut imported = tx.prepare_cached(
        "SELECT 1 FROM machines WHERE expected IS NOT NULL AND json_extract(expected, '$.ip') = ?1 AND mac != ?2",
    )?;
    let mac_s = mac.to_string();
    let own: Option<(String, bool)> = tx
        .query_row(
            "SELECT ip, held FROM allocations WHERE pool = ?1 AND mac = ?2 ORDER BY held DESC LIMIT 1",
            params![pool.name, mac_s],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((ip, held)) = own.and_then(|(ip, held)| Some((ip.parse::<Ipv4Addr>().ok()?, held)))
        && wanted.is_none_or(|w| w == ip)
        && pool.may_hand_out(ip)
        // One it only held once goes to the machine an import row has given it since.
        && (held || !imported.exists(params![ip.to_string(), mac_s])?)
    {
        tx.execute(
            "UPDATE allocations SET held = 1, free_after = NULL WHERE pool = ?1 AND ip = ?2",
            params![pool.name, ip.to_string()],
        )?;
        return Ok(Some(ip));
    }
    // Point lookups on the primary key, from just after the newest allocation (next fit):
    // the cost of a choice does not grow with the addresses already held.
    let mut busy =
        tx.prepare_cached("SELECT 1 FROM allocations WHERE pool = ?1 AND ip = ?2 AND (held = 1 OR free_after > ?3)")?;
    let now_ts = ts(now);
    let mut free = |ip: &Ipv4Addr| -> Result<bool> {
        let text = ip.to_string();
        Ok(pool.may_hand_out(*ip)
            && !taken(*ip)
            && !busy.exists(params![pool.name, text, now_ts])?
            && !imported.exists(params![text, mac_s])?)
    };
    let chosen = match wanted {
        Some(ip) => free(&ip)?.then_some(ip),
        None => {
            let newest: Option<String> = tx
                .query_row(
                    "SELECT ip FROM allocations WHERE pool = ?1 ORDER BY at DESC LIMIT 1",
                    params![pool.name],
                    |r| r.get(0),
                )
                .optional()?;
            let mut chosen = None;
            for ip in pool.candidates_after(newest.and_then(|ip| ip.parse().ok())) {
                if free(&ip)? {
                    chosen = Some(ip);
                    break;
                }
            }
            chosen
        }
    };
    let Some(ip) = chosen else { return Ok(None) };
    // A previous holder's row past its quarantine is taken over; the primary key refuses
    // anything else.
    // (Two statements: one OR across both would scan the pool's rows.)
    // Its own old row goes too, unless it still rests: the machine may hold that lease yet.
    tx.execute(
        "DELETE FROM allocations WHERE mac = ?2 AND pool = ?1 AND (held = 1 OR free_after IS NULL OR free_after <= ?3)",
        params![pool.name, mac.to_string(), now_ts],
    )?;
    tx.execute(
        "DELETE FROM allocations WHERE pool = ?1 AND ip = ?2 AND held = 0",
        params![pool.name, ip.to_string()],
    )?;
    tx.execute(
        "INSERT INTO allocations (pool, ip, mac, held, at) VALUES (?1, ?2, ?3, 1, ?4)",
        params![pool.name, ip.to_string(), mac.to_string(), ts(now)],
    )?;
    Ok(Some(ip))
}

/// Releases the addresses `mac` holds (in `pool`, or in every pool); each stays unused
/// until `free_after`.
pub(super) fn release(tx: &Tx, mac: Mac, pool: Option<&str>, free_after: DateTime<Utc>) -> Result<usize> {
    tx.execute(
        "UPDATE allocations SET held = 0, free_after = ?2 WHERE mac = ?1 AND held = 1 AND (?3 IS NULL OR pool = ?3)",
        params![mac.to_string(), ts(free_after), pool],
    )
}

/// How many addresses of `pool` are held or resting in quarantine at `now`.
pub(super) fn used(tx: &Tx, pool: &str, now: DateTime<Utc>) -> Result<u64> {
    tx.query_row(
        "SELECT COUNT(*) FROM allocations WHERE pool = ?1 AND (held = 1 OR free_after > ?2)",
        params![pool, ts(now)],
        |r| r.get(0),
    )
}

/// The addresses `mac` holds: (pool, ip).
pub(super) fn held_by(tx: &Tx, mac: Mac) -> Result<Vec<(String, String)>> {
    let mut q = tx.prepare_cached("SELECT pool, ip FROM allocations WHERE mac = ?1 AND held = 1 ORDER BY pool")?;
    let rows = q
        .query_map(params![mac.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The machine that holds `ip` in `pool`, or held it last (in quarantine).
pub(super) fn holder(tx: &Tx, pool: &str, ip: Ipv4Addr) -> Result<Option<Mac>> {
    let mac: Option<String> = tx
        .query_row(
            "SELECT mac FROM allocations WHERE pool = ?1 AND ip = ?2",
            params![pool, ip.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(mac.and_then(|m| Mac::parse(&m).ok()))
}
