//! What an edit of the rules or templates would do: each machine rendered under the
//! templates before and after the edit, from the same recorded facts, address and workflow,
//! and the machines whose manifests differ, with the difference.

use serde::Serialize;

use super::{RenderInput, Renderer};
use crate::domain::{Machine, State};

/// A machine whose manifests the edit changes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub mac: String,
    pub name: Option<String>,
    pub state: String,
    /// Unified diff of the manifests, before → after.
    pub diff: String,
}

/// Machines a template edit reaches: waiting for review, or already in git.
pub fn in_scope(state: State) -> bool {
    matches!(
        state,
        State::Reported
            | State::Proposed
            | State::Approved
            | State::Applied
            | State::Provisioned
            | State::Inventorying
            | State::Failed
    )
}

/// `machine` under both template sets; `None` when they render it alike (or it has no facts).
pub fn compare(
    before: &Renderer,
    after: &Renderer,
    machine: &Machine,
    address: Option<&crate::ipam::Address>,
) -> Option<Change> {
    let facts = machine.facts.as_ref()?;
    let input = RenderInput {
        address,
        ..RenderInput::for_machine(machine, facts)
    };
    // An edit that breaks rendering is the most important change of all to show.
    let manifest = |r: &Renderer| match r.render(&input) {
        Ok(rendered) => rendered.manifest,
        Err(e) => format!("# does not render: {e}\n"),
    };
    let (old, new) = (manifest(before), manifest(after));
    if old == new {
        return None;
    }
    let diff = similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(2)
        .header("before", "after")
        .to_string();
    Some(Change {
        mac: machine.mac.to_string(),
        name: machine.name.clone(),
        state: machine.state.to_string(),
        diff,
    })
}
