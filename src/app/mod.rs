//! Wiring: from a `Config` to a running Registrar. The only place that knows every part.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::domain::{KnownMacs, Mac, Sighting, Source};
use crate::metrics::Metrics;
use crate::propose::Proposer;
use crate::propose::forge::github::client::Pacing;
use crate::propose::forge::github::events::GithubHooks;
use crate::propose::forge::github::{GithubAuth, GithubForge};
use crate::propose::forge::{Forge, LocalForge};
use crate::propose::git::{self, GitRepo, GitSettings, Password};
use crate::propose::index::manifest_dir;
use crate::render::Renderer;
use crate::server::{self, AppState, TokenSet};
use crate::shutdown::Shutdown;
use crate::sources::dhcp::{self, Debouncer, Snooper};
use crate::store::{SqliteStore, Store};

pub struct App {
    pub config: Config,
    pub proposer: Arc<Proposer>,
    pub state: AppState,
    /// MACs that already have a home; sources skip them.
    pub known: Arc<KnownMacs>,
    dhcp_input: Option<dhcp::listener::Input>,
    kube: Option<kube::Client>,
    /// Held while this App lives: no second Registrar on the same state directory.
    _lock: crate::lock::StateLock,
}

impl App {
    pub fn build(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
        let lock = crate::lock::StateLock::acquire(&config.state_dir)?;
        let renderer = Renderer::load(&config.templates_dir, &config.tinkerbell.namespace)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.state_dir.join("registrar.db"))?);
        if config.gitops.remote.is_empty() {
            let path = config.state_dir.join("gitops.git");
            if git::init_local_remote(&path, &config.gitops.base_branch)? {
                tracing::info!(path = %path.display(), "created the local GitOps repository");
            }
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
                .or_else(|| github.then(|| "x-access-token".to_string())),
            password: Password::fixed(config.git_password()?),
        };
        let git = Arc::new(GitRepo::open(&config.state_dir.join("mirror.git"), settings)?);
        let github_forge = if github {
            let g = &config.forge.github;
            let pacing = Pacing {
                mutation_interval: Duration::from_millis(g.mutation_interval_ms),
                per_minute: g.max_mutations_per_minute,
                per_hour: g.max_mutations_per_hour,
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
            Some(Arc::new(GithubForge::new(
                &g.api_url,
                auth,
                &g.owner,
                &g.repo,
                &config.gitops.base_branch,
                pacing,
            )?))
        } else {
            None
        };
        let forge: Arc<dyn Forge> = match &github_forge {
            Some(g) => g.clone(),
            None => Arc::new(LocalForge::new(git.clone())),
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
            .with_only_expected(config.discovery.only_expected),
        );
        let hooks = match github_forge {
            Some(f) => Some(Arc::new(
                GithubHooks::new(proposer.clone(), f, config.github_webhook_secret()?)
                    .with_previous_secret(config.github_previous_webhook_secret()?),
            )),
            None => None,
        };
        let state = AppState {
            known: known.clone(),
            github: hooks,
            proposer: proposer.clone(),
            metrics,
            tokens: Arc::new(TokenSet::new(&tokens.report, &tokens.operator)),
            max_body_bytes: config.server.max_body_bytes,
            forge_kind: forge.kind(),
            console: Arc::new(crate::server::console::Console::new(
                &config.ui,
                config.cluster.enabled,
            )?),
            shutdown: None,
        };
        // Bound here, so a port that cannot be bound stops the start with a clear error.
        let dhcp_input = match (config.dhcp.enabled, config.dhcp.capture) {
            (false, _) => None,
            (true, false) => Some(dhcp::listener::Input::Socket(dhcp::listener::bind(
                config.dhcp.listen,
                config.dhcp.interface.as_deref(),
            )?)),
            #[cfg(target_os = "linux")]
            (true, true) => Some(dhcp::listener::Input::Capture(dhcp::listener::capture(
                config.dhcp.interface.as_deref(),
            )?)),
            #[cfg(not(target_os = "linux"))]
            (true, true) => anyhow::bail!("dhcp.capture needs Linux (AF_PACKET)"),
        };
        Ok(App {
            config,
            proposer,
            state,
            known,
            dhcp_input,
            kube: None,
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

    /// Serves until `shutdown` fires; the proposal worker runs beside the server.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let worker = tokio::spawn(self.proposer.clone().run(
            Duration::from_secs(self.config.queue.retry_seconds.max(1)),
            shutdown.clone(),
        ));
        tokio::spawn(adopt_orphans(
            self.proposer.clone(),
            Duration::from_secs(self.config.queue.retry_seconds.max(1)),
            shutdown.clone(),
        ));
        tokio::spawn(index_gitops(
            self.proposer.clone(),
            self.known.clone(),
            self.state.metrics.clone(),
            manifest_dir(&self.config.gitops.path).to_string(),
            shutdown.clone(),
        ));
        let kube = match (self.kube, self.config.cluster.enabled) {
            (Some(c), _) => Some(c),
            (None, true) => Some(
                kube::Client::try_default()
                    .await
                    .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?,
            ),
            (None, false) => None,
        };
        let mut discovery = None;
        if let Some(client) = kube {
            let cluster = crate::cluster::Cluster::new(client.clone(), &self.config.tinkerbell.namespace);
            self.proposer.set_cluster(cluster.clone());
            tokio::spawn(follow_provisioning(
                self.proposer.clone(),
                cluster,
                self.config.tinkerbell.namespace.clone(),
                shutdown.clone(),
            ));
            let d = &self.config.cluster.discovery;
            if d.enabled {
                let settings = crate::cluster::discovery::DiscoverySettings {
                    namespace: self.config.tinkerbell.namespace.clone(),
                    template: d.template.clone(),
                    report_url: d.report_url.clone(),
                    max_machines: d.max_machines,
                    ttl: chrono::Duration::seconds(d.ttl_seconds as i64),
                };
                let disc = Arc::new(crate::cluster::discovery::Discovery::new(client.clone(), settings));
                tokio::spawn(sweep_discovery(self.proposer.clone(), disc.clone(), shutdown.clone()));
                discovery = Some(disc);
            }
            let sl = &self.config.cluster.smee_logs;
            if sl.enabled {
                let settings = crate::cluster::smee_logs::SmeeLogs {
                    namespace: sl.namespace.clone(),
                    label_selector: sl.label_selector.clone(),
                    container: sl.container.clone(),
                };
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                tokio::spawn(crate::cluster::smee_logs::follow(
                    client.clone(),
                    settings,
                    tx,
                    shutdown.clone(),
                ));
                tokio::spawn(record_smee(
                    self.proposer.clone(),
                    self.known.clone(),
                    discovery.clone(),
                    rx,
                ));
            }
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let ns = Some(self.config.cluster.watch_namespace.clone()).filter(|n| !n.is_empty());
            tokio::spawn(crate::cluster::hardware::watch(
                client,
                ns,
                self.known.clone(),
                tx,
                self.state.metrics.cluster_watch_up.clone(),
                shutdown.clone(),
            ));
            tokio::spawn(record_discovered(self.proposer.clone(), rx));
        }
        if let Some(hooks) = self.state.github.clone() {
            // An App's installation token is what git pushes with: have one before the first push.
            refresh_git_token(&hooks).await;
            tokio::spawn(run_github(
                hooks,
                Duration::from_secs(self.config.forge.github.reconcile_seconds.max(1)),
                shutdown.clone(),
            ));
        }
        if let Some(input) = self.dhcp_input {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let d = &self.config.dhcp;
            let snooper = Snooper::new(
                d.filters()?,
                Debouncer::new(
                    Duration::from_secs(d.debounce_seconds),
                    d.max_tracked_macs,
                    std::time::Instant::now(),
                ),
                self.known.clone(),
            );
            let metrics = self.state.metrics.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = dhcp::listener::run(input, snooper, tx, metrics, stop).await {
                    tracing::error!(error = %e, "DHCP snooping stopped");
                }
            });
            tokio::spawn(record_sightings(
                self.proposer.clone(),
                self.state.metrics.clone(),
                discovery.clone(),
                rx,
            ));
        }
        let mut state = self.state;
        state.shutdown = Some(shutdown.clone());
        let router = server::router(state);
        let stop = shutdown.clone();
        // The peer address decides whether a proxy's user header is trusted.
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.wait().await })
        .await?;
        let _ = worker.await;
        Ok(())
    }
}

/// Once per start: proposals whose branches outlived the store (a lost volume) come back.
/// Retried until the remote and the forge answer.
async fn adopt_orphans(proposer: Arc<Proposer>, retry: Duration, shutdown: Shutdown) {
    loop {
        match proposer.adopt_orphan_branches().await {
            Ok(0) => return,
            Ok(n) => {
                tracing::info!(
                    adopted = n,
                    "rebuilt the store's record of proposals from their branches"
                );
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not look for proposals the store lost; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Keeps the known-MAC set in step with the GitOps base branch, re-reading the manifests
/// only when their directory's tree changed.
async fn index_gitops(
    proposer: Arc<Proposer>,
    known: Arc<KnownMacs>,
    metrics: Arc<crate::metrics::Metrics>,
    dir: String,
    shutdown: Shutdown,
) {
    let mut last = None;
    loop {
        let (git, d) = (proposer.git().clone(), dir.clone());
        let result = tokio::task::spawn_blocking(move || {
            git.fetch()?;
            git.registered_macs(&d, last)
        })
        .await;
        match result {
            Ok(Ok(Some((tree, macs)))) => {
                tracing::debug!(count = macs.len(), "indexed MACs on the base branch");
                known.replace("gitops", macs);
                metrics.known_macs.set(known.len() as i64);
                last = Some(tree);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not index the GitOps base branch"),
            Err(e) => tracing::warn!(error = %e, "GitOps index task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Stores what the DHCP listener saw; one log line per machine it had never seen.
async fn record_sightings(
    proposer: Arc<Proposer>,
    metrics: Arc<crate::metrics::Metrics>,
    discovery: Option<Arc<crate::cluster::discovery::Discovery>>,
    mut rx: tokio::sync::mpsc::Receiver<(Mac, Sighting)>,
) {
    while let Some((mac, sighting)) = rx.recv().await {
        let store = proposer.store().clone();
        let s = sighting.clone();
        match tokio::task::spawn_blocking(move || {
            store.record_detection(mac, Source::Dhcp, Some(&s), chrono::Utc::now())
        })
        .await
        {
            Ok(Ok(recorded)) => {
                if recorded.new {
                    metrics.dhcp_new_macs.inc();
                    tracing::info!(
                        %mac,
                        arch = sighting.arch.as_deref().unwrap_or("unknown"),
                        uefi = ?sighting.uefi,
                        netboot = sighting.netboot,
                        location = sighting.location().as_deref().unwrap_or("direct"),
                        "new machine seen by DHCP"
                    );
                }
                if recorded.queued {
                    proposer.wake();
                }
                maybe_discover(&proposer, discovery.as_deref(), &recorded.machine).await;
            }
            Ok(Err(e)) => tracing::warn!(%mac, error = %e, "could not record a DHCP sighting"),
            Err(e) => tracing::warn!(%mac, error = %e, "DHCP sighting task failed"),
        }
    }
}

async fn refresh_git_token(hooks: &GithubHooks) {
    match hooks.forge.installation_token().await {
        Ok(Some(token)) => hooks.proposer.git().set_password(token),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not get a GitHub App installation token for git"),
    }
}

/// Creates the labels Registrar uses, then reconciles pull requests periodically, and keeps
/// a GitHub App's git token fresh (they expire after an hour).
async fn run_github(hooks: Arc<GithubHooks>, every: Duration, shutdown: Shutdown) {
    let mut labels_done = false;
    let mut token_at = std::time::Instant::now();
    loop {
        if token_at.elapsed() > Duration::from_secs(40 * 60) {
            refresh_git_token(&hooks).await;
            token_at = std::time::Instant::now();
        }
        if !labels_done {
            match hooks.forge.ensure_labels(hooks.proposer.renderer().workflows()).await {
                Ok(()) => labels_done = true,
                Err(e) => tracing::warn!(error = %e, "could not create Registrar's labels; retrying"),
            }
        }
        match hooks.reconcile().await {
            Ok(n) => tracing::debug!(pull_requests = n, "reconciled with GitHub"),
            Err(e) => tracing::warn!(error = %e, "reconcile with GitHub failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Stores what the Hardware watch noticed: auto-discovered machines as reports, and
/// approved machines whose Hardware is now in the cluster as applied.
async fn record_discovered(
    proposer: Arc<Proposer>,
    mut rx: tokio::sync::mpsc::Receiver<crate::cluster::hardware::Noticed>,
) {
    use crate::cluster::hardware::Noticed;
    while let Some(noticed) = rx.recv().await {
        let (mac, facts) = match noticed {
            Noticed::Discovered(mac, facts) => (mac, facts),
            Noticed::Registered { macs, hardware } => {
                for mac in macs {
                    mark_applied(&proposer, mac, &hardware).await;
                }
                continue;
            }
        };
        let store = proposer.store().clone();
        match tokio::task::spawn_blocking(move || {
            store.record_facts(mac, Source::AutoDiscovery, &facts, chrono::Utc::now())
        })
        .await
        {
            Ok(Ok(r)) => {
                if r.new {
                    tracing::info!(%mac, "machine found by Tinkerbell's auto discovery");
                }
                if r.queued {
                    proposer.wake();
                }
            }
            Ok(Err(e)) => tracing::warn!(%mac, error = %e, "could not record an auto-discovered machine"),
            Err(e) => tracing::warn!(%mac, error = %e, "auto discovery task failed"),
        }
    }
}

async fn mark_applied(proposer: &Arc<Proposer>, mac: Mac, hardware: &str) {
    let store = proposer.store().clone();
    let cause = format!("Hardware {hardware} is in the cluster");
    let result = tokio::task::spawn_blocking(move || -> Result<bool, crate::store::StoreError> {
        match store.machine(mac)? {
            Some(m) if m.state == crate::domain::State::Approved => {
                store.transition(
                    mac,
                    crate::domain::State::Applied,
                    &cause,
                    "registrar",
                    chrono::Utc::now(),
                )?;
                Ok(true)
            }
            _ => Ok(false),
        }
    })
    .await;
    match result {
        Ok(Ok(true)) => {
            tracing::info!(%mac, %hardware, "approved machine applied");
            // The safety net: its discovery objects must not outlive the real Hardware.
            proposer.remove_discovery_objects(mac).await;
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::warn!(%mac, error = %e, "could not record an applied machine"),
        Err(e) => tracing::warn!(%mac, error = %e, "applied-machine task failed"),
    }
}

/// Boots a machine into discovery when discovery is on and the machine is merely detected
/// (no facts yet, not suppressed). Shared by every source that notices machines.
async fn maybe_discover(
    proposer: &Arc<Proposer>,
    discovery: Option<&crate::cluster::discovery::Discovery>,
    m: &crate::domain::Machine,
) {
    let Some(d) = discovery else { return };
    if m.state != crate::domain::State::Detected || m.facts.is_some() || m.suppressed {
        return;
    }
    let seen = m.sighting.clone().unwrap_or_default();
    if let Err(e) = begin_discovery(proposer, d, m.mac, &seen).await {
        tracing::warn!(mac = %m.mac, error = %e, "could not create discovery objects");
    }
}

/// Boots an unknown machine into discovery: a per-machine token (stored, as a hash, before
/// anything is created), then the temporary Hardware and Workflow.
async fn begin_discovery(
    proposer: &Arc<Proposer>,
    discovery: &crate::cluster::discovery::Discovery,
    mac: Mac,
    sighting: &Sighting,
) -> anyhow::Result<()> {
    if discovery.count().await? >= discovery.settings().max_machines {
        tracing::info!(%mac, "discovery is at its limit of machines; this one waits");
        return Ok(());
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    let expires = chrono::Utc::now() + discovery.settings().ttl;
    let (store, hash) = (proposer.store().clone(), crate::server::digest_hex(&token));
    tokio::task::spawn_blocking(move || store.add_report_token(mac, &hash, expires)).await??;
    discovery.create(&mac, Some(sighting), &token, expires).await?;
    let store = proposer.store().clone();
    tokio::task::spawn_blocking(move || {
        if store
            .machine(mac)?
            .is_some_and(|m| m.state == crate::domain::State::Detected)
        {
            store.transition(
                mac,
                crate::domain::State::Discovering,
                "discovery objects created",
                "registrar",
                chrono::Utc::now(),
            )?;
        }
        Ok::<_, crate::store::StoreError>(())
    })
    .await??;
    tracing::info!(%mac, "booting into discovery");
    Ok(())
}

/// Removes discovery objects past their time to live; the machine goes back to detected.
async fn sweep_discovery(
    proposer: Arc<Proposer>,
    discovery: Arc<crate::cluster::discovery::Discovery>,
    shutdown: Shutdown,
) {
    let every = (discovery.settings().ttl / 10)
        .to_std()
        .unwrap_or(Duration::from_secs(60))
        .clamp(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return,
        }
        let expired = match discovery.expired(chrono::Utc::now()).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "could not list discovery objects");
                continue;
            }
        };
        for mac in expired {
            if let Err(e) = discovery.remove(&mac).await {
                tracing::warn!(%mac, error = %e, "could not remove expired discovery objects");
                continue;
            }
            let store = proposer.store().clone();
            let _ = tokio::task::spawn_blocking(move || {
                if store
                    .machine(mac)?
                    .is_some_and(|m| m.state == crate::domain::State::Discovering)
                {
                    store.transition(
                        mac,
                        crate::domain::State::Detected,
                        "discovery expired without a report",
                        "registrar",
                        chrono::Utc::now(),
                    )?;
                }
                Ok::<_, crate::store::StoreError>(())
            })
            .await;
            tracing::info!(%mac, "discovery expired");
        }
    }
}

/// Follows applied machines' provisioning Workflows (named like their Hardware) to
/// provisioned, or failed with the reason. Polled: few machines are provisioning at once.
async fn follow_provisioning(
    proposer: Arc<Proposer>,
    cluster: crate::cluster::Cluster,
    namespace: String,
    shutdown: Shutdown,
) {
    use crate::cluster::{Provisioning, provisioning_of};
    use crate::domain::State;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.wait() => return,
        }
        let store = proposer.store().clone();
        let applied = tokio::task::spawn_blocking(move || {
            store.machines(&crate::store::MachineQuery {
                state: Some(State::Applied),
                limit: 1000,
                ..Default::default()
            })
        })
        .await;
        let Ok(Ok(applied)) = applied else { continue };
        for m in applied {
            let Some(name) = m.name.clone() else { continue };
            let workflow = match cluster.workflow(&name).await {
                Ok(Some(w)) => w,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(mac = %m.mac, error = %e, "could not read the provisioning Workflow");
                    continue;
                }
            };
            let (to, cause) = match provisioning_of(&workflow) {
                Provisioning::Running => continue,
                Provisioning::Succeeded => (State::Provisioned, format!("Workflow {namespace}/{name} succeeded")),
                Provisioning::Failed(why) => (State::Failed, format!("Workflow {namespace}/{name} failed: {why}")),
            };
            let store = proposer.store().clone();
            let mac = m.mac;
            match tokio::task::spawn_blocking(move || {
                store.transition(mac, to, &cause, "registrar", chrono::Utc::now())
            })
            .await
            {
                Ok(Ok(_)) => tracing::info!(%mac, state = %to, "provisioning finished"),
                Ok(Err(e)) => tracing::warn!(%mac, error = %e, "could not record provisioning"),
                Err(e) => tracing::warn!(%mac, error = %e, "provisioning task failed"),
            }
        }
    }
}

/// Stores the machines Smee could not find Hardware for, debounced per MAC.
async fn record_smee(
    proposer: Arc<Proposer>,
    known: Arc<KnownMacs>,
    discovery: Option<Arc<crate::cluster::discovery::Discovery>>,
    mut rx: tokio::sync::mpsc::Receiver<Mac>,
) {
    let mut debounce = Debouncer::new(Duration::from_secs(60), 65_536, std::time::Instant::now());
    while let Some(mac) = rx.recv().await {
        if !debounce.admit(mac, std::time::Instant::now()) || known.contains(&mac) {
            continue;
        }
        let store = proposer.store().clone();
        match tokio::task::spawn_blocking(move || store.record_detection(mac, Source::Smee, None, chrono::Utc::now()))
            .await
        {
            Ok(Ok(recorded)) => {
                if recorded.new {
                    tracing::info!(%mac, "new machine in Smee's log");
                }
                maybe_discover(&proposer, discovery.as_deref(), &recorded.machine).await;
            }
            Ok(Err(e)) => tracing::warn!(%mac, error = %e, "could not record a machine from Smee's log"),
            Err(e) => tracing::warn!(%mac, error = %e, "Smee log task failed"),
        }
    }
}
