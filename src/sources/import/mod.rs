//! Bulk import: a CSV (or JSON) of machines an operator expects. Parsing is pure and
//! row-precise: every row gets its own list of errors, named by the line it is on, so a
//! preview can show them all before anything is stored.
//!
//! Columns: `mac` (required), then any of `hostname`, `ip`, `netmask`, `gateway`,
//! `nameservers`, `bmc_address`, `bmc_secret`, `workflow`, `location`, `rack`, `u`, `labels`. The
//! separator is `,` or `;` (whichever the header uses); a UTF-8 BOM and CRLF line ends are
//! tolerated; MACs may be written in any common form.

use serde::Serialize;

use crate::domain::{Expected, Mac};

mod fields;
mod parse;

pub use parse::{parse_csv, parse_json};

pub const COLUMNS: &[&str] = &[
    "mac",
    "serial",
    "hostname",
    "ip",
    "netmask",
    "gateway",
    "nameservers",
    "bmc_address",
    "bmc_secret",
    "workflow",
    "location",
    "rack",
    "u",
    "labels",
];
/// More rows than any rack room holds; bounds the work one request can cause.
pub const MAX_ROWS: usize = 50_000;
/// The longest value a cell may hold (a list of labels fits many times over).
pub const MAX_FIELD: usize = 4096;
/// Errors kept per row: enough to fix it, bounded however broken the row is.
pub const MAX_ERRORS: usize = 10;

/// A problem with the file as a whole: nothing in it is usable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is not UTF-8 text (line {line})")]
    NotText { line: u64 },
    #[error(
        "line 1: the header has no `mac` column (found: {found}); the first line must name the columns, e.g. mac,hostname,ip"
    )]
    NoMacColumn { found: String },
    #[error("line 1: unknown column {column:?}; known columns: {known}")]
    UnknownColumn { column: String, known: String },
    #[error("line 1: column {0:?} appears twice")]
    DuplicateColumn(String),
    #[error("line {line}: {message}")]
    Malformed { line: u64, message: String },
    #[error("the file has {0} rows; import at most {MAX_ROWS} at once")]
    TooManyRows(usize),
    #[error("{0}")]
    Json(String),
}

/// One row as parsed: its values if they are valid, and every reason it is not.
#[derive(Debug, Clone, Serialize)]
pub struct ParsedRow {
    pub line: u32,
    /// The MAC as written, for the preview, even when it does not parse.
    pub raw_mac: String,
    pub mac: Option<Mac>,
    pub values: Expected,
    pub errors: Vec<String>,
}

impl ParsedRow {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty() && self.mac.is_some()
    }
}
