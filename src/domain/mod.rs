//! Plain types and pure functions: no I/O, no async, no HTTP, no SQL.

pub mod facts;
pub mod mac;
pub mod machine;

pub use facts::Facts;
pub use mac::{Mac, MacError};
pub use machine::{Machine, Source, State, Transition};
