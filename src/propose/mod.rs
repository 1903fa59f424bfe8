//! The proposal queue: brings each machine's latest facts to git and the forge.
//!
//! Order of effects, so that a crash anywhere converges: (1) the store already holds the
//! facts and a revision to sync; (2) render; (3) publish the branch (a no-op when it holds
//! this content); (4) open or update the proposal on the forge (idempotent); (5) mark the
//! revision synced. Reviews run the same way: intent first, then git, then the record.

pub mod addresses;
mod adopt;
pub mod auto_approve;
mod change;
pub mod forge;
pub mod git;
mod groups;
pub mod impact;
mod import;
pub mod index;
mod intent;
mod inventory;
mod keyed;
mod labels;
mod naming;
mod replace;

use keyed::MachineGuard;
mod review;
mod slots;
mod sync;

pub use groups::GroupEnd;
pub use import::{ImportOutcome, PreviewRow};
pub use intent::{Intent, Observation};
pub use sync::commit_message;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;

use crate::domain::Mac;
use crate::metrics::Metrics;
use crate::render::Renderer;
use crate::store::{Store, StoreError};
use forge::{Forge, ForgeError};
use git::GitRepo;

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error(transparent)]
    Forge(#[from] ForgeError),
    #[error("no machine with MAC {0}")]
    NotFound(Mac),
    #[error("{0}")]
    Conflict(String),
    /// The intent cannot be carried out as asked (an unknown workflow, say).
    #[error("{0}")]
    Invalid(String),
    #[error("background task failed: {0}")]
    Join(String),
}

/// A place where a test can make the process die, to prove that restarts converge.
/// Set with `REGISTRAR_CRASH_AT=before-push|after-push|after-open`; never set in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    BeforePush,
    AfterPush,
    /// The proposal is open on the forge, and not yet recorded.
    AfterOpen,
}

impl CrashPoint {
    pub fn from_env() -> Option<Self> {
        match std::env::var("REGISTRAR_CRASH_AT").ok()?.as_str() {
            "before-push" => Some(CrashPoint::BeforePush),
            "after-push" => Some(CrashPoint::AfterPush),
            "after-open" => Some(CrashPoint::AfterOpen),
            _ => None,
        }
    }
}

pub struct Proposer {
    store: Arc<dyn Store>,
    renderer: Arc<Renderer>,
    git: Arc<GitRepo>,
    forge: Arc<dyn Forge>,
    path_template: String,
    metrics: Arc<Metrics>,
    wake: Notify,
    /// Rung when the base branch moved (a push webhook): the base's index looks again.
    base_moved: Notify,
    crash_at: Option<CrashPoint>,
    /// One lock per machine for everything that writes its branch or record (sync, approve,
    /// reject, forge events): a background sync never re-pushes a branch that a review is
    /// merging or closing, and a machine waiting on the forge holds up no other.
    machines: keyed::MachineLocks,
    /// When each machine whose sync failed is tried again.
    retries: keyed::Retries,
    /// How many machines are synced at once.
    concurrency: usize,
    /// MACs that already have a home (cluster Hardware, base-branch manifests).
    known: Arc<crate::domain::KnownMacs>,
    /// The cluster, when configured: approval removes the machine's discovery objects.
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
    leadership: std::sync::OnceLock<crate::cluster::lease::Leadership>,
    /// `discovery.only_expected`: unexpected machines are recorded and shown, never proposed.
    only_expected: bool,
    /// `discovery.bmc_networks`: where a reported BMC address may be.
    bmc_networks: Vec<ipnet::IpNet>,
    /// `cluster.check_bmc_secrets`.
    check_bmc_secrets: std::sync::atomic::AtomicBool,
    /// Where machines' addresses come from (empty: no addresses are allocated); replaced
    /// when the pools' file in the GitOps repository changes.
    pools: std::sync::RwLock<addresses::LoadedPools>,
    /// `discovery.max_open_proposals` (0: no bound), and the gate first proposals pass
    /// one at a time while it is set, so that concurrent syncs never open one too many.
    max_open: u64,
    slot_gate: tokio::sync::Mutex<()>,
    /// `discovery.auto_approve: expected`.
    auto_approve: bool,
    /// `discovery.group_by` and `group_size`; the gate one group step at a time passes
    /// (publishing a group, recording its end), so a group is never rewritten while its
    /// merge is recorded.
    group_by: crate::domain::GroupBy,
    group_size: u64,
    group_gate: tokio::sync::Mutex<()>,
    /// Rung after each pass of the queue: groups whose members changed are pushed.
    groups_wake: Notify,
}

async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ProposeError>
where
    ProposeError: From<E>,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProposeError::Join(e.to_string()))?
        .map_err(ProposeError::from)
}

impl Proposer {
    pub fn new(
        store: Arc<dyn Store>,
        renderer: Arc<Renderer>,
        git: Arc<GitRepo>,
        forge: Arc<dyn Forge>,
        path_template: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Proposer {
            store,
            renderer,
            git,
            forge,
            path_template,
            metrics,
            wake: Notify::new(),
            base_moved: Notify::new(),
            crash_at: CrashPoint::from_env(),
            machines: Default::default(),
            retries: keyed::Retries::new(Duration::from_secs(10), Duration::from_secs(600)),
            concurrency: 4,
            known: Default::default(),
            cluster: std::sync::OnceLock::new(),
            leadership: std::sync::OnceLock::new(),
            only_expected: false,
            bmc_networks: Vec::new(),
            check_bmc_secrets: Default::default(),
            pools: Default::default(),
            max_open: 0,
            slot_gate: tokio::sync::Mutex::new(()),
            auto_approve: false,
            group_by: crate::domain::GroupBy::None,
            group_size: 100,
            group_gate: tokio::sync::Mutex::new(()),
            groups_wake: Notify::new(),
        }
    }

    /// Shares the known-MAC index the sources fill: a machine already registered is never
    /// proposed again.
    pub fn with_known(mut self, known: Arc<crate::domain::KnownMacs>) -> Self {
        self.known = known;
        self
    }

    /// How many machines sync at once, and how failed ones are retried: first after
    /// `retry`, then backing off per machine up to `retry_max`.
    pub fn with_queue(mut self, concurrency: usize, retry: Duration, retry_max: Duration) -> Self {
        self.concurrency = concurrency.max(1);
        self.retries = keyed::Retries::new(retry, retry_max);
        self
    }

    /// Keeps machines nobody imported out of the review queue.
    pub fn with_bmc_networks(mut self, networks: Vec<ipnet::IpNet>) -> Self {
        self.bmc_networks = networks;
        self
    }

    /// At most `max_open` proposals open at once (0: no bound); the rest wait their turn.
    pub fn with_max_open(mut self, max_open: u64) -> Self {
        self.max_open = max_open;
        self
    }

    /// Approves machines that match their import row exactly without a person.
    pub fn with_auto_approve(mut self, auto_approve: bool) -> Self {
        self.auto_approve = auto_approve;
        self
    }

    pub fn with_only_expected(mut self, only_expected: bool) -> Self {
        self.only_expected = only_expected;
        self
    }

    /// Where a machine's manifests go in the GitOps repository.
    pub fn path_for(&self, name: &str, mac: &Mac) -> String {
        self.path_template
            .replace("{name}", name)
            .replace("{mac}", &mac.dashed())
    }

    pub fn known(&self) -> &Arc<crate::domain::KnownMacs> {
        &self.known
    }

    pub fn forge_kind(&self) -> &'static str {
        self.forge.kind()
    }

    /// Why `proposal` is approved on the forge rather than through Registrar, if it is.
    pub fn approval_elsewhere(&self, proposal: &crate::domain::Proposal) -> Option<String> {
        self.forge.approval_elsewhere(proposal)
    }

    /// Connects the cluster (once, when the server starts); `check_bmc_secrets` asks it
    /// about a new machine's BMC credentials Secret before proposing its BMC object.
    /// Replicas: git and the forge are worked only while this replica leads.
    pub fn set_leadership(&self, leadership: crate::cluster::lease::Leadership) {
        let _ = self.leadership.set(leadership);
    }

    /// Whether another replica works git and the forge now.
    pub(crate) fn standing_by(&self) -> bool {
        self.leadership
            .get()
            .is_some_and(|l| l.role() != crate::cluster::lease::Role::Leading)
    }

    pub fn set_cluster(&self, cluster: crate::cluster::Cluster, check_bmc_secrets: bool) {
        let _ = self.cluster.set(cluster);
        self.check_bmc_secrets
            .store(check_bmc_secrets, std::sync::atomic::Ordering::Relaxed);
    }

    /// Removes a rejected or forgotten machine's discovery objects (an approved machine's go
    /// when its Hardware appears: the hand-off, which retries until they are gone).
    pub async fn remove_discovery_objects(&self, mac: Mac) {
        if let Some(cluster) = self.cluster.get()
            && let Err(e) = cluster.remove_discovery_objects(mac).await
        {
            tracing::warn!(%mac, error = %e, "could not remove the discovery objects; retried when the approved Hardware appears");
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn renderer(&self) -> &Arc<Renderer> {
        &self.renderer
    }

    pub fn git(&self) -> &Arc<GitRepo> {
        &self.git
    }

    /// Something was queued: wake the worker.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Tells the base branch's index that the base moved, so it need not wait for its pause.
    pub fn base_moved(&self) {
        self.base_moved.notify_one();
    }

    /// Resolves when the base branch is known to have moved.
    pub async fn base_moved_notified(&self) {
        self.base_moved.notified().await
    }

    /// The worker: drains the queue whenever woken, and every `interval` anyway (so
    /// failed work is retried and nothing depends on a wake-up being delivered).
    pub async fn run(self: Arc<Self>, interval: Duration, every: Duration, shutdown: crate::shutdown::Shutdown) {
        let mut since_reconcile = Instant::now();
        if let Err(e) = self.reconcile().await {
            tracing::warn!(error = %e, "reconcile failed");
        }
        loop {
            if let Err(e) = self.drain().await {
                tracing::warn!(error = %e, "proposal queue pass failed; retrying");
            }
            if since_reconcile.elapsed() >= every {
                if let Err(e) = self.reconcile().await {
                    tracing::warn!(error = %e, "reconcile failed");
                }
                // From the end of the pass: a slow pass never runs back to back.
                since_reconcile = Instant::now();
            }
            let next_reconcile = every.saturating_sub(since_reconcile.elapsed());
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(interval.min(next_reconcile)) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Syncs every pending machine once. Returns how many were attempted.
    pub async fn drain(&self) -> Result<usize, ProposeError> {
        self.release_slots().await?;
        let store = self.store.clone();
        let work = blocking(move || store.pending(1000)).await?;
        self.metrics.queue_length.set(work.len() as i64);
        if work.is_empty() {
            self.groups_wake.notify_one();
            return Ok(0);
        }
        let git = self.git.clone();
        if let Err(e) = blocking(move || git.fetch()).await {
            // Say why on every waiting machine: "nothing happens" is what an operator sees.
            self.metrics.sync("error");
            let (store, msg, macs) = (
                self.store.clone(),
                e.to_string(),
                work.iter().map(|w| w.mac).collect::<Vec<_>>(),
            );
            blocking(move || macs.into_iter().try_for_each(|m| store.set_error(m, Some(&msg)))).await?;
            return Err(e);
        }
        // Machines whose last attempt failed wait out their backoff; the rest go, several
        // at once, each under its own machine's lock.
        let now = Instant::now();
        let work: Vec<_> = work.into_iter().filter(|w| self.retries.due(w.mac, now)).collect();
        let left = std::sync::atomic::AtomicUsize::new(work.len());
        futures::stream::iter(&work)
            .for_each_concurrent(self.concurrency, |item| {
                let left = &left;
                async move {
                    let started = Instant::now();
                    let machine = self.machines.lock(item.mac).await;
                    match self.publish_revision(&machine, *item).await {
                        Ok(changed) => {
                            self.retries.succeeded(item.mac);
                            self.metrics.sync(if changed { "pushed" } else { "unchanged" })
                        }
                        Err(e) => {
                            self.metrics.sync("error");
                            let retry = self.retries.failed(item.mac, Instant::now());
                            let retry_in = retry.next.saturating_duration_since(Instant::now()).as_secs();
                            tracing::warn!(mac = %item.mac, error = %e, tries = retry.tries, retry_in, "could not sync proposal");
                            let msg = format!("{e} (try {}; next try in {retry_in} s)", retry.tries);
                            let (store, mac) = (self.store.clone(), item.mac);
                            if let Err(e) = blocking(move || store.set_error(mac, Some(&msg))).await {
                                tracing::warn!(%mac, error = %e, "could not record the sync error");
                            }
                        }
                    }
                    self.metrics.sync_seconds.observe(started.elapsed().as_secs_f64());
                    let left = left.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) - 1;
                    self.metrics.queue_length.set(left as i64);
                }
            })
            .await;
        self.metrics.queue_retrying.set(self.retries.len() as i64);
        // Machines that joined a group this pass reach git and the forge together, on the
        // groups' own task: a group waiting for the forge's pacing holds up no render.
        self.groups_wake.notify_one();
        Ok(work.len())
    }
}
