//! GitLab's deliveries. GitLab does not sign: it sends the webhook's secret token back in
//! `X-Gitlab-Token`, compared here in constant time. A verified delivery only names what to
//! look at — a merge request's source branch, or the base branch; what Registrar does then
//! is the same for every forge (`forge/hooks.rs`).

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::propose::forge::hooks::{Deliveries, Look};

pub struct GitlabDeliveries {
    secret: SecretString,
    /// `group/project` (`path_with_namespace`): deliveries about other projects are ignored.
    project: String,
    base: String,
}

impl GitlabDeliveries {
    pub fn new(secret: SecretString, project: &str, base: &str) -> Self {
        GitlabDeliveries {
            secret,
            project: project.to_string(),
            base: base.to_string(),
        }
    }
}

impl Deliveries for GitlabDeliveries {
    fn kind(&self) -> &'static str {
        "gitlab"
    }

    fn verify(&self, header: &dyn Fn(&str) -> Option<String>, _body: &[u8]) -> bool {
        let Some(token) = header("x-gitlab-token") else {
            return false;
        };
        // Digests first: equal lengths, so the comparison's time says nothing about the
        // secret's length either.
        let (given, expected) = (
            Sha256::digest(token.as_bytes()),
            Sha256::digest(self.secret.expose_secret().as_bytes()),
        );
        given.ct_eq(&expected).into()
    }

    fn signature_header(&self) -> &'static str {
        "X-Gitlab-Token"
    }

    fn event_and_id(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8]) -> Option<(String, String)> {
        let event = header("x-gitlab-event")?;
        // Idempotency-Key is one delivery's, kept across its retries. X-Gitlab-Event-UUID
        // (older GitLab) is shared by the hooks one event sets off; where neither is sent,
        // the body's digest stands in (a repeated identical body is only a repeated look).
        let id = header("idempotency-key")
            .or_else(|| header("x-gitlab-event-uuid"))
            .unwrap_or_else(|| hex::encode(Sha256::digest(body)));
        Some((event, id))
    }

    fn is_ours(&self, payload: &Value) -> bool {
        payload["project"]["path_with_namespace"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&self.project))
    }

    fn read(&self, event: &str, payload: &Value) -> Result<Look, String> {
        match event {
            // Opened, updated (a label too), closed, reopened, merged: all one event.
            "Merge Request Hook" => payload["object_attributes"]["source_branch"]
                .as_str()
                .map(|b| Look::Proposal { branch: b.to_string() })
                .ok_or_else(|| "a Merge Request Hook delivery names no source branch".to_string()),
            "Push Hook" => {
                let pushed = payload["ref"].as_str().ok_or("a Push Hook delivery names no ref")?;
                Ok(if pushed == format!("refs/heads/{}", self.base) {
                    Look::Base
                } else {
                    Look::Nothing
                })
            }
            _ => Ok(Look::Nothing),
        }
    }
}
