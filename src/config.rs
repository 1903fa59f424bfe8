//! One configuration file (YAML), environment overrides, and secrets from files or the
//! environment. Secrets are `SecretString`s: they never reach a log line or a Debug dump.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Registrar's own state: the SQLite store, the git mirror and, on the embedded default,
    /// the GitOps repository itself.
    pub state_dir: PathBuf,
    pub templates_dir: PathBuf,
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
}

/// The web console at `/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Reading and acting need a login: the operator token in the login form, or a trusted
    /// reverse proxy's header. Off only for a console bound to loopback on a workstation.
    pub auth: bool,
    /// A header naming the user, set by a reverse proxy such as oauth2-proxy
    /// (`X-Forwarded-Email`); honoured only from `trusted_proxies`.
    pub proxy_header: Option<String>,
    /// Addresses or CIDRs of the reverse proxies allowed to set `proxy_header`.
    pub trusted_proxies: Vec<String>,
    /// A session lasts this long after login.
    pub session_hours: u64,
    /// Mark the session cookie `Secure` (set when the console is served over TLS, directly
    /// or behind a TLS-terminating ingress).
    pub secure_cookie: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            auth: true,
            proxy_header: None,
            trusted_proxies: vec![],
            session_hours: 12,
            secure_cookie: false,
        }
    }
}

/// What reaches the review queue.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    /// Only machines imported as expected are proposed; others are recorded and shown, never
    /// proposed, so a rogue machine on the provisioning network gets no pull request.
    pub only_expected: bool,
}

/// The Kubernetes cluster Tinkerbell runs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Watch Hardware (known MACs, Tinkerbell's auto discovery). Uses the in-cluster
    /// service account, or KUBECONFIG / ~/.kube/config outside a cluster.
    pub enabled: bool,
    /// The namespace whose Hardware is watched; empty: all namespaces.
    pub watch_namespace: String,
    pub discovery: DiscoveryConfig,
    pub smee_logs: SmeeLogsConfig,
    /// After a merge, the approved Hardware should appear in the cluster (Flux or Argo CD
    /// applies it) within this long; past it the machine shows why it still waits.
    pub handoff_timeout_seconds: u64,
}

/// Follow Smee's logs for MACs it has no Hardware for (Smee logs them in its proxy and
/// auto-proxy DHCP modes only; in reservation mode use DHCP snooping).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmeeLogsConfig {
    pub enabled: bool,
    pub namespace: String,
    /// `app=tinkerbell` for the current chart, `app=smee` for the legacy stack.
    pub label_selector: String,
    /// `tinkerbell` or `smee`.
    pub container: String,
}

impl Default for SmeeLogsConfig {
    fn default() -> Self {
        SmeeLogsConfig {
            enabled: false,
            namespace: "tinkerbell".into(),
            label_selector: "app=tinkerbell".into(),
            container: "tinkerbell".into(),
        }
    }
}

/// Temporary discovery objects for unknown machines (in `tinkerbell.namespace`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    pub enabled: bool,
    /// The discovery Template (`deploy/discovery/template.yaml`).
    pub template: String,
    /// Registrar's URL as a machine on the provisioning network reaches it.
    pub report_url: String,
    /// At most this many machines in discovery at once.
    pub max_machines: usize,
    /// A machine that has not reported this long after its temporary objects were created
    /// loses them (and its report token); its slot goes to the next waiting machine.
    pub ttl_seconds: u64,
    /// How long a machine that reported waits in discovery for its review (the discovery
    /// action's MAX_WAIT_SECONDS, passed to it as `max_wait_seconds`): from its report on,
    /// its token and temporary objects live this long, so the waiting action can always ask.
    pub decision_wait_seconds: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: false,
            template: "registrar-discovery".into(),
            report_url: String::new(),
            max_machines: 20,
            ttl_seconds: 3600,
            decision_wait_seconds: 86_400,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            watch_namespace: String::new(),
            discovery: DiscoveryConfig::default(),
            smee_logs: SmeeLogsConfig::default(),
            handoff_timeout_seconds: 1800,
        }
    }
}

/// The proposal queue's worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Work that failed (forge or remote down) is retried this often; new work starts at once.
    pub retry_seconds: u64,
    /// How often proposals are reconciled with the forge and the repository (unfinished
    /// approvals and rejections carried through, merges done elsewhere noticed).
    pub reconcile_seconds: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            retry_seconds: 10,
            reconcile_seconds: 60,
        }
    }
}

/// Passive DHCP snooping: notices machines by their DHCP requests; never answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpConfig {
    pub enabled: bool,
    /// Where to listen; 0.0.0.0:67 receives broadcast DISCOVERs on every interface.
    pub listen: SocketAddr,
    /// Only this interface (SO_BINDTODEVICE; needs CAP_NET_RAW).
    pub interface: Option<String>,
    /// Capture IPv4 packets to UDP port 67 (AF_PACKET, needs CAP_NET_RAW) instead of binding
    /// the port: also sees requests relayed or unicast to another DHCP server, e.g. on a
    /// mirror port, and needs no free port 67.
    pub capture: bool,
    /// A machine is passed on at most once per window while it keeps asking.
    pub debounce_seconds: u64,
    /// Bounds the debounce memory under a DHCP storm.
    pub max_tracked_macs: usize,
    /// Only PXE, UEFI HTTP boot and iPXE clients.
    pub only_netboot: bool,
    /// OUIs (`3c:ec:ef`) to accept exclusively, and to ignore.
    pub oui_allow: Vec<String>,
    pub oui_deny: Vec<String>,
    /// Only requests relayed from these subnets (by giaddr), e.g. `10.1.0.0/16`.
    pub relay_subnets: Vec<String>,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        DhcpConfig {
            enabled: false,
            listen: "0.0.0.0:67".parse().expect("valid"),
            interface: None,
            capture: false,
            debounce_seconds: 60,
            max_tracked_macs: 65_536,
            only_netboot: false,
            oui_allow: vec![],
            oui_deny: vec![],
            relay_subnets: vec![],
        }
    }
}

impl DhcpConfig {
    pub fn filters(&self) -> anyhow::Result<crate::sources::dhcp::Filters> {
        use crate::sources::dhcp::parse_oui;
        let ouis = |list: &[String]| list.iter().map(|o| parse_oui(o)).collect::<Result<Vec<_>, _>>();
        Ok(crate::sources::dhcp::Filters {
            only_netboot: self.only_netboot,
            oui_allow: ouis(&self.oui_allow).map_err(|e| anyhow::anyhow!("dhcp.oui_allow: {e}"))?,
            oui_deny: ouis(&self.oui_deny).map_err(|e| anyhow::anyhow!("dhcp.oui_deny: {e}"))?,
            relay_subnets: self
                .relay_subnets
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("dhcp.relay_subnets: {e}"))?,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (a big server's `lshw -json` is ~300 KiB).
    pub max_body_bytes: usize,
    /// After SIGTERM, in-flight requests and the current proposal get this long to finish;
    /// then the process exits anyway (everything is persisted before it is acted on, so the
    /// next start resumes it). Keep it below the pod's terminationGracePeriodSeconds.
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Bearer token discovery machines send with reports. Prefer `report_token_file`.
    pub report_token: Option<SecretString>,
    pub report_token_file: Option<PathBuf>,
    /// Bearer token for operators (API and CLI: list, approve, reject).
    pub operator_token: Option<SecretString>,
    pub operator_token_file: Option<PathBuf>,
}

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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForgeConfig {
    /// `local`: proposals are reviewed in Registrar's own API/UI; `github`: as pull requests.
    pub kind: String,
    pub github: GithubConfig,
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
    /// Budgets for mutations, under GitHub's secondary limits (80/minute, 500/hour).
    pub max_mutations_per_minute: usize,
    pub max_mutations_per_hour: usize,
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
            max_mutations_per_minute: 60,
            max_mutations_per_hour: 400,
            budget_minute_ms: 60_000,
            budget_hour_ms: 3_600_000,
            retry_base_ms: 1000,
            reconcile_seconds: 300,
            request_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TinkerbellConfig {
    /// Namespace of rendered objects: `tinkerbell` with the current chart, `tink-system` before.
    pub namespace: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from(".registrar"),
            templates_dir: PathBuf::from("hardware-templates"),
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
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".parse().expect("valid"),
            max_body_bytes: 4 << 20,
            shutdown_grace_seconds: 20,
        }
    }
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
        }
    }
}

impl Default for ForgeConfig {
    fn default() -> Self {
        ForgeConfig {
            kind: "local".into(),
            github: GithubConfig::default(),
        }
    }
}

impl Default for TinkerbellConfig {
    fn default() -> Self {
        TinkerbellConfig {
            namespace: "tinkerbell".into(),
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
                    &mut c.gitops.password_file,
                    &mut g.token_file,
                    &mut g.app_private_key_file,
                    &mut g.webhook_secret_file,
                    &mut g.webhook_previous_secret_file,
                ]
                .into_iter()
                .flatten()
                {
                    *file = base.join(&*file);
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
        if let Some(v) = get("REGISTRAR_GITHUB_TOKEN") {
            self.forge.github.token = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_GITHUB_WEBHOOK_SECRET") {
            self.forge.github.webhook_secret = Some(v.into());
        }
        if let Some(v) = get("REGISTRAR_GITOPS_PASSWORD") {
            self.gitops.password = Some(v.into());
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.ui.auth && !self.server.listen.ip().is_loopback() {
            bail!(
                "ui.auth: false opens the console without a login; it is allowed only with server.listen on loopback (127.0.0.1 or ::1), not {}",
                self.server.listen
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
            other => bail!("forge.kind {other:?} is unknown (known: local, github)"),
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
        if self.server.max_body_bytes < 1024 {
            bail!("server.max_body_bytes must be at least 1024");
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
        if self.gitops.remote.is_empty() {
            format!("file://{}", absolute(&self.state_dir.join("gitops.git")).display())
        } else if self.gitops.remote.contains("://") {
            self.gitops.remote.clone()
        } else {
            format!("file://{}", absolute(Path::new(&self.gitops.remote)).display())
        }
    }

    /// The report and operator tokens: configured, or generated once into the state
    /// directory (mode 0600) so the embedded default is never open.
    pub fn tokens(&self) -> anyhow::Result<Tokens> {
        Ok(Tokens {
            report: resolve_secret(
                &self.auth.report_token,
                &self.auth.report_token_file,
                &self.state_dir.join("report-token"),
            )?,
            operator: resolve_secret(
                &self.auth.operator_token,
                &self.auth.operator_token_file,
                &self.state_dir.join("operator-token"),
            )?,
        })
    }

    pub fn github_token(&self) -> anyhow::Result<SecretString> {
        let g = &self.forge.github;
        match (&g.token, &g.token_file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(f)) => read_secret(f),
            (None, None) => bail!("no GitHub token configured"),
        }
    }

    pub fn github_webhook_secret(&self) -> anyhow::Result<SecretString> {
        let g = &self.forge.github;
        match (&g.webhook_secret, &g.webhook_secret_file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(f)) => read_secret(f),
            (None, None) => bail!("no GitHub webhook secret configured"),
        }
    }

    pub fn github_previous_webhook_secret(&self) -> anyhow::Result<Option<SecretString>> {
        self.forge
            .github
            .webhook_previous_secret_file
            .as_ref()
            .map(|f| read_secret(f))
            .transpose()
    }

    pub fn git_password(&self) -> anyhow::Result<Option<SecretString>> {
        if let Some(p) = &self.gitops.password {
            return Ok(Some(p.clone()));
        }
        if self.forge.kind == "github" && self.gitops.username.is_none() {
            // Git over HTTPS with a GitHub token: user `x-access-token`, the token as password.
            // An App's installation token is fetched at start and refreshed.
            if self.forge.github.app_id.is_some() {
                return Ok(None);
            }
            return self.github_token().map(Some);
        }
        match &self.gitops.password_file {
            Some(f) => Ok(Some(read_secret(f)?)),
            None => Ok(None),
        }
    }
}

#[derive(Clone)]
pub struct Tokens {
    pub report: SecretString,
    pub operator: SecretString,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn read_secret(path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading secret {}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        bail!("secret in {} is shorter than 16 characters", path.display());
    }
    Ok(SecretString::from(token.to_string()))
}

fn resolve_secret(
    value: &Option<SecretString>,
    file: &Option<PathBuf>,
    generated: &Path,
) -> anyhow::Result<SecretString> {
    if let Some(v) = value {
        if v.expose_secret().len() < 16 {
            bail!("tokens must be at least 16 characters");
        }
        return Ok(v.clone());
    }
    if let Some(f) = file {
        return read_secret(f);
    }
    if generated.exists() {
        return read_secret(generated);
    }
    if let Some(dir) = generated.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    write_private(generated, &token)?;
    tracing::info!(path = %generated.display(), "generated a token; read it from this file");
    Ok(SecretString::from(token))
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
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

    #[test]
    fn secrets_do_not_debug_print() {
        let mut c = Config::default();
        c.auth.report_token = Some("super-secret-token-value".to_string().into());
        assert!(!format!("{c:?}").contains("super-secret"));
    }

    #[test]
    fn generated_tokens_are_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config {
            state_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let a = c.tokens().unwrap();
        let b = c.tokens().unwrap();
        assert_eq!(a.report.expose_secret(), b.report.expose_secret());
        assert_ne!(a.report.expose_secret(), a.operator.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("report-token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
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
