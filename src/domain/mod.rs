//! Plain types and pure functions: no I/O, no async, no HTTP, no SQL.

pub mod expected;
pub mod facts;
pub mod known;
pub mod mac;
pub mod machine;
pub mod proposal;
pub mod sighting;

pub use expected::{Expected, ImportMode};
pub use facts::Facts;
pub use known::KnownMacs;
pub use mac::{Mac, MacError};
pub use machine::{Machine, Source, State, Transition};
pub use proposal::{Proposal, ProposalState, branch_for, pushed_key};
pub use sighting::{Relay, Sighting};
