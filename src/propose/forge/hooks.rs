//! What a forge's webhook makes Registrar do, whichever forge sent it: a trigger to look,
//! never news to trust. Each forge only says how its deliveries are checked and what they
//! name (`Deliveries`); what happens next is one path for all of them (`ForgeHooks`): read
//! the proposal's state from the forge itself and hand it to `Proposer::observe`, or take a
//! reviewer's `workflow/<name>` label as the choice of another workflow. GitHub's hooks are
//! older and richer (grouped proposals, comment commands) and still their own.

use std::sync::Arc;

use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

use super::Forge;
use crate::domain::{ProposalState, group_of_branch, mac_of_branch};
use crate::propose::{Observation, ProposeError, Proposer};

/// Whether `hex_signature` is the hex HMAC-SHA256 of `body` under `secret`: how GitHub and
/// Forgejo/Gitea sign their deliveries (GitHub prefixes it with `sha256=`).
pub fn hmac_sha256_ok(secret: &SecretString, hex_signature: &str, body: &[u8]) -> bool {
    let Ok(signature) = hex::decode(hex_signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    // verify_slice compares in constant time and rejects wrong lengths.
    mac.verify_slice(&signature).is_ok()
}

/// What a verified delivery asks Registrar to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// A pull (merge) request from this branch changed: opened, closed, merged, relabelled.
    Proposal {
        branch: String,
    },
    /// The base branch moved.
    Base,
    Nothing,
}

/// How one forge's deliveries are checked and read. `header` looks a request header up by
/// its lower-case name.
pub trait Deliveries: Send + Sync {
    /// The forge's name in `forge.kind` and in the webhook's path (`/webhooks/<kind>`).
    fn kind(&self) -> &'static str;
    /// True when the delivery carries this webhook's secret (compared in constant time).
    fn verify(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8]) -> bool;
    /// What a refused delivery is told is missing or wrong.
    fn signature_header(&self) -> &'static str;
    /// The delivery's event and its unique id, which the forge names in headers.
    fn event_and_id(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8]) -> Option<(String, String)>;
    /// True when the delivery is about the configured repository.
    fn is_ours(&self, payload: &Value) -> bool;
    /// What `event`'s payload names; a malformed one is an error.
    fn read(&self, event: &str, payload: &Value) -> Result<Look, String>;
}

pub struct ForgeHooks {
    proposer: Arc<Proposer>,
    forge: Arc<dyn Forge>,
    pub deliveries: Box<dyn Deliveries>,
    /// Who acted, as the audit log names it: `<kind>:<repository>`.
    actor: String,
}

impl ForgeHooks {
    pub fn new(proposer: Arc<Proposer>, forge: Arc<dyn Forge>, deliveries: Box<dyn Deliveries>, repo: &str) -> Self {
        let actor = format!("{}:{repo}", deliveries.kind());
        ForgeHooks {
            proposer,
            forge,
            deliveries,
            actor,
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
            Look::Proposal { branch } => branch,
        };
        if let Some(group) = group_of_branch(branch) {
            return self.proposer.look_at_group(group, &self.actor).await;
        }
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
        let review = self.forge.review(&proposal).await?;
        match review.state {
            ProposalState::Merged => {
                self.proposer
                    .observe(mac, Observation::Merged { number }, &self.actor)
                    .await
            }
            ProposalState::Closed => {
                self.proposer
                    .observe(mac, Observation::Closed { number }, &self.actor)
                    .await
            }
            _ => {
                self.proposer
                    .follow_workflow_labels(&proposal, &review.labels, &self.actor)
                    .await
            }
        }
    }
}
