//! Whether a provisioned machine may be booted into discovery again (re-inventory), and on
//! what. It reboots a machine in production, so it is opt-in: the rule that chose its
//! manifests must set `reinventory: true` (a rule whose `when` names one MAC or serial opts
//! in one machine). What git holds decides: the rule and the BMC are read from a render of
//! the machine's settled basis with today's templates.

use serde_json::Value;

use super::{ProposeError, Proposer};
use crate::cluster::inventory::InventoryTarget;
use crate::domain::{Basis, Machine, State};

impl Proposer {
    /// The Hardware a re-inventory of `machine` boots, or why it may not have one.
    pub async fn inventory_target(&self, machine: &Machine) -> Result<InventoryTarget, ProposeError> {
        let mac = machine.mac;
        if !matches!(machine.state, State::Provisioned | State::Inventorying) {
            return Err(ProposeError::Conflict(format!(
                "only a provisioned machine is inventoried again; {mac} is {}",
                machine.state
            )));
        }
        if machine.wanted.is_some() {
            return Err(ProposeError::Conflict(format!(
                "{mac} has a change asked for and not merged yet"
            )));
        }
        let basis = match (&machine.settled, &machine.facts) {
            (Some(settled), _) => settled.clone(),
            (None, Some(facts)) => Basis {
                facts: facts.clone(),
                provisioned: true,
                round: 0,
            },
            (None, None) => return Err(ProposeError::Conflict(format!("{mac} has no facts to render"))),
        };
        let Some(name) = machine.name.clone() else {
            return Err(ProposeError::Conflict(format!("{mac} has no Hardware name recorded")));
        };
        let rendered = self.render_settled(machine, &basis, &name, None).await?;
        let allowed = rendered.decision.values.get("reinventory").and_then(Value::as_bool);
        if allowed != Some(true) {
            return Err(ProposeError::Conflict(format!(
                "re-inventory is not enabled for {name}: its rule ({}) does not set `reinventory: true` in rules.yaml",
                rendered.decision.rule
            )));
        }
        let via_bmc = rendered
            .documents
            .iter()
            .any(|d| d["kind"] == "Hardware" && d["spec"]["bmcRef"].is_object());
        Ok(InventoryTarget {
            hardware: name,
            via_bmc,
        })
    }
}

impl Proposer {
    /// The provisioning Workflow git holds for `machine` (the one its file on the base
    /// branch names), so that the hand-off follows what was merged, whatever the templates
    /// name it; None when git holds none (or no file is known).
    pub async fn workflow_in_git(&self, machine: &Machine) -> Result<Option<String>, ProposeError> {
        let (store, mac) = (self.store.clone(), machine.mac);
        let Some(path) = super::blocking(move || store.proposal(mac)).await?.map(|p| p.path) else {
            return Ok(None);
        };
        let git = self.git.clone();
        let text = super::blocking(move || git.read(git.base(), &path)).await?;
        Ok(text.and_then(|t| super::index::workflow_name(&String::from_utf8_lossy(&t))))
    }
}
