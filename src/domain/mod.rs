//! Plain types and pure functions: no I/O, no async, no HTTP, no SQL.

pub mod expected;
pub mod facts;
pub mod group;
pub mod known;
pub mod lifecycle;
pub mod mac;
pub mod machine;
pub mod proposal;
pub mod sighting;

pub use expected::{Expected, ImportMode};
pub use facts::Facts;
pub use group::{Command, Group, GroupBy, GroupKey, GroupMember, group_branch, group_of_branch};
pub use known::KnownMacs;
pub use lifecycle::Basis;
pub use mac::{Mac, MacError};
pub use machine::{Machine, Source, State, Transition};
pub use proposal::{
    DEFAULT_BRANCH_PREFIX, Proposal, ProposalKind, ProposalState, branch_for, branch_prefix, change_branch,
    is_branch_prefix, mac_of_branch, pushed_key, set_branch_prefix,
};
pub use sighting::{Relay, Sighting};
