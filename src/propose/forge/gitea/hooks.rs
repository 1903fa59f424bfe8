//! Forgejo's and Gitea's deliveries. Each is checked against the secret
//! (`X-Gitea-Signature`, or Forgejo's `X-Forgejo-Signature`: the hex HMAC-SHA256 of the raw
//! body), then only names what to look at — a pull request's branch, or the base branch.
//! What Registrar does then is the same for every forge (`forge/hooks.rs`).

use secrecy::SecretString;
use serde_json::Value;

use crate::propose::forge::hooks::{Deliveries, Look, hmac_sha256_ok};

pub struct GiteaDeliveries {
    secret: SecretString,
    /// `owner/repo`: deliveries about other repositories are ignored.
    full_name: String,
    base: String,
}

impl GiteaDeliveries {
    pub fn new(secret: SecretString, full_name: &str, base: &str) -> Self {
        GiteaDeliveries {
            secret,
            full_name: full_name.to_string(),
            base: base.to_string(),
        }
    }
}

/// The first of `names` the request carries.
fn first(header: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| header(n))
}

impl Deliveries for GiteaDeliveries {
    fn kind(&self) -> &'static str {
        "gitea"
    }

    fn verify(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8]) -> bool {
        first(header, &["x-forgejo-signature", "x-gitea-signature"])
            .is_some_and(|signature| hmac_sha256_ok(&self.secret, signature.trim(), body))
    }

    fn signature_header(&self) -> &'static str {
        "X-Gitea-Signature"
    }

    fn event_and_id(&self, header: &dyn Fn(&str) -> Option<String>, _body: &[u8]) -> Option<(String, String)> {
        Some((
            first(header, &["x-forgejo-event", "x-gitea-event"])?,
            first(header, &["x-forgejo-delivery", "x-gitea-delivery"])?,
        ))
    }

    fn is_ours(&self, payload: &Value) -> bool {
        payload["repository"]["full_name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&self.full_name))
    }

    fn read(&self, event: &str, payload: &Value) -> Result<Look, String> {
        match event {
            // Gitea names a label change, an assignment or a sync `pull_request` (with its
            // kind in X-Gitea-Event-Type); some versions spell the kind into the event.
            e if e.starts_with("pull_request") => payload["pull_request"]["head"]["ref"]
                .as_str()
                .map(|b| Look::Proposal { branch: b.to_string() })
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
}
