//! Per-machine report tokens (by their SHA-256, with an expiry) and the "once" keys that
//! make webhook deliveries and comments happen once.

use super::tx::{OptionalExtension, Tx, params};
use chrono::{DateTime, Utc};

use super::super::{Result, StoreError};
use super::rows::{parse_ts, ts};
use crate::domain::Mac;

/// True the first time `key` is seen.
pub(super) fn remember_once(tx: &Tx, key: &str, now: DateTime<Utc>) -> Result<bool> {
    Ok(tx.execute(
        "INSERT INTO once (key, at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![key, ts(now)],
    )? == 1)
}

pub(super) fn was_remembered(tx: &Tx, key: &str) -> Result<bool> {
    Ok(tx
        .query_row("SELECT 1 FROM once WHERE key = ?1", [key], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Stores a token's hash for `mac`; expired ones go at the same time.
pub(super) fn add(tx: &Tx, mac: Mac, hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
    tx.execute("DELETE FROM report_tokens WHERE expires_at < ?1", [ts(Utc::now())])?;
    tx.execute(
        "INSERT INTO report_tokens (hash, mac, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (hash) DO UPDATE SET mac = excluded.mac, expires_at = excluded.expires_at",
        params![hash, mac.to_string(), ts(expires_at)],
    )?;
    Ok(())
}

/// The MAC an unexpired token was issued for (a read: an unknown token writes nothing).
pub(super) fn mac_of(tx: &Tx, hash: &str, now: DateTime<Utc>) -> Result<Option<Mac>> {
    let mac: Option<String> = tx
        .query_row(
            "SELECT mac FROM report_tokens WHERE hash = ?1 AND expires_at >= ?2",
            params![hash, ts(now)],
            |r| r.get(0),
        )
        .optional()?;
    mac.map(|m| Mac::parse(&m).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

pub(super) fn extend(tx: &Tx, mac: Mac, until: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "UPDATE report_tokens SET expires_at = ?2 WHERE mac = ?1 AND expires_at < ?2",
        params![mac.to_string(), ts(until)],
    )?;
    Ok(())
}

pub(super) fn expiry(tx: &Tx, mac: Mac) -> Result<Option<DateTime<Utc>>> {
    let latest: Option<String> = tx.query_row(
        "SELECT MAX(expires_at) FROM report_tokens WHERE mac = ?1",
        [mac.to_string()],
        |r| r.get(0),
    )?;
    latest.map(|t| parse_ts(&t)).transpose()
}
