//! Telling people when machines need them: outgoing webhooks (`notify`).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Where to post. Empty: no notifications.
    pub webhooks: Vec<WebhookConfig>,
    /// At most one message per webhook this often: what happened meanwhile is gathered
    /// into it (a burst of 500 machines is one message, not 500).
    pub interval_seconds: u64,
    /// The proposal queue's oldest item waiting longer than this is "stuck" (said once per
    /// episode). 0: never.
    pub stuck_after_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL (Slack's and Mattermost's incoming-webhook URLs are secrets: prefer `url_file`).
    pub url: Option<SecretString>,
    pub url_file: Option<PathBuf>,
    /// `json` (Registrar's own: events and a text), or `slack` (`{"text": …}`, which
    /// Slack, Mattermost and Rocket.Chat take).
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_format() -> String {
    "json".into()
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhooks: Vec::new(),
            interval_seconds: 60,
            stuck_after_seconds: 900,
        }
    }
}
