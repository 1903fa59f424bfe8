//! One configuration file (YAML), environment overrides, and secrets from files or the
//! environment. Secrets are `SecretString`s: they never reach a log line or a Debug dump.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

mod cluster;
mod dhcp;
mod gitops;
pub mod ipam;
pub mod notify;
mod review;
pub mod secrets;
mod server;
mod store;
mod validate;

pub use cluster::{ClusterConfig, DiscoveryConfig, LeaderElectionConfig, SmeeLogsConfig, TinkerbellConfig};
pub use dhcp::DhcpConfig;
pub use gitops::{ForgeConfig, GiteaConfig, GithubConfig, GitlabConfig, GitopsConfig};
pub use review::{AutoApprove, QueueConfig, ReviewConfig};
pub use secrets::Tokens;
pub use server::{AuthConfig, OidcConfig, Role, ServerConfig, UiConfig, UserConfig};
pub use store::StoreConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Registrar's own state: the SQLite store, the git mirror and, on the embedded default,
    /// the GitOps repository itself.
    pub state_dir: PathBuf,
    pub templates_dir: PathBuf,
    /// Where the store is: the SQLite file in `state_dir` unless PostgreSQL is named.
    pub store: StoreConfig,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub gitops: GitopsConfig,
    pub forge: ForgeConfig,
    pub tinkerbell: TinkerbellConfig,
    pub dhcp: DhcpConfig,
    pub queue: QueueConfig,
    pub cluster: ClusterConfig,
    pub ui: UiConfig,
    pub discovery: ReviewConfig,
    /// Address pools (Smee's reservation mode serves only Hardware with an address).
    pub ipam: ipam::IpamConfig,
    /// Outgoing webhooks when machines wait for review, are approved or fail.
    pub notify: notify::NotifyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from(".registrar"),
            templates_dir: PathBuf::from("hardware-templates"),
            store: StoreConfig::default(),
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            gitops: GitopsConfig::default(),
            forge: ForgeConfig::default(),
            tinkerbell: TinkerbellConfig::default(),
            dhcp: DhcpConfig::default(),
            queue: QueueConfig::default(),
            cluster: ClusterConfig::default(),
            ui: UiConfig::default(),
            discovery: ReviewConfig::default(),
            ipam: Default::default(),
            notify: Default::default(),
        }
    }
}

impl Config {
    /// Reads `path` (if given), resolves relative paths in it (`state_dir`, `templates_dir`
    /// and every `*_file`) against the config file's directory, then applies `REGISTRAR_*`
    /// environment overrides (whose paths are relative to the working directory).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
                let mut c: Config = yaml_serde::from_str(&text).with_context(|| format!("config {}", p.display()))?;
                let base = p
                    .parent()
                    .filter(|b| !b.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                c.state_dir = base.join(&c.state_dir);
                c.templates_dir = base.join(&c.templates_dir);
                // Secret files too: a config and the secrets beside it move together, and
                // the same file works whatever directory Registrar is started from.
                let g = &mut c.forge.github;
                for file in [
                    &mut c.auth.report_token_file,
                    &mut c.auth.operator_token_file,
                    &mut c.auth.metrics_token_file,
                    &mut c.auth.snoop_token_file,
                    &mut c.gitops.password_file,
                    &mut c.store.postgres_url_file,
                    &mut c.gitops.ssh_key_file,
                    &mut c.gitops.ssh_known_hosts_file,
                    &mut g.token_file,
                    &mut g.app_private_key_file,
                    &mut g.webhook_secret_file,
                    &mut g.webhook_previous_secret_file,
                    &mut c.forge.gitea.token_file,
                    &mut c.forge.gitea.webhook_secret_file,
                    &mut c.forge.gitlab.token_file,
                    &mut c.forge.gitlab.webhook_secret_file,
                ]
                .into_iter()
                .flatten()
                {
                    *file = base.join(&*file);
                }
                for user in &mut c.auth.users {
                    if let Some(file) = &mut user.token_file {
                        *file = base.join(&*file);
                    }
                }
                if let Some(file) = c.ui.oidc.as_mut().and_then(|o| o.client_secret_file.as_mut()) {
                    *file = base.join(&*file);
                }
                for hook in &mut c.notify.webhooks {
                    if let Some(file) = &mut hook.url_file {
                        *file = base.join(&*file);
                    }
                }
                c
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = get("REGISTRAR_STATE_DIR") {
            self.state_dir = v.into();
        }
        if let Some(v) = get("REGISTRAR_TEMPLATES_DIR") {
            self.templates_dir = v.into();
        }
        if let Some(v) = get("REGISTRAR_LISTEN") {
            self.server.listen = v.parse().with_context(|| format!("REGISTRAR_LISTEN={v:?}"))?;
        }
        if let Some(v) = get("REGISTRAR_GITOPS_REMOTE") {
            self.gitops.remote = v;
        }
        if let Some(v) = get("REGISTRAR_BASE_BRANCH") {
            self.gitops.base_branch = v;
        }
        if let Some(v) = get("REGISTRAR_DHCP_LISTEN") {
            self.dhcp.listen = v.parse().with_context(|| format!("REGISTRAR_DHCP_LISTEN={v:?}"))?;
            self.dhcp.enabled = true;
        }
        if let Some(v) = get("REGISTRAR_NAMESPACE") {
            self.tinkerbell.namespace = v;
        }
        if let Some(v) = get("REGISTRAR_REPORT_TOKEN") {
            self.auth.report_token = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_OPERATOR_TOKEN") {
            self.auth.operator_token = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_METRICS_TOKEN") {
            self.auth.metrics_token = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_SNOOP_TOKEN") {
            self.auth.snoop_token = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_DHCP_FORWARD_TO") {
            self.dhcp.forward_to = v;
        }
        if let Some(v) = get("REGISTRAR_GITHUB_TOKEN") {
            self.forge.github.token = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_GITHUB_WEBHOOK_SECRET") {
            self.forge.github.webhook_secret = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_GITEA_TOKEN") {
            self.forge.gitea.token = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_GITEA_WEBHOOK_SECRET") {
            self.forge.gitea.webhook_secret = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_GITLAB_TOKEN") {
            self.forge.gitlab.token = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_GITLAB_WEBHOOK_SECRET") {
            self.forge.gitlab.webhook_secret = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_POSTGRES_URL") {
            self.store.postgres_url = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_GITOPS_PASSWORD") {
            self.gitops.password = Some(v.into());
        }
        Ok(())
    }

    pub fn remote_url(&self) -> String {
        if self.gitops.remote.is_empty() && self.forge.kind == "github" {
            // The repository behind the API: github.com's, or the Enterprise host's.
            let g = &self.forge.github;
            let web = g
                .api_url
                .trim_end_matches('/')
                .replace("://api.github.com", "://github.com")
                .trim_end_matches("/api/v3")
                .to_string();
            return format!("{web}/{}/{}.git", g.owner, g.repo);
        }
        if self.gitops.remote.is_empty() && self.forge.kind == "gitea" {
            let g = &self.forge.gitea;
            return format!("{}/{}/{}.git", g.url.trim_end_matches('/'), g.owner, g.repo);
        }
        if self.gitops.remote.is_empty() && self.forge.kind == "gitlab" {
            let g = &self.forge.gitlab;
            return format!("{}/{}.git", g.url.trim_end_matches('/'), g.project.trim_matches('/'));
        }
        if self.gitops.remote.is_empty() {
            format!("file://{}", absolute(&self.state_dir.join("gitops.git")).display())
        } else if self.gitops.remote.contains("://") || crate::propose::git::ssh::is_ssh(&self.gitops.remote) {
            self.gitops.remote.clone()
        } else {
            format!("file://{}", absolute(Path::new(&self.gitops.remote)).display())
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_values() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "REGISTRAR_LISTEN" => Some("0.0.0.0:9999".into()),
            "REGISTRAR_BASE_BRANCH" => Some("trunk".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.gitops.base_branch, "trunk");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let mut c = Config::default();
        c.auth.report_token = Some("super-secret-token-value".to_string().into());
        assert!(!format!("{c:?}").contains("super-secret"));
    }

    #[test]
    fn secret_files_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        let file = dir.path().join("conf/registrar.yaml");
        std::fs::write(
            &file,
            "auth:\n  report_token_file: secrets/report\nforge:\n  github:\n    token_file: /abs/token\n",
        )
        .unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(
            c.auth.report_token_file.unwrap(),
            dir.path().join("conf/secrets/report")
        );
        assert_eq!(c.forge.github.token_file.unwrap(), PathBuf::from("/abs/token"));
    }
}
