//! Wiring: from a `Config` to a running Registrar. The only place that knows every part.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::propose::Proposer;
use crate::propose::forge::{Forge, LocalForge};
use crate::propose::git::{self, GitRepo, GitSettings};
use crate::render::Renderer;
use crate::server::{self, AppState, TokenSet};
use crate::shutdown::Shutdown;
use crate::store::{SqliteStore, Store};

pub struct App {
    pub config: Config,
    pub proposer: Arc<Proposer>,
    pub state: AppState,
}

impl App {
    pub fn build(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.state_dir).with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
        let renderer = Renderer::load(&config.templates_dir, &config.tinkerbell.namespace)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.state_dir.join("registrar.db"))?);
        if config.gitops.remote.is_empty() {
            let path = config.state_dir.join("gitops.git");
            if git::init_local_remote(&path, &config.gitops.base_branch)? {
                tracing::info!(path = %path.display(), "created the local GitOps repository");
            }
        }
        let settings = GitSettings {
            remote_url: config.remote_url(),
            base: config.gitops.base_branch.clone(),
            author_name: config.gitops.author_name.clone(),
            author_email: config.gitops.author_email.clone(),
            username: config.gitops.username.clone(),
            password: config.git_password()?,
        };
        let git = Arc::new(GitRepo::open(&config.state_dir.join("mirror.git"), settings)?);
        let forge: Arc<dyn Forge> = Arc::new(LocalForge::new(git.clone()));
        let metrics = Arc::new(Metrics::new());
        let tokens = config.tokens()?;
        let proposer = Arc::new(Proposer::new(store, Arc::new(renderer), git, forge.clone(), config.gitops.path.clone(), metrics.clone()));
        let state = AppState {
            proposer: proposer.clone(),
            metrics,
            tokens: Arc::new(TokenSet::new(&tokens.report, &tokens.operator)),
            max_body_bytes: config.server.max_body_bytes,
            forge_kind: forge.kind(),
        };
        Ok(App { config, proposer, state })
    }

    /// Serves until `shutdown` fires; the proposal worker runs beside the server.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let worker = tokio::spawn(self.proposer.clone().run(Duration::from_secs(10), shutdown.clone()));
        let router = server::router(self.state);
        let stop = shutdown.clone();
        axum::serve(listener, router).with_graceful_shutdown(async move { stop.wait().await }).await?;
        let _ = worker.await;
        Ok(())
    }
}
