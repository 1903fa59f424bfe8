//! PostgreSQL, for several replicas on one store (`store.postgres_url`). The store's SQL
//! (`store/sql/`) runs here as it runs on SQLite, with the same guarantees:
//! - every write is one transaction, and writers never interleave: each takes one
//!   transaction-scoped advisory lock first, as SQLite's IMMEDIATE transactions take the
//!   file's write lock. The read-decide-write steps of the store stay correct across
//!   replicas without retry loops, and a write is short (milliseconds), so one lock costs
//!   little beside the forge's pacing;
//! - every read is one REPEATABLE READ, READ ONLY transaction: a consistent snapshot.
//!
//! - a write that changed something notifies the channel `registrar_changes` (delivered at
//!   commit); every replica listens, so its console and dashboard see the others' writes.
//!
//! The store's interface is synchronous (its callers run it on the blocking pool), and
//! sqlx is asynchronous: each statement is driven to completion on the runtime the store
//! was opened in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Column, PgConnection, Postgres, Row as _, TypeInfo};

use super::Result;
use super::sql::tx::{Conn, DbError, Kind, Row, Tx, Value};
use super::sql::{Bounds, Database};
use crate::store::StoreError;

mod dialect;
mod schema;

/// The advisory lock every write takes (any constant; "registrar" in ASCII, trimmed).
const WRITE_LOCK: i64 = 0x7265_6769_7374_7261;

pub struct PostgresStore {
    pool: sqlx::PgPool,
    runtime: tokio::runtime::Handle,
    bounds: Mutex<Bounds>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// One writer of this process at a time (the advisory lock orders them across replicas).
    writers: Mutex<()>,
    /// Statement text in PostgreSQL's spelling, by the store's text.
    spelled: Mutex<HashMap<String, Arc<str>>>,
    /// The task that hears other replicas' writes.
    hearing: tokio::task::AbortHandle,
    /// The runtime a command-line reader brought (see `open_blocking`); the server's own
    /// otherwise.
    _own_runtime: Option<tokio::runtime::Runtime>,
}

impl PostgresStore {
    /// Connects and brings the schema up to date. Two replicas starting together migrate
    /// once: the migration holds the write lock.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url.parse().context("store.postgres_url is not a PostgreSQL URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL (store.postgres_url)")?;
        migrate(&pool).await?;
        let changes = Arc::new(tokio::sync::watch::Sender::new(0));
        let hearing = tokio::spawn(hear_other_replicas(pool.clone(), changes.clone())).abort_handle();
        Ok(PostgresStore {
            pool,
            runtime: tokio::runtime::Handle::current(),
            bounds: Mutex::new(Bounds::default()),
            changes,
            hearing,
            writers: Mutex::new(()),
            spelled: Mutex::new(HashMap::new()),
            _own_runtime: None,
        })
    }

    /// For commands that run outside any runtime (`registrar check`): the store brings one.
    pub fn open_blocking(url: &str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let mut store = runtime.block_on(Self::connect(url))?;
        store._own_runtime = Some(runtime);
        Ok(store)
    }

    pub fn set_bounds(&self, bounds: Bounds) {
        *self.bounds.lock().unwrap_or_else(|p| p.into_inner()) = bounds;
    }

    /// Drives `f` to completion from synchronous code: a blocking-pool thread (where the
    /// store's callers run it), a worker of the multi-threaded runtime, or a plain thread.
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.runtime.block_on(f))
    }

    fn spell(&self, sql: &str) -> Arc<str> {
        let mut spelled = self.spelled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = spelled.get(sql) {
            return s.clone();
        }
        let s: Arc<str> = dialect::to_postgres(sql).into();
        // Statement texts are few (a handful per method); a bound keeps a bug from growing it.
        if spelled.len() < 4096 {
            spelled.insert(sql.to_string(), s.clone());
        }
        s
    }

    fn transaction<T>(&self, write: bool, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        // Off the async workers as a whole: waiting for the writers' turn blocks a thread.
        tokio::task::block_in_place(|| self.transaction_here(write, f))
    }

    fn transaction_here<T>(&self, write: bool, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        // A transaction dropped on an error returns its connection through the runtime,
        // also when the caller is a plain thread (`registrar check`).
        let _runtime = self.runtime.enter();
        // This process's writers queue here, not on pooled connections blocked on the
        // advisory lock: reads (a page, a token lookup) always find a connection.
        let _writer = write.then(|| self.writers.lock().unwrap_or_else(|p| p.into_inner()));
        let mut tx = self.block_on(self.pool.begin())?;
        let begin = if write {
            format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})")
        } else {
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_string()
        };
        self.block_on(sqlx::query(&begin).execute(&mut *tx))?;
        let (out, changed) = {
            let conn = PgTx {
                store: self,
                conn: RefCell::new(&mut tx),
                changed: Cell::new(false),
            };
            (f(&Tx::new(&conn)), conn.changed.get())
        };
        let out = out?;
        if changed {
            self.block_on(sqlx::query("SELECT pg_notify($1, '')").bind(CHANGES).execute(&mut *tx))?;
        }
        self.block_on(tx.commit())?;
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(out)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.hearing.abort();
    }
}

impl Database for PostgresStore {
    fn write<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        self.transaction(true, f)
    }

    fn read<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        self.transaction(false, f)
    }

    fn bounds(&self) -> Bounds {
        *self.bounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change_counter(&self) -> &tokio::sync::watch::Sender<u64> {
        &self.changes
    }
}

struct PgTx<'s, 'c> {
    store: &'s PostgresStore,
    conn: RefCell<&'c mut PgConnection>,
    changed: Cell<bool>,
}

impl PgTx<'_, '_> {
    fn statement<'q>(
        &self,
        sql: &'q str,
        params: &[Value],
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        let mut q = sqlx::query(sql);
        for v in params {
            q = match v {
                Value::Null(Kind::Int) => q.bind(None::<i64>),
                Value::Null(Kind::Text) => q.bind(None::<String>),
                Value::Int(n) => q.bind(*n),
                Value::Real(x) => q.bind(*x),
                Value::Text(s) => q.bind(s.clone()),
            };
        }
        q
    }
}

impl Conn for PgTx<'_, '_> {
    fn execute(&self, sql: &str, params: &[Value]) -> Result<usize> {
        let sql = self.store.spell(sql);
        let mut conn = self.conn.borrow_mut();
        let done = self.store.block_on(self.statement(&sql, params).execute(&mut **conn))?;
        if done.rows_affected() > 0 {
            self.changed.set(true);
        }
        Ok(done.rows_affected() as usize)
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let spelled = self.store.spell(sql);
        let mut conn = self.conn.borrow_mut();
        let rows = self
            .store
            .block_on(self.statement(&spelled, params).fetch_all(&mut **conn))?;
        // INSERT … RETURNING, DELETE … RETURNING: a query that wrote.
        if !rows.is_empty() && !sql.trim_start().starts_with("SELECT") {
            self.changed.set(true);
        }
        rows.iter().map(row).collect()
    }
}

fn row(r: &PgRow) -> Result<Row> {
    let mut values = Vec::with_capacity(r.len());
    for (i, column) in r.columns().iter().enumerate() {
        let value = match column.type_info().name() {
            "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => r.try_get::<Option<String>, _>(i)?.map(Value::Text),
            "INT8" => r.try_get::<Option<i64>, _>(i)?.map(Value::Int),
            "INT4" => r.try_get::<Option<i32>, _>(i)?.map(|n| Value::Int(n.into())),
            "INT2" => r.try_get::<Option<i16>, _>(i)?.map(|n| Value::Int(n.into())),
            "BOOL" => r.try_get::<Option<bool>, _>(i)?.map(|b| Value::Int(b.into())),
            "FLOAT8" => r.try_get::<Option<f64>, _>(i)?.map(Value::Real),
            other => {
                return Err(StoreError::Db(DbError::Column {
                    column: i,
                    why: format!("PostgreSQL type {other} is not one the store reads"),
                }));
            }
        };
        values.push(value.unwrap_or(Value::Null(Kind::Text)));
    }
    Ok(Row::new(values))
}

/// The channel writes notify on.
const CHANGES: &str = "registrar_changes";

/// Moves the change counter for every write any replica commits, until the store is
/// dropped (which aborts it). A lost connection is opened again; what changed meanwhile
/// shows at the next change or page load.
async fn hear_other_replicas(pool: sqlx::PgPool, changes: Arc<tokio::sync::watch::Sender<u64>>) {
    loop {
        let e = listen(&pool, &changes).await;
        tracing::warn!(error = %e, "not hearing other replicas' writes; trying again");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

async fn listen(pool: &sqlx::PgPool, changes: &tokio::sync::watch::Sender<u64>) -> sqlx::Error {
    let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => return e,
    };
    if let Err(e) = listener.listen(CHANGES).await {
        return e;
    }
    loop {
        if let Err(e) = listener.recv().await {
            return e;
        }
        changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})"))
        .execute(&mut *tx)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS registrar_schema (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM registrar_schema")
        .fetch_one(&mut *tx)
        .await?;
    let version = version.unwrap_or(0) as usize;
    let known = schema::STEPS.len();
    if version > known {
        anyhow::bail!("the database is from a newer Registrar (schema {version}, this build knows {known})");
    }
    for (i, step) in schema::STEPS.iter().enumerate().skip(version) {
        sqlx::raw_sql(step)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("migrating the PostgreSQL schema to {}", i + 1))?;
        sqlx::query("INSERT INTO registrar_schema (version) VALUES ($1)")
            .bind((i + 1) as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
