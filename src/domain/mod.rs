//! Plain types and pure functions: no I/O, no async, no HTTP, no SQL.

pub mod facts;
pub mod mac;
pub mod machine;
pub mod proposal;

pub use facts::Facts;
pub use mac::{Mac, MacError};
pub use machine::{Machine, Source, State, Transition};
pub use proposal::{Proposal, ProposalState, branch_for};
