//! The one interface the store's SQL is written against, so that the same statements run
//! on SQLite (the embedded default) and on PostgreSQL (for replicas). Its shape follows
//! rusqlite's (`execute`, `query_row`, `prepare_cached`, `optional`), which the store was
//! first written with. Each backend turns [`Value`]s into its own parameters and its rows
//! into [`Row`]s; the PostgreSQL one also rewrites the few spellings that differ (see
//! `store/postgres/dialect.rs`).

use super::super::{Result, StoreError};

/// A parameter or a column value. A NULL keeps its type: PostgreSQL checks parameter types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null(Kind),
    Int(i64),
    Real(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
}

/// Why a statement failed below the store's own logic.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Postgres(#[from] sqlx::Error),
    #[error("query returned no rows")]
    NoRows,
    #[error("column {column}: {why}")]
    Column { column: usize, why: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(DbError::Sqlite(e))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(DbError::Postgres(e))
    }
}

/// A backend's open transaction.
pub trait Conn {
    /// Rows changed.
    fn execute(&self, sql: &str, params: &[Value]) -> Result<usize>;
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
}

pub struct Tx<'a> {
    conn: &'a dyn Conn,
}

impl<'a> Tx<'a> {
    pub fn new(conn: &'a dyn Conn) -> Self {
        Tx { conn }
    }

    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        self.conn.execute(sql, &params.values())
    }

    /// The first row, mapped; [`DbError::NoRows`] when there is none (see [`OptionalExtension`]).
    pub fn query_row<T>(&self, sql: &str, params: impl Params, f: impl FnOnce(&Row) -> Result<T>) -> Result<T> {
        let rows = self.conn.query(sql, &params.values())?;
        match rows.first() {
            Some(row) => f(row),
            None => Err(StoreError::Db(DbError::NoRows)),
        }
    }

    /// A statement to run once or more (the backend caches prepared statements by their text).
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_, 'a>> {
        Ok(Statement {
            tx: self,
            sql: sql.to_string(),
        })
    }
}

pub struct Statement<'t, 'a> {
    tx: &'t Tx<'a>,
    sql: String,
}

impl Statement<'_, '_> {
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.tx.conn.query(&self.sql, &params.values())?;
        Ok(rows.iter().map(f).collect::<Vec<_>>().into_iter())
    }

    pub fn query_row<T>(&mut self, params: impl Params, f: impl FnOnce(&Row) -> Result<T>) -> Result<T> {
        self.tx.query_row(&self.sql, params, f)
    }

    pub fn exists(&mut self, params: impl Params) -> Result<bool> {
        Ok(!self.tx.conn.query(&self.sql, &params.values())?.is_empty())
    }
}

/// A result row, read by column index.
#[derive(Debug, Clone)]
pub struct Row {
    pub(crate) values: Vec<Value>,
}

impl Row {
    pub fn new(values: Vec<Value>) -> Self {
        Row { values }
    }

    pub fn get<I: ColumnIndex, T: FromValue>(&self, index: I) -> Result<T> {
        let i = index.index();
        let value = self.values.get(i).ok_or_else(|| column(i, "no such column"))?;
        T::from_value(value).map_err(|why| column(i, &why))
    }
}

fn column(column: usize, why: &str) -> StoreError {
    StoreError::Db(DbError::Column {
        column,
        why: why.to_string(),
    })
}

/// Column positions: plain integers, whichever type the literal took.
pub trait ColumnIndex {
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl ColumnIndex for i32 {
    fn index(self) -> usize {
        self as usize
    }
}

pub trait FromValue: Sized {
    fn from_value(v: &Value) -> std::result::Result<Self, String>;
}

impl FromValue for String {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(n) => Ok(*n),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

impl FromValue for u64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        i64::from_value(v).and_then(|n| u64::try_from(n).map_err(|e| e.to_string()))
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        i64::from_value(v).map(|n| n != 0)
    }
}

impl FromValue for () {
    fn from_value(_: &Value) -> std::result::Result<Self, String> {
        Ok(())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null(_) => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

pub trait ToValue {
    fn to_value(&self) -> Value;
    /// The type of this type's NULL.
    fn kind() -> Kind
    where
        Self: Sized;
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
    fn kind() -> Kind {
        Kind::Text
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
            fn kind() -> Kind {
                Kind::Int
            }
        }
    )*};
}
integer!(i64, i32, u32, usize);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
    fn kind() -> Kind {
        Kind::Int
    }
}

impl<T: ToValue> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
    fn kind() -> Kind {
        T::kind()
    }
}

impl ToValue for &str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
    fn kind() -> Kind {
        Kind::Text
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null(T::kind()),
        }
    }
    fn kind() -> Kind {
        T::kind()
    }
}

/// What a statement's parameters can be given as: `params![…]`, an array, `()`, or values.
pub trait Params {
    fn values(self) -> Vec<Value>;
}

impl Params for () {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}

impl Params for &[&dyn ToValue] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}

impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl<T: ToValue> Params for Vec<T> {
    fn values(self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}

/// `query_row(…).optional()`: no row is `None`, not an error.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::Db(DbError::NoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$(&$p as &dyn $crate::store::sql::tx::ToValue),*] as &[&dyn $crate::store::sql::tx::ToValue]
    };
}
pub(crate) use params;
