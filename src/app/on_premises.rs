//! The on-premises forges, Forgejo/Gitea and GitLab: each is a `Forge` and a way of reading
//! its deliveries; past this point Registrar treats them alike (`forge/hooks.rs`).

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::propose::forge::Forge;
use crate::propose::forge::gitea::GiteaForge;
use crate::propose::forge::gitea::hooks::GiteaDeliveries;
use crate::propose::forge::gitlab::GitlabForge;
use crate::propose::forge::gitlab::hooks::GitlabDeliveries;
use crate::propose::forge::hooks::Deliveries;

pub(super) struct OnPremises {
    pub forge: Arc<dyn Forge>,
    pub deliveries: Box<dyn Deliveries>,
    /// The repository as deliveries and the audit log name it (`owner/repo`, `group/project`).
    pub repo: String,
}

/// The forge `forge.kind` names, if it is an on-premises one.
pub(super) fn forge(config: &Config) -> anyhow::Result<Option<OnPremises>> {
    let base = &config.gitops.base_branch;
    Ok(match config.forge.kind.as_str() {
        "gitea" => {
            let g = &config.forge.gitea;
            let timeout = Duration::from_millis(g.request_timeout_ms.max(1));
            let repo = format!("{}/{}", g.owner, g.repo);
            let token = config.forge_token()?;
            Some(OnPremises {
                forge: Arc::new(GiteaForge::new(&g.url, &g.owner, &g.repo, token, base, timeout)?),
                deliveries: Box::new(GiteaDeliveries::new(config.forge_webhook_secret()?, &repo, base)),
                repo,
            })
        }
        "gitlab" => {
            let g = &config.forge.gitlab;
            let timeout = Duration::from_millis(g.request_timeout_ms.max(1));
            let project = g.project.trim_matches('/');
            Some(OnPremises {
                forge: Arc::new(GitlabForge::new(&g.url, project, config.forge_token()?, base, timeout)?),
                deliveries: Box::new(GitlabDeliveries::new(config.forge_webhook_secret()?, project, base)),
                repo: project.to_string(),
            })
        }
        _ => None,
    })
}
