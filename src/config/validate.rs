//! Checks a loaded configuration before anything acts on it.

use anyhow::bail;

use super::Config;

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        let election = &self.cluster.leader_election;
        if election.enabled {
            if self.store.postgres_url.is_none() && self.store.postgres_url_file.is_none() {
                bail!(
                    "cluster.leader_election needs a store the replicas share: set store.postgres_url_file (or REGISTRAR_POSTGRES_URL)"
                );
            }
            crate::cluster::lease::check_name(&election.lease_name).map_err(anyhow::Error::msg)?;
            if !(3..=3600).contains(&election.lease_seconds) {
                bail!("cluster.leader_election.lease_seconds must be 3 to 3600");
            }
        }
        for (i, hook) in self.notify.webhooks.iter().enumerate() {
            if hook.url.is_some() == hook.url_file.is_some() {
                bail!("notify.webhooks[{i}]: give either url or url_file");
            }
            if hook.format != "json" && hook.format != "slack" {
                bail!(
                    "notify.webhooks[{i}].format: {:?} is neither json nor slack",
                    hook.format
                );
            }
        }
        if !self.ui.auth && !self.server.listen.ip().is_loopback() {
            bail!(
                "ui.auth: false opens the console without a login; it is allowed only with server.listen on loopback (127.0.0.1 or ::1), not {}",
                self.server.listen
            );
        }
        let mut names = std::collections::HashSet::new();
        for u in &self.auth.users {
            let name = u.name.trim();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                bail!(
                    "auth.users: {:?} is not a usable name (1 to 128 printable characters)",
                    u.name
                );
            }
            if !names.insert(name.to_lowercase()) {
                bail!("auth.users: {name:?} is listed twice");
            }
        }
        if crate::propose::git::ssh::is_ssh(&self.gitops.remote)
            && (self.gitops.ssh_key_file.is_none() || self.gitops.ssh_known_hosts_file.is_none())
        {
            bail!(
                "gitops.remote {:?} is an SSH remote: set gitops.ssh_key_file (the deploy key) and gitops.ssh_known_hosts_file (the server's pinned host key; it is never trusted on first use)",
                self.gitops.remote
            );
        }
        if let Some(t) = &self.gitops.templates_path
            && (t.is_empty()
                || t.starts_with('/')
                || t.split('/').any(|part| part.is_empty() || part == "." || part == ".."))
        {
            bail!(
                "gitops.templates_path {t:?} must be a directory of the repository, like registrar/hardware-templates"
            );
        }
        if !crate::domain::is_branch_prefix(&self.gitops.branch_prefix) {
            bail!(
                "gitops.branch_prefix {:?} must be lower-case letters, digits, '-', '_' or '.' in '/'-separated parts, ending with '/' (like registrar/ or registrar-site-b/)",
                self.gitops.branch_prefix
            );
        }
        let p = &self.gitops.path;
        if !p.contains("{name}") && !p.contains("{mac}") {
            bail!("gitops.path {p:?} must contain {{name}} or {{mac}}, or every machine would share one file");
        }
        if p.starts_with('/')
            || p.split('/').any(|c| c == ".." || c.is_empty())
            || !(p.ends_with(".yaml") || p.ends_with(".yml"))
        {
            bail!("gitops.path {p:?} must be a relative path without '..' ending in .yaml");
        }
        if !git2::Reference::is_valid_name(&format!("refs/heads/{}", self.gitops.base_branch)) {
            bail!(
                "gitops.base_branch {:?} is not a valid branch name",
                self.gitops.base_branch
            );
        }
        match self.forge.kind.as_str() {
            "local" => {}
            "github" => {
                let g = &self.forge.github;
                if g.owner.is_empty() || g.repo.is_empty() {
                    bail!("forge.github.owner and forge.github.repo are required with forge.kind: github");
                }
                if !g.api_url.starts_with("http://") && !g.api_url.starts_with("https://") {
                    bail!("forge.github.api_url {:?} must be an http(s) URL", g.api_url);
                }
                if g.app_id.is_some() && (g.app_private_key_file.is_none() || g.installation_id.is_none()) {
                    bail!("forge.github.app_id needs app_private_key_file and installation_id");
                }
                if g.app_id.is_none() && g.token.is_none() && g.token_file.is_none() {
                    bail!(
                        "forge.kind github needs a GitHub App (app_id, app_private_key_file, installation_id) or a token (token_file or REGISTRAR_GITHUB_TOKEN)"
                    );
                }
                if g.webhook_secret.is_none() && g.webhook_secret_file.is_none() {
                    bail!(
                        "forge.kind github needs the webhook secret: forge.github.webhook_secret_file or REGISTRAR_GITHUB_WEBHOOK_SECRET"
                    );
                }
            }
            "gitea" => {
                let g = &self.forge.gitea;
                if g.owner.is_empty() || g.repo.is_empty() {
                    bail!("forge.gitea.owner and forge.gitea.repo are required with forge.kind: gitea");
                }
                if !g.url.starts_with("http://") && !g.url.starts_with("https://") {
                    bail!("forge.gitea.url {:?} must be the forge's http(s) URL", g.url);
                }
                if g.token.is_none() && g.token_file.is_none() {
                    bail!("forge.kind gitea needs a token: forge.gitea.token_file or REGISTRAR_GITEA_TOKEN");
                }
                if g.webhook_secret.is_none() && g.webhook_secret_file.is_none() {
                    bail!(
                        "forge.kind gitea needs the webhook secret: forge.gitea.webhook_secret_file or REGISTRAR_GITEA_WEBHOOK_SECRET"
                    );
                }
            }
            "gitlab" => {
                let g = &self.forge.gitlab;
                if g.project.trim_matches('/').is_empty() {
                    bail!(
                        "forge.gitlab.project (the project's full path, group/project) is required with forge.kind: gitlab"
                    );
                }
                if !g.url.starts_with("http://") && !g.url.starts_with("https://") {
                    bail!("forge.gitlab.url {:?} must be the instance's http(s) URL", g.url);
                }
                if g.token.is_none() && g.token_file.is_none() {
                    bail!("forge.kind gitlab needs a token: forge.gitlab.token_file or REGISTRAR_GITLAB_TOKEN");
                }
                if g.webhook_secret.is_none() && g.webhook_secret_file.is_none() {
                    bail!(
                        "forge.kind gitlab needs the webhook secret: forge.gitlab.webhook_secret_file or REGISTRAR_GITLAB_WEBHOOK_SECRET"
                    );
                }
            }
            other => bail!("forge.kind {other:?} is unknown (known: local, github, gitea, gitlab)"),
        }
        if self.discovery.group_by != crate::domain::GroupBy::None {
            // The local forge approves machine by machine through the API and the console.
            if self.forge.kind == "local" {
                bail!(
                    "discovery.group_by needs a forge with pull requests (github, gitea or gitlab): the local forge reviews machines one by one"
                );
            }
            if !(1..=500).contains(&self.discovery.group_size) {
                bail!(
                    "discovery.group_size {} must be between 1 and 500 (a pull request's description lists every machine)",
                    self.discovery.group_size
                );
            }
        }
        if !crate::render::names::is_dns1123(&self.tinkerbell.namespace) {
            bail!(
                "tinkerbell.namespace {:?} is not a valid namespace",
                self.tinkerbell.namespace
            );
        }
        self.dhcp.filters()?;
        if self.cluster.discovery.enabled && !self.cluster.discovery.report_url.starts_with("http") {
            bail!("cluster.discovery.report_url must be Registrar's http(s) URL as machines reach it");
        }
        if self.dhcp.debounce_seconds == 0 || self.dhcp.max_tracked_macs == 0 {
            bail!("dhcp.debounce_seconds and dhcp.max_tracked_macs must be positive");
        }
        crate::ipam::Pools::from_config(&self.ipam).map_err(|e| anyhow::anyhow!(e))?;
        if let Some(file) = &self.ipam.file {
            if self.ipam.discovery.is_some() || !self.ipam.pools.is_empty() {
                bail!("ipam.file {file:?} holds the pools: leave ipam.discovery and ipam.pools out of the config");
            }
            if file.is_empty() || file.starts_with('/') || file.split('/').any(|part| part == "..") {
                bail!("ipam.file {file:?} must be a path inside the GitOps repository");
            }
        }
        if self.server.max_body_bytes < 1024 {
            bail!("server.max_body_bytes must be at least 1024");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_paths_that_escape_or_collide() {
        for bad in [
            "hardware/all.yaml",
            "../x/{name}.yaml",
            "/abs/{name}.yaml",
            "hw/{name}.txt",
        ] {
            let mut c = Config::default();
            c.gitops.path = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
