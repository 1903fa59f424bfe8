//! A reviewer's `workflow/<name>` label on Forgejo/Gitea or GitLab, whose deliveries only
//! say that something changed: the forge's hooks and the reconcile both read the labels the
//! forge shows now and follow them here. (GitHub's deliveries name the label just added;
//! `forge/github/events.rs` follows those.)

use chrono::Utc;

use super::{ProposeError, Proposer, blocking};
use crate::domain::Proposal;

impl Proposer {
    /// A `workflow/<name>` label other than the one Registrar set (the proposal's workflow)
    /// chooses that workflow: the proposal is rendered again with it, and Registrar's old
    /// label goes with the next edit. A label naming no template, or several new ones at
    /// once, change nothing and are answered once on the pull request. A branch someone
    /// else pushed to is no longer rendered, so its labels are not followed either.
    pub async fn follow_workflow_labels(
        &self,
        proposal: &Proposal,
        labels: &[String],
        actor: &str,
    ) -> Result<(), ProposeError> {
        if proposal.hands_off {
            return Ok(());
        }
        let current = proposal.workflow.as_deref();
        let chosen: Vec<&str> = labels
            .iter()
            .filter_map(|l| l.strip_prefix("workflow/"))
            .filter(|w| Some(*w) != current)
            .collect();
        let renderer = self.renderer();
        let choice = match chosen.as_slice() {
            [] => return Ok(()),
            [one] if renderer.has_workflow(one) => *one,
            [unknown] => {
                let known: Vec<String> = renderer.workflows().map(|w| format!("`workflow/{w}`")).collect();
                // The label is shown in code, so whatever it says cannot format or link.
                let text = format!(
                    "There is no workflow template for the label `workflow/{}`, so nothing changed. Known: {}.",
                    unknown.replace('`', "'"),
                    known.join(", ")
                );
                return self.say_once(proposal, &format!("unknown:{unknown}"), &text).await;
            }
            several => {
                let list: Vec<String> = several
                    .iter()
                    .map(|w| format!("`workflow/{}`", w.replace('`', "'")))
                    .collect();
                let text = format!(
                    "Several workflow labels ({}): keep exactly one and Registrar renders this proposal again with it.",
                    list.join(", ")
                );
                return self
                    .say_once(proposal, &format!("several:{}", several.join(",")), &text)
                    .await;
            }
        };
        let (store, mac) = (self.store.clone(), proposal.mac);
        let machine = blocking(move || store.machine(mac)).await?;
        if machine.is_some_and(|m| m.workflow.as_deref() == Some(choice)) {
            // Chosen already; the proposal is being rendered with it.
            return Ok(());
        }
        let (store, workflow, who) = (self.store.clone(), choice.to_string(), actor.to_string());
        blocking(move || store.set_workflow(mac, &workflow, &who, Utc::now())).await?;
        self.wake();
        Ok(())
    }

    /// Says `text` on the proposal's pull request unless `what` was said there before.
    async fn say_once(&self, proposal: &Proposal, what: &str, text: &str) -> Result<(), ProposeError> {
        let number = proposal.number.unwrap_or_default();
        let (store, key) = (
            self.store.clone(),
            format!("comment:{}#{number}:{what}", self.forge.kind()),
        );
        if blocking(move || store.remember_once(&key, Utc::now())).await? {
            self.forge.say(proposal, text).await?;
        }
        Ok(())
    }
}
