//! Where Registrar keeps its state.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// Unset: the SQLite file `registrar.db` in `state_dir`, the embedded default, for one
/// instance. PostgreSQL lets several replicas share one store (see docs/operations.md,
/// "Two replicas").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://user@host:5432/registrar?sslmode=require`. It may hold a password, so it
    /// is a secret: prefer `postgres_url_file` or REGISTRAR_POSTGRES_URL.
    pub postgres_url: Option<SecretString>,
    pub postgres_url_file: Option<PathBuf>,
}
