//! The embedded store: one SQLite file in WAL mode. Writes go through one connection, each
//! method one IMMEDIATE transaction; reads go through a second, read-only connection, each
//! in its own snapshot, so a page load or a token lookup never waits behind the writer (nor
//! takes the write lock). Callers in async code run them on the blocking pool.

use std::sync::Mutex;

use rusqlite::Connection;

use super::Result;
use super::sql::tx::{Conn, Kind, Row, Tx, Value};
use super::sql::{Bounds, Database};

mod open;
mod schema;
#[cfg(test)]
mod tests;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Reads, beside the writer (WAL lets them run at once). None for an in-memory store,
    /// whose data only its one connection sees.
    reader: Option<Mutex<Connection>>,
    bounds: Mutex<Bounds>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl SqliteStore {
    pub fn set_bounds(&self, bounds: Bounds) {
        *self.bounds.lock().unwrap_or_else(|p| p.into_inner()) = bounds;
    }
}

impl Database for SqliteStore {
    /// A read in one consistent snapshot, on the read connection where there is one.
    fn read<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        let Some(reader) = &self.reader else {
            return self.write(f);
        };
        let mut conn = reader.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        let out = f(&Tx::new(&SqliteTx(&tx)))?;
        tx.commit()?;
        Ok(out)
    }

    fn write<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let before = conn.total_changes();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&Tx::new(&SqliteTx(&tx)))?;
        tx.commit()?;
        if conn.total_changes() != before {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(out)
    }

    fn bounds(&self) -> Bounds {
        *self.bounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change_counter(&self) -> &tokio::sync::watch::Sender<u64> {
        &self.changes
    }
}

struct SqliteTx<'a>(&'a rusqlite::Transaction<'a>);

impl Conn for SqliteTx<'_> {
    fn execute(&self, sql: &str, params: &[Value]) -> Result<usize> {
        let mut stmt = self.0.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))?)
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(to_sqlite)))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null(Kind::Text),
                    rusqlite::types::ValueRef::Integer(n) => Value::Int(n),
                    rusqlite::types::ValueRef::Real(x) => Value::Real(x),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(Row::new(values));
        }
        Ok(out)
    }
}

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null(_) => rusqlite::types::Value::Null,
        Value::Int(n) => rusqlite::types::Value::Integer(*n),
        Value::Real(x) => rusqlite::types::Value::Real(*x),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}
