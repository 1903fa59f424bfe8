//! Wiring: from a `Config` to a running Registrar. The only place that knows every part.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

mod cluster;
mod discovery;
mod handoff;
pub mod impact;
mod on_premises;
mod pipelines;
pub mod pool_clashes;
mod pools_file;
mod reinventory;

use crate::config::Config;
use crate::domain::KnownMacs;
use crate::metrics::Metrics;
use crate::propose::Proposer;
use crate::propose::forge::github::client::Pacing;
use crate::propose::forge::github::events::GithubHooks;
use crate::propose::forge::github::{GithubAuth, GithubForge};
use crate::propose::forge::hooks::ForgeHooks;
use crate::propose::forge::{Forge, LocalForge};
use crate::propose::git::{self, GitRepo, GitSettings, Password};
use crate::render::Renderer;
use crate::server::{self, AppState, TokenSet};
use crate::shutdown::Shutdown;
use crate::sources::dhcp::{self, Debouncer, Snooper};
use crate::store::Store;
use crate::supervisor::{Readiness, Supervisor};
use cluster::when_leading;
use discovery::DiscoveryQueue;

pub struct App {
    pub config: Config,
    pub proposer: Arc<Proposer>,
    pub state: AppState,
    /// MACs that already have a home; sources skip them.
    pub known: Arc<KnownMacs>,
    dhcp_input: Option<dhcp::listener::Input>,
    kube: Option<kube::Client>,
    /// Every enabled pipeline's readiness, shared with `/readyz`.
    readiness: Arc<Readiness>,
    /// Held while this App lives: no second Registrar on the same state directory.
    _lock: crate::lock::StateLock,
}

/// The configured address pools, checked, with every pool's `match.when` condition compiled
/// by the templates' environment (so a typo stops the start, naming the key).
pub fn checked_pools(
    ipam: &crate::config::ipam::IpamConfig,
    renderer: &Renderer,
) -> anyhow::Result<crate::ipam::Pools> {
    let pools = crate::ipam::Pools::from_config(ipam).map_err(|e| anyhow::anyhow!(e))?;
    for (key, when) in pools.conditions() {
        renderer
            .check_condition(when)
            .map_err(|e| anyhow::anyhow!("{key}: `{when}`: {e}"))?;
    }
    Ok(pools)
}

impl App {
    pub fn build(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
        let lock = crate::lock::StateLock::acquire(&config.state_dir)?;
        crate::domain::set_branch_prefix(&config.gitops.branch_prefix).map_err(anyhow::Error::msg)?;
        let renderer = Renderer::load(&config.templates_dir, &config.tinkerbell.namespace)?;
        let pools = checked_pools(&config.ipam, &renderer)?;
        let store: Arc<dyn Store> = crate::store::open(&config)?;
        if config.gitops.remote.is_empty() {
            let path = config.state_dir.join("gitops.git");
            if git::init_local_remote(&path, &config.gitops.base_branch)? {
                tracing::info!(path = %path.display(), "created the local GitOps repository");
            }
            git::clear_stale_locks(&path)?;
        }
        let github = config.forge.kind == "github";
        let settings = GitSettings {
            remote_url: config.remote_url(),
            base: config.gitops.base_branch.clone(),
            author_name: config.gitops.author_name.clone(),
            author_email: config.gitops.author_email.clone(),
            // GitHub takes a token over HTTPS as the password of `x-access-token`.
            username: config
                .gitops
                .username
                .clone()
                .or_else(|| github.then(|| "x-access-token".to_string()))
                // Forgejo and Gitea take the token as the password of any user name; GitLab
                // of any but a blank one (`oauth2` is the name its documentation uses).
                .or_else(|| (config.forge.kind == "gitea").then(|| "registrar".to_string()))
                .or_else(|| (config.forge.kind == "gitlab").then(|| "oauth2".to_string())),
            password: Password::fixed(config.git_password()?),
            ssh: match (&config.gitops.ssh_key_file, &config.gitops.ssh_known_hosts_file) {
                (Some(key), Some(known_hosts)) if git::ssh::is_ssh(&config.gitops.remote) => {
                    Some(git::ssh::SshSettings::load(&config.gitops.remote, key, known_hosts)?)
                }
                _ => None,
            },
        };
        let git = Arc::new(GitRepo::open(&config.state_dir.join("mirror.git"), settings)?);
        let github_forge = if github {
            let g = &config.forge.github;
            let pacing = Pacing {
                mutation_interval: Duration::from_millis(g.mutation_interval_ms),
                per_minute: g.mutations_per_minute(),
                per_hour: g.mutations_per_hour(),
                minute: Duration::from_millis(g.budget_minute_ms.max(1)),
                hour: Duration::from_millis(g.budget_hour_ms.max(1)),
                retry_base: Duration::from_millis(g.retry_base_ms),
                retry_cap: Duration::from_millis(g.retry_base_ms.saturating_mul(60)),
                max_attempts: 6,
                timeout: Duration::from_millis(g.request_timeout_ms.max(1)),
            };
            let auth = match g.app_id {
                Some(app_id) => {
                    let key = g
                        .app_private_key_file
                        .as_ref()
                        .ok_or_else(|| anyhow::anyhow!("forge.github.app_id needs app_private_key_file"))?;
                    let pem =
                        std::fs::read(key).with_context(|| format!("reading the GitHub App key {}", key.display()))?;
                    let installation_id = g
                        .installation_id
                        .ok_or_else(|| anyhow::anyhow!("forge.github.app_id needs installation_id"))?;
                    GithubAuth::App {
                        app_id,
                        key_pem: pem,
                        installation_id,
                    }
                }
                None => GithubAuth::Token(config.github_token()?),
            };
            Some(Arc::new(
                GithubForge::new(&g.api_url, auth, &g.owner, &g.repo, &config.gitops.base_branch, pacing)?
                    .approving_in_registrar(g.approve_in_registrar),
            ))
        } else {
            None
        };
        let on_premises = on_premises::forge(&config)?;
        let forge: Arc<dyn Forge> = match (&github_forge, &on_premises) {
            (Some(g), _) => g.clone(),
            (None, Some(o)) => o.forge.clone(),
            (None, None) => Arc::new(LocalForge::new(git.clone())),
        };
        let metrics = Arc::new(Metrics::new());
        let tokens = config.tokens()?;
        let known = Arc::new(KnownMacs::default());
        let proposer = Arc::new(
            Proposer::new(
                store,
                Arc::new(renderer),
                git,
                forge.clone(),
                config.gitops.path.clone(),
                metrics.clone(),
            )
            .with_known(known.clone())
            .with_only_expected(config.discovery.only_expected)
            .with_max_open(config.discovery.max_open_proposals)
            .with_auto_approve(config.discovery.auto_approve == crate::config::AutoApprove::Expected)
            .with_groups(config.discovery.group_by, config.discovery.group_size)
            .with_bmc_networks(config.discovery.bmc_networks.clone())
            .with_pools(pools)
            .awaiting_pools(
                (config.ipam.file.as_ref()).map(|f| format!("{f} on the base branch {}", config.gitops.base_branch)),
            )
            .with_queue(
                config.queue.concurrency,
                Duration::from_secs(config.queue.retry_seconds.max(1)),
                Duration::from_secs(config.queue.retry_max_seconds.max(1)),
            ),
        );
        let hooks = match github_forge {
            Some(f) => Some(Arc::new(
                GithubHooks::new(proposer.clone(), f, config.github_webhook_secret()?)
                    .with_previous_secret(config.github_previous_webhook_secret()?)
                    .with_templates_path(config.gitops.templates_path.clone()),
            )),
            None => None,
        };
        let forge_hooks =
            on_premises.map(|o| Arc::new(ForgeHooks::new(proposer.clone(), o.forge, o.deliveries, &o.repo)));
        let readiness = Arc::new(Readiness::default());
        let state = AppState {
            forge_hooks,
            known: known.clone(),
            github: hooks,
            proposer: proposer.clone(),
            metrics,
            tokens: Arc::new(TokenSet::new(
                config.auth.shared_report_token.then_some(&tokens.report),
                &tokens.operator,
                tokens.metrics.as_ref(),
                tokens.snoop.as_ref(),
                &tokens.people,
            )?),
            max_body_bytes: config.server.max_body_bytes,
            forge_kind: forge.kind(),
            console: Arc::new(crate::server::console::Console::new(
                &config.ui,
                &config.auth,
                config.cluster.enabled,
                &config.templates_dir,
            )?),
            shutdown: None,
            decision_wait: chrono::Duration::seconds(config.cluster.discovery.decision_wait_seconds as i64),
            sightings: None,
            follows_cluster: config.cluster.enabled,
            readiness: readiness.clone(),
        };
        // Bound here, so a port that cannot be bound stops the start with a clear error.
        let dhcp_input = match config.dhcp.enabled {
            true => Some(dhcp::listener::open(&config.dhcp)?),
            false => None,
        };
        Ok(App {
            config,
            proposer,
            state,
            known,
            dhcp_input,
            kube: None,
            readiness,
            _lock: lock,
        })
    }

    /// Talks to this cluster (a test's API server, say) instead of the configured one.
    pub fn with_kube_client(mut self, client: kube::Client) -> Self {
        self.kube = Some(client);
        self
    }

    /// Snoops DHCP on an already bound socket (one made in another network namespace, say).
    pub fn with_dhcp_socket(self, socket: std::net::UdpSocket) -> Self {
        self.with_dhcp_input(dhcp::listener::Input::Socket(socket))
    }

    /// Snoops DHCP from an already opened socket or capture.
    pub fn with_dhcp_input(mut self, input: dhcp::listener::Input) -> Self {
        self.dhcp_input = Some(input);
        self
    }

    /// Serves until `shutdown` fires. Every pipeline the configuration enables runs under
    /// one supervisor beside the HTTP server, which stops taking requests at shutdown and
    /// then waits for the pipelines.
    pub async fn serve(self, listener: TcpListener, stop_serving: Shutdown) -> anyhow::Result<()> {
        let retry = Duration::from_secs(self.config.queue.retry_seconds.max(1));
        let reconcile = Duration::from_secs(self.config.queue.reconcile_seconds.max(1));
        // Everything inside stops when the caller says so, or when this replica lost the
        // Lease it led by: then it must stop working the queue at once.
        let (stop_everything, shutdown) = crate::shutdown::channel();
        let supervisor = Supervisor::new(shutdown.clone(), self.readiness.clone(), self.state.metrics.clone());
        let readiness = self.readiness.clone();
        let kube = match (self.kube.clone(), self.config.cluster.enabled) {
            (Some(c), _) => Some(c),
            (None, true) => Some(
                kube::Client::try_default()
                    .await
                    .context("connecting to the Kubernetes API (in-cluster service account or KUBECONFIG)")?,
            ),
            (None, false) => None,
        };
        let (leadership, campaign) = self.elect(kube.as_ref(), &supervisor)?;
        self.proposer.set_leadership(leadership.clone());
        let lost = Arc::new(std::sync::Mutex::new(None::<String>));
        {
            let (leadership, lost) = (leadership.clone(), lost.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop_serving.wait() => {}
                    why = leadership.lost() => {
                        tracing::error!(reason = %why, "lost the leader Lease: stopping, to stand by after a restart");
                        *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    }
                }
                stop_everything.fire();
            });
        }

        if let Some(hooks) = &self.state.github {
            // A GitHub App's installation token is what git fetches and pushes with: have one
            // before the first fetch. Bounded, so an unreachable GitHub delays nothing; the
            // forge pipeline keeps trying and shows why in /readyz.
            let timeout = Duration::from_millis(self.config.forge.github.request_timeout_ms.max(1));
            match tokio::time::timeout(timeout, pipelines::refresh_git_token(hooks)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "no GitHub App installation token yet"),
                Err(_) => tracing::warn!("no GitHub App installation token yet: GitHub did not answer in time"),
            }
        }
        if let Some(hooks) = self
            .state
            .github
            .as_ref()
            .filter(|_| self.config.forge.github.dashboard)
        {
            let dashboard = Arc::new(crate::propose::forge::github::dashboard::Dashboard::new(
                hooks.forge.clone(),
                self.proposer.store().clone(),
                self.config.forge.github.dashboard_title.clone(),
                self.config.discovery.max_open_proposals,
            ));
            let (ready, stop, lead) = (readiness.clone(), shutdown.clone(), leadership.clone());
            supervisor.spawn("dashboard", move || {
                let (dashboard, ready, stop, lead) = (dashboard.clone(), ready.clone(), stop.clone(), lead.clone());
                async move {
                    if !when_leading(&lead, &ready, "dashboard", &stop).await {
                        return Ok(());
                    }
                    dashboard.run(ready, stop).await
                }
            });
        }
        if let Some(notifier) = crate::notify::Notifier::from_config(&self.config, self.proposer.store().clone())? {
            let notifier = Arc::new(notifier);
            let (ready, stop, lead) = (readiness.clone(), shutdown.clone(), leadership.clone());
            supervisor.spawn("notify", move || {
                let (notifier, ready, stop, lead) = (notifier.clone(), ready.clone(), stop.clone(), lead.clone());
                async move {
                    if !when_leading(&lead, &ready, "notify", &stop).await {
                        return Ok(());
                    }
                    notifier.run(ready, stop).await
                }
            });
        }
        // Pools that would hand out addresses Hardware on the base branch already holds stop
        // the start: nothing runs half-configured.
        pool_clashes::check_at_start(&self.proposer, &self.proposer.pools()).await?;
        let proposer = self.proposer.clone();
        let stop = shutdown.clone();
        let (ready, lead) = (readiness.clone(), leadership.clone());
        supervisor.spawn("proposals", move || {
            let (proposer, stop, ready, lead) = (proposer.clone(), stop.clone(), ready.clone(), lead.clone());
            async move {
                if !when_leading(&lead, &ready, "proposals", &stop).await {
                    return Ok(());
                }
                ready.ready("proposals", "working the proposal queue");
                proposer.run(retry, reconcile, stop).await;
                Ok(())
            }
        });
        if self.config.discovery.group_by != crate::domain::GroupBy::None {
            let (proposer, stop, ready) = (self.proposer.clone(), shutdown.clone(), readiness.clone());
            let lead = leadership.clone();
            supervisor.spawn("groups", move || {
                let (proposer, stop, ready, lead) = (proposer.clone(), stop.clone(), ready.clone(), lead.clone());
                async move {
                    if !when_leading(&lead, &ready, "groups", &stop).await {
                        return Ok(());
                    }
                    ready.ready("groups", "pushing grouped proposals");
                    proposer.run_groups(retry, stop).await;
                    Ok(())
                }
            });
        }
        let (proposer, stop, lead) = (self.proposer.clone(), shutdown.clone(), leadership.clone());
        supervisor.spawn_once("adopt", async move {
            tokio::select! {
                _ = lead.wait() => pipelines::adopt_orphans(proposer, retry, stop).await,
                _ = stop.wait() => Ok(()),
            }
        });

        let (proposer, known, metrics, stop, ready) = (
            self.proposer.clone(),
            self.known.clone(),
            self.state.metrics.clone(),
            shutdown.clone(),
            readiness.clone(),
        );
        // The whole repository: a Hardware or BMC declared anywhere in the operator's
        // layout registers its machine, its name and its BMC.
        let dir = String::new();
        let pools_file = self.config.ipam.file.clone();
        supervisor.spawn("gitops", move || {
            pipelines::index_gitops(
                proposer.clone(),
                known.clone(),
                metrics.clone(),
                dir.clone(),
                pools_file.clone(),
                ready.clone(),
                stop.clone(),
            )
        });

        let discovery = match &kube {
            Some(client) => self.start_cluster(&supervisor, client.clone(), &leadership),
            None => None,
        };

        if let Some(hooks) = self.state.github.clone() {
            let every = Duration::from_secs(self.config.forge.github.reconcile_seconds.max(1));
            let (stop, ready, lead) = (shutdown.clone(), readiness.clone(), leadership.clone());
            supervisor.spawn("forge", move || {
                let (hooks, ready, stop, lead) = (hooks.clone(), ready.clone(), stop.clone(), lead.clone());
                async move {
                    if !when_leading(&lead, &ready, "forge", &stop).await {
                        return Ok(());
                    }
                    pipelines::run_github(hooks, every, ready, stop).await
                }
            });
        }
        let mut app = self;
        if app.config.dhcp.enabled || app.dhcp_input.is_some() {
            start_dhcp(
                &supervisor,
                app.config.dhcp.clone(),
                app.dhcp_input.take(),
                app.proposer.clone(),
                app.known.clone(),
                app.state.metrics.clone(),
                discovery.clone(),
            );
        }

        let grace = Duration::from_secs(app.config.server.shutdown_grace_seconds.max(1));
        let mut state = app.state;
        // Sightings `registrar snoop` forwards from the provisioning network's node are
        // recorded the way the in-process listener's are.
        if app.config.snoop_token()?.is_some() {
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            let (proposer, metrics) = (app.proposer.clone(), state.metrics.clone());
            supervisor.spawn_once("forwarded-sightings", async move {
                pipelines::record_sightings(proposer, metrics, discovery, rx).await;
                Ok(())
            });
            state.sightings = Some(tx);
        }
        state.shutdown = Some(shutdown.clone());
        // A cluster handed in (a test's API server) is followed like a configured one.
        state.follows_cluster = kube.is_some();
        let router = server::router(state);
        let stop = shutdown.clone();
        // The peer address decides whether a proxy's user header is trusted.
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.wait().await })
        .await?;
        if !supervisor.wait(grace).await {
            tracing::warn!("some pipelines did not stop within the grace period");
        }
        if let Some(campaign) = campaign {
            campaign.end().await;
        }
        if let Some(why) = lost.lock().unwrap_or_else(|p| p.into_inner()).take() {
            anyhow::bail!("stopped: {why}");
        }
        Ok(())
    }
}

/// DHCP snooping: the socket or capture opened at build (so a port that cannot be bound stops
/// the start), opened again from the configuration if the listener fails later.
fn start_dhcp(
    supervisor: &Supervisor,
    config: crate::config::DhcpConfig,
    opened: Option<dhcp::listener::Input>,
    proposer: Arc<Proposer>,
    known: Arc<KnownMacs>,
    metrics: Arc<Metrics>,
    discovery: Option<Arc<DiscoveryQueue>>,
) {
    let opened = Arc::new(std::sync::Mutex::new(opened));
    let (stop, ready) = (supervisor.shutdown().clone(), supervisor.readiness().clone());
    supervisor.spawn("dhcp", move || {
        let (config, opened, proposer, known, metrics, discovery, stop, ready) = (
            config.clone(),
            opened.clone(),
            proposer.clone(),
            known.clone(),
            metrics.clone(),
            discovery.clone(),
            stop.clone(),
            ready.clone(),
        );
        async move {
            let reused = opened.lock().unwrap_or_else(|p| p.into_inner()).take();
            let input = match reused {
                Some(input) => input,
                None => dhcp::listener::open(&config)?,
            };
            let snooper = Snooper::new(
                config.filters()?,
                Debouncer::new(
                    Duration::from_secs(config.debounce_seconds),
                    config.max_tracked_macs,
                    std::time::Instant::now(),
                ),
                known,
            );
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let consumer = tokio::spawn(pipelines::record_sightings(proposer, metrics.clone(), discovery, rx));
            ready.ready("dhcp", "listening (receive only)");
            let result = dhcp::listener::run(input, snooper, tx, metrics, stop).await;
            consumer.abort();
            result
        }
    });
}
