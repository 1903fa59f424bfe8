//! Forgejo's and Gitea's webhooks: a trigger to look, never news to trust. A delivery is
//! checked against the secret (`X-Gitea-Signature`, or Forgejo's `X-Forgejo-Signature`:
//! the hex HMAC-SHA256 of the raw body), then only names what to look at — a pull request's
//! branch, or the base branch — and Registrar reads the forge itself before acting.

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;

use super::GiteaForge;
use crate::domain::{ProposalState, mac_of_branch};
use crate::propose::forge::Forge;
use crate::propose::{Observation, ProposeError, Proposer};

pub struct GiteaHooks {
    proposer: Arc<Proposer>,
    forge: Arc<GiteaForge>,
    secret: SecretString,
    /// `owner/repo`: deliveries about other repositories are ignored.
    full_name: String,
    base: String,
}

/// What a verified delivery asks Registrar to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// A pull request from this branch changed (opened, closed, merged, reopened).
    PullRequest {
        branch: String,
    },
    /// The base branch moved.
    Base,
    Nothing,
}

impl GiteaHooks {
    pub fn new(
        proposer: Arc<Proposer>,
        forge: Arc<GiteaForge>,
        secret: SecretString,
        full_name: &str,
        base: &str,
    ) -> Self {
        GiteaHooks {
            proposer,
            forge,
            secret,
            full_name: full_name.to_string(),
            base: base.to_string(),
        }
    }

    pub fn verify(&self, signature: Option<&str>, body: &[u8]) -> bool {
        let prefixed = signature.map(|s| format!("sha256={}", s.trim()));
        crate::propose::forge::github::events::signature_ok(&self.secret, prefixed.as_deref(), body)
    }

    pub fn is_ours(&self, payload: &Value) -> bool {
        payload["repository"]["full_name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&self.full_name))
    }

    /// What `event`'s payload names; a malformed one is an error.
    pub fn read(&self, event: &str, payload: &Value) -> Result<Look, String> {
        match event {
            // Gitea names a label change, an assignment or a sync `pull_request` (with its
            // kind in X-Gitea-Event-Type); some versions spell the kind into the event.
            e if e.starts_with("pull_request") => payload["pull_request"]["head"]["ref"]
                .as_str()
                .map(|b| Look::PullRequest { branch: b.to_string() })
                .ok_or_else(|| "a pull_request delivery names no head branch".to_string()),
            "push" => {
                let pushed = payload["ref"].as_str().ok_or("a push delivery names no ref")?;
                Ok(if pushed == format!("refs/heads/{}", self.base) {
                    Look::Base
                } else {
                    Look::Nothing
                })
            }
            _ => Ok(Look::Nothing),
        }
    }

    pub async fn handle(&self, look: &Look) -> Result<(), ProposeError> {
        let result = self.look(look).await;
        self.proposer.metrics.webhook_handled(result.is_ok());
        result
    }

    async fn look(&self, look: &Look) -> Result<(), ProposeError> {
        let branch = match look {
            Look::Nothing => return Ok(()),
            Look::Base => return self.proposer.observe_base_moved().await,
            Look::PullRequest { branch } => branch,
        };
        let Some(mac) = mac_of_branch(branch) else {
            return Ok(());
        };
        let store = self.proposer.store().clone();
        let recorded = tokio::task::spawn_blocking(move || store.proposal(mac))
            .await
            .map_err(|e| ProposeError::Join(e.to_string()))??;
        let Some(proposal) = recorded.filter(|p| &p.branch == branch && p.state == ProposalState::Open) else {
            return Ok(());
        };
        let number = proposal.number.unwrap_or_default();
        let actor = format!("gitea:{}", self.full_name);
        match self.forge.state(&proposal).await? {
            ProposalState::Merged => self.proposer.observe(mac, Observation::Merged { number }, &actor).await,
            ProposalState::Closed => self.proposer.observe(mac, Observation::Closed { number }, &actor).await,
            _ => {
                self.choose_workflow(mac, number, proposal.workflow.as_deref(), &actor)
                    .await
            }
        }
    }

    /// A `workflow/<name>` label other than the proposal's workflow (`current`), added by a
    /// reviewer, chooses that workflow (one the templates know); the proposal is rendered
    /// again with it, and the old label goes with the next edit.
    async fn choose_workflow(
        &self,
        mac: crate::domain::Mac,
        number: u64,
        current: Option<&str>,
        actor: &str,
    ) -> Result<(), ProposeError> {
        let Some(pull) = self.forge.pull(number).await? else {
            return Ok(());
        };
        let renderer = self.proposer.renderer();
        let chosen: Vec<&str> = pull
            .labels
            .iter()
            .filter_map(|l| l.name.strip_prefix("workflow/"))
            .filter(|w| Some(*w) != current && renderer.has_workflow(w))
            .collect();
        let [choice] = chosen.as_slice() else {
            // None, or several at once: nothing to choose between.
            return Ok(());
        };
        let (store, wf, who) = (self.proposer.store().clone(), choice.to_string(), actor.to_string());
        tokio::task::spawn_blocking(move || store.set_workflow(mac, &wf, &who, chrono::Utc::now()))
            .await
            .map_err(|e| ProposeError::Join(e.to_string()))??;
        self.proposer.wake();
        Ok(())
    }
}
