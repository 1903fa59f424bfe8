//! Who a machine is: other machines claiming its serial or system UUID, and machine
//! numbers for name patterns that count (`node-{{ seq | pad(4) }}`): each machine is
//! given one number, once, and keeps it across restarts, re-renders and a forget. The
//! unique column refuses a number to a second machine, whatever runs at once.

use super::tx::{OptionalExtension, Tx, params};

use super::super::Result;
use crate::domain::Mac;

pub(super) fn number_of(tx: &Tx, mac: Mac) -> Result<Option<u64>> {
    Ok(tx
        .query_row("SELECT seq FROM name_numbers WHERE mac = ?1", [mac.to_string()], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .map(|n| n as u64))
}

/// The number after the highest given so far (1 for the first machine).
pub(super) fn next_number(tx: &Tx) -> Result<u64> {
    let max: Option<i64> = tx.query_row("SELECT MAX(seq) FROM name_numbers", (), |r| r.get(0))?;
    Ok(max.unwrap_or(0) as u64 + 1)
}

/// Gives `mac` the number `seq`, unless it has one already or `seq` is another machine's:
/// the number `mac` holds afterwards (None: `seq` was another machine's).
pub(super) fn claim_number(tx: &Tx, mac: Mac, seq: u64) -> Result<Option<u64>> {
    tx.execute(
        "INSERT INTO name_numbers (mac, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![mac.to_string(), seq as i64],
    )?;
    number_of(tx, mac)
}

/// Other machines whose facts name `serial` or `uuid` (indexed: migration 10), at most five.
pub(super) fn sharing_identity(tx: &Tx, mac: Mac, facts: &crate::domain::Facts) -> Result<Vec<(Mac, String)>> {
    let mut out = Vec::new();
    let identity = [
        ("serial", "$.serial", facts.serial.as_deref()),
        ("system UUID", "$.uuid", facts.uuid.as_deref()),
        ("asset tag", "$.asset_tag", facts.asset_tag.as_deref()),
    ];
    for (what, path, value) in identity {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        let mut q = tx.prepare_cached(&format!(
            "SELECT mac FROM machines WHERE facts IS NOT NULL AND json_extract(facts, '{path}') = ?1 AND mac != ?2 LIMIT 5"
        ))?;
        let macs = q
            .query_map(params![value, mac.to_string()], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        out.extend(
            macs.into_iter()
                .filter_map(|m| Mac::parse(&m).ok())
                .map(|m| (m, format!("{what} {value}"))),
        );
    }
    Ok(out)
}
