//! Opening the store: the server's (migrated, a writer beside a reader), a read-only one
//! for commands that look at a running server's store, and an in-memory one for tests.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;

use super::{Bounds, SqliteStore, schema};

impl SqliteStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        let mut store = Self::init(conn)?;
        // Opened after the migrations, so it never sees a half-made schema.
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| anyhow::anyhow!("opening {} to read: {e}", path.display()))?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        store.reader = Some(Mutex::new(reader));
        Ok(store)
    }

    /// The store as another process (a running server) keeps it, only to read: no
    /// migration, no write; a schema this build does not know exactly is refused.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Self> {
        let open = || {
            let conn = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| anyhow::anyhow!("opening {} to read: {e}", path.display()))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            Ok::<_, anyhow::Error>(conn)
        };
        let conn = open()?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != schema::STEPS.len() {
            anyhow::bail!(
                "{} is at schema {version} and this build knows {}: use the Registrar that runs on it",
                path.display(),
                schema::STEPS.len()
            );
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            reader: Some(Mutex::new(open()?)),
            bounds: Mutex::new(Bounds::default()),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn in_memory() -> anyhow::Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> anyhow::Result<Self> {
        // WAL with synchronous=NORMAL survives any crash of the process; after a power
        // loss the newest transactions may be lost, and the reconcile rebuilds from git.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = schema::STEPS.len();
        if version > known {
            anyhow::bail!("the database is from a newer Registrar (schema {version}, this build knows {known})");
        }
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|e| anyhow::anyhow!("migrating the database from schema {version}: {e}"))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            reader: None,
            bounds: Mutex::new(Bounds::default()),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }
}
