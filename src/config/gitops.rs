//! The GitOps repository proposals are written to, and the forge they are reviewed on.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitopsConfig {
    /// `file://…`, `http(s)://…` or a path. Empty: a bare repo in `state_dir/gitops.git`.
    pub remote: String,
    pub base_branch: String,
    /// Where a machine's manifests go; `{name}` and `{mac}` (dashed) are replaced.
    pub path: String,
    pub author_name: String,
    pub author_email: String,
    /// HTTP(S) credentials for the remote.
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    /// SSH remotes (`ssh://git@host/path`, `git@host:path`): the deploy key's private key…
    pub ssh_key_file: Option<PathBuf>,
    /// …and a known_hosts file pinning the server's host key (required: no trust on first use).
    pub ssh_known_hosts_file: Option<PathBuf>,
    /// The directory of this repository that holds the rules and templates Registrar is
    /// deployed with (e.g. `registrar/hardware-templates`, put into `templates_dir` by a
    /// ConfigMap generator): a pull request that edits it is told, in a comment, which
    /// machines it would render differently. GitHub only.
    pub templates_path: Option<String>,
    /// The branches this Registrar owns (`<prefix><mac>`): two sites sharing one repository
    /// each set their own (and their own `path`), and never adopt or rewrite the other's.
    pub branch_prefix: String,
}

impl Default for GitopsConfig {
    fn default() -> Self {
        GitopsConfig {
            remote: String::new(),
            base_branch: "main".into(),
            path: "hardware/{name}.yaml".into(),
            author_name: "Registrar".into(),
            author_email: "registrar@localhost".into(),
            username: None,
            password: None,
            password_file: None,
            ssh_key_file: None,
            ssh_known_hosts_file: None,
            templates_path: None,
            branch_prefix: crate::domain::DEFAULT_BRANCH_PREFIX.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForgeConfig {
    /// `local`: proposals are reviewed in Registrar's own API/UI; `github`: as pull requests
    /// on GitHub; `gitea`: as pull requests on Forgejo or Gitea; `gitlab`: as merge
    /// requests on GitLab.
    pub kind: String,
    pub github: GithubConfig,
    pub gitea: GiteaConfig,
    pub gitlab: GitlabConfig,
}

/// GitLab, gitlab.com or self-managed (`forge.kind: gitlab`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitlabConfig {
    /// The instance's web root, `https://gitlab.example.com` (its API is `/api/v4` below it).
    pub url: String,
    /// The project's full path, groups and all: `infra/gitops` or `dc1/infra/gitops`.
    pub project: String,
    /// A project (or personal) access token with the `api` scope and the Developer role or
    /// higher (Maintainer where the base branch is protected). Prefer `token_file` or
    /// REGISTRAR_GITLAB_TOKEN. Git pushes over HTTPS with it too.
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    /// The webhook's secret token: GitLab sends it back in X-Gitlab-Token.
    pub webhook_secret: Option<SecretString>,
    pub webhook_secret_file: Option<PathBuf>,
    /// How long to wait for an answer.
    pub request_timeout_ms: u64,
}

impl Default for GitlabConfig {
    fn default() -> Self {
        GitlabConfig {
            url: String::new(),
            project: String::new(),
            token: None,
            token_file: None,
            webhook_secret: None,
            webhook_secret_file: None,
            request_timeout_ms: 30_000,
        }
    }
}

/// Forgejo or Gitea (`forge.kind: gitea`): the same REST API on both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GiteaConfig {
    /// The forge's web root, `https://git.example.com` (its API is `/api/v1` below it).
    pub url: String,
    pub owner: String,
    pub repo: String,
    /// An access token of the account Registrar acts as, with write access to the
    /// repository and its issues (scopes `write:repository`, `write:issue`). Prefer
    /// `token_file` or REGISTRAR_GITEA_TOKEN. Git pushes over HTTPS with it too.
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    /// The webhook's secret: deliveries are verified with it before they are read.
    pub webhook_secret: Option<SecretString>,
    pub webhook_secret_file: Option<PathBuf>,
    /// How long to wait for an answer.
    pub request_timeout_ms: u64,
}

impl Default for GiteaConfig {
    fn default() -> Self {
        GiteaConfig {
            url: String::new(),
            owner: String::new(),
            repo: String::new(),
            token: None,
            token_file: None,
            webhook_secret: None,
            webhook_secret_file: None,
            request_timeout_ms: 30_000,
        }
    }
}

impl Default for ForgeConfig {
    fn default() -> Self {
        ForgeConfig {
            kind: "local".into(),
            github: GithubConfig::default(),
            gitea: GiteaConfig::default(),
            gitlab: GitlabConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubConfig {
    /// REST API root: `https://api.github.com`, or `https://<host>/api/v3` for GitHub Enterprise.
    pub api_url: String,
    pub owner: String,
    pub repo: String,
    /// A token with contents and pull-requests write access (fine-grained PAT or an App
    /// installation token). Prefer `token_file` or REGISTRAR_GITHUB_TOKEN.
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    /// GitHub App authentication (preferred over a token): the App's id, its private key
    /// (PEM), and the installation on the GitOps repository's owner.
    pub app_id: Option<u64>,
    pub app_private_key_file: Option<PathBuf>,
    pub installation_id: Option<u64>,
    /// The webhook's secret: deliveries are verified with it before they are parsed.
    pub webhook_secret: Option<SecretString>,
    pub webhook_secret_file: Option<PathBuf>,
    /// While rotating the webhook secret: the old one, still accepted until GitHub and
    /// Registrar both have the new one. Remove it afterwards.
    pub webhook_previous_secret_file: Option<PathBuf>,
    /// Pause between content-creating requests (GitHub asks for ≥ 1 s; secondary limits
    /// allow about 80 a minute).
    pub mutation_interval_ms: u64,
    /// GitHub's documented secondary limits on content-creating requests: 80 a minute and
    /// 500 an hour. Every mutation counts against them (0: no budget).
    pub max_mutations_per_minute: usize,
    pub max_mutations_per_hour: usize,
    /// The share of those limits Registrar leaves unused, in percent: room for whatever
    /// else uses the same token or App (a person's script, another bot).
    pub mutation_headroom_percent: u8,
    /// The budgets' window lengths: GitHub's are a minute and an hour. Shortened only to
    /// measure the pacing in a benchmark.
    pub budget_minute_ms: u64,
    pub budget_hour_ms: u64,
    /// Base delay of the exponential backoff (with full jitter) for retried requests.
    pub retry_base_ms: u64,
    /// How often the reconcile reads the open and recently closed pull requests.
    pub reconcile_seconds: u64,
    /// How long to wait for an answer; a create that times out is looked up, not resent.
    pub request_timeout_ms: u64,
    /// Whether the console, API and CLI may approve. Approving there merges through the API
    /// as Registrar's identity, which branch protection's required reviews do not stop if that
    /// identity may bypass them (and GitHub never lets it approve its own pull request).
    /// Off, approving means merging on GitHub, where reviews and branch protection apply.
    pub approve_in_registrar: bool,
    /// Keep one issue in the repository current with what waits for review, like
    /// Renovate's Dependency Dashboard (needs the Issues write permission).
    pub dashboard: bool,
    pub dashboard_title: String,
}

impl GithubConfig {
    /// The budget Registrar paces itself to: the limit less the headroom (at least one).
    pub fn mutations_per_minute(&self) -> usize {
        self.after_headroom(self.max_mutations_per_minute)
    }

    pub fn mutations_per_hour(&self) -> usize {
        self.after_headroom(self.max_mutations_per_hour)
    }

    fn after_headroom(&self, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        let kept = 100 - usize::from(self.mutation_headroom_percent.min(99));
        (limit * kept / 100).max(1)
    }
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            api_url: "https://api.github.com".into(),
            owner: String::new(),
            repo: String::new(),
            token: None,
            token_file: None,
            app_id: None,
            app_private_key_file: None,
            installation_id: None,
            webhook_secret: None,
            webhook_secret_file: None,
            webhook_previous_secret_file: None,
            mutation_interval_ms: 1000,
            max_mutations_per_minute: 80,
            max_mutations_per_hour: 500,
            mutation_headroom_percent: 2,
            budget_minute_ms: 60_000,
            budget_hour_ms: 3_600_000,
            retry_base_ms: 1000,
            reconcile_seconds: 300,
            request_timeout_ms: 30_000,
            approve_in_registrar: false,
            dashboard: false,
            dashboard_title: "Registrar: machines waiting for review".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GithubConfig;

    #[test]
    fn the_budget_is_githubs_limits_less_the_named_headroom() {
        let g = GithubConfig::default();
        assert_eq!((g.max_mutations_per_minute, g.max_mutations_per_hour), (80, 500));
        assert_eq!((g.mutations_per_minute(), g.mutations_per_hour()), (78, 490));
        let g = GithubConfig {
            mutation_headroom_percent: 20,
            ..GithubConfig::default()
        };
        assert_eq!((g.mutations_per_minute(), g.mutations_per_hour()), (64, 400));
        let off = GithubConfig {
            max_mutations_per_minute: 0,
            ..GithubConfig::default()
        };
        assert_eq!(off.mutations_per_minute(), 0, "0 stays 'no budget'");
    }
}
