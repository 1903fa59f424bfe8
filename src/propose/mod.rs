//! The proposal queue: brings each machine's latest facts to git and the forge.
//!
//! Order of effects, so that a crash anywhere converges: (1) the store already holds the
//! facts and a revision to sync; (2) render; (3) publish the branch (a no-op when it holds
//! this content); (4) open or update the proposal on the forge (idempotent); (5) mark the
//! revision synced. Reviews run the same way: intent first, then git, then the record.

mod adopt;
pub mod forge;
pub mod git;
mod import;
pub mod index;

pub use import::{ImportOutcome, PreviewRow};

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;

use crate::domain::{Facts, Mac, Machine, Proposal, ProposalState, State, branch_for};
use crate::metrics::Metrics;
use crate::render::{RenderInput, Rendered, Renderer};
use crate::store::{Pending, Store, StoreError};
use forge::{Draft, Forge, ForgeError};
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
    #[error("background task failed: {0}")]
    Join(String),
}

/// A place where a test can make the process die, to prove that restarts converge.
/// Set with `REGISTRAR_CRASH_AT=before-push|after-push`; never set in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    BeforePush,
    AfterPush,
}

impl CrashPoint {
    pub fn from_env() -> Option<Self> {
        match std::env::var("REGISTRAR_CRASH_AT").ok()?.as_str() {
            "before-push" => Some(CrashPoint::BeforePush),
            "after-push" => Some(CrashPoint::AfterPush),
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
    crash_at: Option<CrashPoint>,
    /// One lane for everything that writes a proposal's branch or record (sync, approve,
    /// reject, forge events), so a background sync never re-pushes a branch that a review
    /// is merging or closing at the same moment.
    lane: tokio::sync::Mutex<()>,
    /// MACs that already have a home (cluster Hardware, base-branch manifests).
    known: Arc<crate::domain::KnownMacs>,
    /// The cluster, when configured: approval removes the machine's discovery objects.
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
    /// `discovery.only_expected`: unexpected machines are recorded and shown, never proposed.
    only_expected: bool,
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
            crash_at: CrashPoint::from_env(),
            lane: tokio::sync::Mutex::new(()),
            known: Default::default(),
            cluster: std::sync::OnceLock::new(),
            only_expected: false,
        }
    }

    /// Shares the known-MAC index the sources fill: a machine already registered is never
    /// proposed again.
    pub fn with_known(mut self, known: Arc<crate::domain::KnownMacs>) -> Self {
        self.known = known;
        self
    }

    /// Keeps machines nobody imported out of the review queue.
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

    /// Connects the cluster (once, when the server starts).
    pub fn set_cluster(&self, cluster: crate::cluster::Cluster) {
        let _ = self.cluster.set(cluster);
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
        let store = self.store.clone();
        let work = blocking(move || store.pending(1000)).await?;
        self.metrics.queue_length.set(work.len() as i64);
        if work.is_empty() {
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
        let mut done = 0;
        for item in &work {
            done += 1;
            let started = Instant::now();
            match self.sync(*item).await {
                Ok(changed) => self.metrics.sync(if changed { "pushed" } else { "unchanged" }),
                Err(e) => {
                    self.metrics.sync("error");
                    tracing::warn!(mac = %item.mac, error = %e, "could not sync proposal");
                    let store = self.store.clone();
                    let (mac, msg) = (item.mac, e.to_string());
                    blocking(move || store.set_error(mac, Some(&msg))).await?;
                }
            }
            self.metrics.sync_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.queue_length.set((work.len() - done) as i64);
        }
        Ok(done)
    }

    /// Brings one machine's revision to git and the forge. Returns whether git changed.
    pub async fn sync(&self, work: Pending) -> Result<bool, ProposeError> {
        let _lane = self.lane.lock().await;
        self.sync_inner(work).await
    }

    async fn sync_inner(&self, work: Pending) -> Result<bool, ProposeError> {
        let store = self.store.clone();
        let (machine, existing) =
            blocking(move || Ok::<_, StoreError>((store.machine(work.mac)?, store.proposal(work.mac)?))).await?;
        let Some(machine) = machine else { return Ok(false) };
        let Some(facts) = machine
            .facts
            .clone()
            .filter(|_| !machine.suppressed && machine.state.accepts_facts())
        else {
            let store = self.store.clone();
            blocking(move || store.mark_synced(work, None, None, Utc::now())).await?;
            return Ok(false);
        };
        // A new proposal only for a machine that may have one; the reason is shown where an
        // operator looks when "nothing happens".
        let refusal = match existing {
            Some(_) => None,
            None if self.only_expected && machine.expected.is_none() => {
                Some("not proposed: not expected (discovery.only_expected is on); import it as expected to propose it")
            }
            None if self.known.contains(&machine.mac) => {
                Some("not proposed: a Hardware in the cluster or a manifest on the base branch already holds this MAC")
            }
            None => None,
        };
        if let Some(reason) = refusal {
            let store = self.store.clone();
            blocking(move || {
                store.mark_synced(work, None, None, Utc::now())?;
                store.set_error(work.mac, Some(reason))
            })
            .await?;
            return Ok(false);
        }
        let rendered = self.render_for(&machine, &facts).await?;
        let branch = branch_for(&machine.mac);
        let path = self.path_for(&rendered.name, &machine.mac);
        let message = commit_message(&rendered, &machine.mac, &facts);

        if let Some(p) = existing
            .as_ref()
            .filter(|p| matches!(p.state, ProposalState::Open | ProposalState::Approving))
        {
            let remote = self.git.branch_head(&branch).map(|o| o.to_string());
            let foreign = match &remote {
                Some(head) => self.is_foreign_head(p, head).await?,
                None => false,
            };
            if p.hands_off || foreign {
                return self
                    .keep_hands_off(work, p, remote.as_deref().unwrap_or_default())
                    .await;
            }
        }
        if self.crash_at == Some(CrashPoint::BeforePush) {
            tracing::error!("REGISTRAR_CRASH_AT=before-push: aborting");
            std::process::abort();
        }
        // A file at this path on the base that Registrar did not put there (a hand-written
        // one, another tool's) is never overwritten by rebuilding on the base: say so.
        let (git, p) = (self.git.clone(), path.clone());
        let base = self.git.base().to_string();
        if let Some(on_base) = blocking(move || git.read(&base, &p)).await?
            && on_base != rendered.manifest.as_bytes()
        {
            return Err(ProposeError::Conflict(format!(
                "{path} already exists on {} with other content; Registrar does not overwrite it: remove or rename it there, then re-render",
                self.git.base()
            )));
        }
        let git = self.git.clone();
        let files = self.files_for(&path, &rendered).await?;
        let (b, m, store) = (branch.clone(), message, self.store.clone());
        let published = blocking(move || {
            let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
            // The commit is recorded as Registrar's before it is pushed: the `synchronize`
            // of this push, or a crash right after it, must not make it look like a person's.
            git.publish(&b, &refs, &m, |commit| {
                store
                    .remember_once(&crate::domain::pushed_key(&commit.to_string()), Utc::now())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .await?;
        if self.crash_at == Some(CrashPoint::AfterPush) {
            tracing::error!("REGISTRAR_CRASH_AT=after-push: aborting");
            std::process::abort();
        }

        let forge_ref = self
            .forge
            .open(
                &Draft {
                    branch: &branch,
                    rendered: &rendered,
                },
                existing.as_ref(),
            )
            .await?;
        let now = Utc::now();
        let proposal = Proposal {
            mac: machine.mac,
            forge: self.forge.kind().to_string(),
            number: forge_ref.number,
            url: forge_ref.url,
            branch,
            path,
            name: rendered.name.clone(),
            title: rendered.title.clone(),
            summary: rendered.summary.clone(),
            head: published.commit.to_string(),
            rule: rendered.decision.rule.clone(),
            workflow: rendered.decision.workflow.clone(),
            state: ProposalState::Open,
            created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(now),
            updated_at: now,
            hands_off: false,
        };
        let store = self.store.clone();
        let name = rendered.name.clone();
        blocking(move || store.mark_synced(work, Some(&proposal), Some(&name), now)).await?;
        if published.changed {
            tracing::info!(mac = %machine.mac, name = %rendered.name, commit = %published.commit, "proposal pushed");
        }
        Ok(published.changed)
    }

    /// Someone else pushed to the branch: never overwrite their work. Record it, say so once
    /// on the forge, and consider this revision done (merge and close are still followed).
    async fn keep_hands_off(&self, work: Pending, proposal: &Proposal, head: &str) -> Result<bool, ProposeError> {
        self.hands_off_inner(proposal, head).await?;
        let store = self.store.clone();
        blocking(move || store.mark_synced(work, None, None, Utc::now())).await?;
        Ok(false)
    }

    /// Marks a proposal whose branch someone else pushed to, and tells the reviewers once.
    /// The mark is stored first: after a crash, a missed comment beats a repeated one.
    pub async fn hands_off(&self, proposal: &Proposal, head: &str) -> Result<(), ProposeError> {
        let _lane = self.lane.lock().await;
        self.hands_off_inner(proposal, head).await
    }

    async fn hands_off_inner(&self, proposal: &Proposal, head: &str) -> Result<(), ProposeError> {
        if proposal.hands_off {
            return Ok(());
        }
        tracing::warn!(mac = %proposal.mac, branch = %proposal.branch, %head, "someone pushed to the proposal branch; Registrar stops updating it");
        let (store, mac) = (self.store.clone(), proposal.mac);
        blocking(move || store.set_hands_off(mac, Utc::now())).await?;
        self.forge.note_hands_off(proposal, head).await?;
        Ok(())
    }

    /// Whether `head` is a commit someone other than Registrar pushed to `proposal`'s branch.
    pub async fn is_foreign_head(&self, proposal: &Proposal, head: &str) -> Result<bool, ProposeError> {
        if head.is_empty() || head == proposal.head {
            return Ok(false);
        }
        let (store, key) = (self.store.clone(), crate::domain::pushed_key(head));
        Ok(!blocking(move || store.was_remembered(&key)).await?)
    }

    /// The files a proposal writes: its manifest, and — where its directory on the base has
    /// a kustomization — that kustomization with the manifest added to `resources`.
    async fn files_for(&self, path: &str, rendered: &Rendered) -> Result<Vec<(String, Vec<u8>)>, ProposeError> {
        let mut files = vec![(path.to_string(), rendered.manifest.clone().into_bytes())];
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
        if let Some((kpath, text)) = self.base_kustomization(dir).await? {
            let updated = index::with_resource(&String::from_utf8_lossy(&text), file)
                .map_err(|e| ProposeError::Conflict(format!("{kpath}: {e}")))?;
            files.push((kpath, updated.into_bytes()));
        }
        Ok(files)
    }

    /// The kustomization file in `dir` on the base branch, if any: (path, content).
    async fn base_kustomization(&self, dir: &str) -> Result<Option<(String, Vec<u8>)>, ProposeError> {
        let (git, dir) = (self.git.clone(), dir.to_string());
        blocking(move || {
            for name in index::KUSTOMIZATION_FILES {
                let p = if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                };
                if let Some(text) = git.read(git.base(), &p)? {
                    return Ok::<_, git::GitError>(Some((p, text)));
                }
            }
            Ok(None)
        })
        .await
    }

    /// After the base moved (a merge), proposals whose directory has a kustomization are
    /// regenerated on the new base, so reviewers never resolve conflicts by hand.
    pub async fn rebuild_stale(&self) -> Result<usize, ProposeError> {
        if self
            .base_kustomization(index::manifest_dir(&self.path_template))
            .await?
            .is_none()
        {
            return Ok(0);
        }
        let store = self.store.clone();
        let open = blocking(move || store.proposals(Some(ProposalState::Open))).await?;
        let mut queued = 0;
        for p in open.into_iter().filter(|p| !p.hands_off) {
            if !self.git.is_on_base(&p.branch) {
                let store = self.store.clone();
                blocking(move || store.requeue(p.mac, Utc::now()).map(|_| ())).await?;
                queued += 1;
            }
        }
        if queued > 0 {
            self.wake();
        }
        Ok(queued)
    }

    /// Renders a machine as it would be proposed now, without touching git.
    pub async fn render_for(&self, machine: &Machine, facts: &Facts) -> Result<Rendered, ProposeError> {
        let input = RenderInput {
            mac: &machine.mac,
            facts,
            source: machine.source,
            workflow: machine.workflow.as_deref(),
            force_mac_name: false,
            sighting: machine.sighting.as_ref(),
            expected: machine.expected.as_ref(),
        };
        let mut rendered = self.renderer.render(&input)?;
        // Two machines may claim one serial; the second one is named after its MAC.
        let store = self.store.clone();
        let name = rendered.name.clone();
        let owner = blocking(move || store.name_owner(&name)).await?;
        if owner.is_some_and(|m| m != machine.mac) {
            rendered = self.renderer.render(&RenderInput {
                force_mac_name: true,
                ..input
            })?;
        }
        Ok(rendered)
    }

    /// Runs a review step on its own task, and waits for it: a request that started it (a
    /// browser, a script) may give up, but the step is never cut off half-way.
    pub async fn detached<T, Fut>(self: &Arc<Self>, step: impl FnOnce(Arc<Self>) -> Fut) -> Result<T, ProposeError>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = Result<T, ProposeError>> + Send + 'static,
    {
        tokio::spawn(step(self.clone()))
            .await
            .map_err(|e| ProposeError::Join(e.to_string()))?
    }

    /// Approves a machine's open proposal: record the intent, merge, record the result.
    pub async fn approve(&self, mac: Mac, actor: &str) -> Result<Machine, ProposeError> {
        let _lane = self.lane.lock().await;
        let mut proposal = self.open_proposal(mac).await?;
        // A proposal behind the base (another one merged meanwhile) is rebuilt first, so a
        // shared kustomization never conflicts.
        if !proposal.hands_off && !self.git.is_on_base(&proposal.branch) {
            let store = self.store.clone();
            let work = blocking(move || store.requeue(mac, Utc::now())).await?;
            self.sync_inner(work).await?;
            proposal = self.open_proposal(mac).await?;
        }
        let store = self.store.clone();
        blocking(move || store.set_proposal_state(mac, ProposalState::Approving, Utc::now())).await?;
        if let Err(e) = self.forge.approve(&proposal, actor).await {
            let store = self.store.clone();
            blocking(move || store.set_proposal_state(mac, ProposalState::Open, Utc::now())).await?;
            return Err(match e {
                ForgeError::Git(g @ git::GitError::Conflict { .. }) => ProposeError::Conflict(g.to_string()),
                ForgeError::Conflict(why) => ProposeError::Conflict(why),
                other => other.into(),
            });
        }
        self.finish_approval_inner(mac, &format!("{} merged", proposal.branch), actor)
            .await
    }

    /// Records an approval that happened on the forge (a merge).
    pub async fn finish_approval(&self, mac: Mac, cause: &str, actor: &str) -> Result<Machine, ProposeError> {
        let _lane = self.lane.lock().await;
        self.finish_approval_inner(mac, cause, actor).await
    }

    async fn finish_approval_inner(&self, mac: Mac, cause: &str, actor: &str) -> Result<Machine, ProposeError> {
        let store = self.store.clone();
        let (cause, actor) = (cause.to_string(), actor.to_string());
        let machine = blocking(move || {
            store.set_proposal_state(mac, ProposalState::Merged, Utc::now())?;
            let m = store.machine(mac)?.ok_or(StoreError::NotFound(mac))?;
            if m.state == State::Approved {
                Ok(m)
            } else {
                store.transition(mac, State::Approved, &cause, &actor, Utc::now())
            }
        })
        .await?;
        // The discovery objects stay until the approved Hardware is in the cluster (the
        // hand-off, app/handoff.rs): until then they are the only Hardware Smee has for it.
        // The base moved: proposals sharing a kustomization are rebuilt on it.
        let git = self.git.clone();
        blocking(move || git.fetch()).await?;
        if let Err(e) = self.rebuild_stale().await {
            tracing::warn!(error = %e, "could not rebuild proposals on the new base");
        }
        Ok(machine)
    }

    /// Rejects a machine: suppress it first (so nothing re-proposes it), then close the proposal.
    pub async fn reject(&self, mac: Mac, actor: &str, reason: &str) -> Result<Machine, ProposeError> {
        let _lane = self.lane.lock().await;
        self.reject_inner(mac, actor, reason).await
    }

    async fn reject_inner(&self, mac: Mac, actor: &str, reason: &str) -> Result<Machine, ProposeError> {
        let store = self.store.clone();
        let (actor_s, reason) = (
            actor.to_string(),
            if reason.is_empty() {
                "rejected".to_string()
            } else {
                reason.to_string()
            },
        );
        let (machine, proposal) = blocking(move || {
            let m = store.reject(mac, &reason, &actor_s, Utc::now())?;
            Ok::<_, StoreError>((m, store.proposal(mac)?))
        })
        .await?;
        if let Some(p) = proposal.filter(|p| p.state == ProposalState::Rejecting) {
            self.close_rejected(&p, actor).await?;
        }
        self.remove_discovery_objects(mac).await;
        Ok(machine)
    }

    /// Carries a recorded rejection to the forge, then records it done: a closed proposal
    /// is terminal, and costs nothing at rest (a reopen comes as a webhook, or in the
    /// forge's list of recently updated pull requests).
    async fn close_rejected(&self, p: &Proposal, actor: &str) -> Result<(), ProposeError> {
        self.forge.reject(p, actor).await?;
        let (store, mac) = (self.store.clone(), p.mac);
        blocking(move || store.set_proposal_state(mac, ProposalState::Closed, Utc::now())).await?;
        Ok(())
    }

    /// Forgets a machine no proposal of which is open or merged, so that it is noticed
    /// afresh; in the lane, so no sync of it is half done, and its discovery objects go too.
    pub async fn forget(&self, mac: Mac, actor: &str) -> Result<(), ProposeError> {
        let _lane = self.lane.lock().await;
        let (store, who) = (self.store.clone(), actor.to_string());
        blocking(move || store.forget(mac, &who, Utc::now())).await?;
        self.remove_discovery_objects(mac).await;
        Ok(())
    }

    /// Records a rejection that happened on the forge (a pull request closed unmerged).
    pub async fn record_rejection(&self, mac: Mac, cause: &str, actor: &str) -> Result<Machine, ProposeError> {
        let _lane = self.lane.lock().await;
        let store = self.store.clone();
        let (cause, actor) = (cause.to_string(), actor.to_string());
        let machine = blocking(move || {
            let m = store.reject(mac, &cause, &actor, Utc::now())?;
            // The forge closed it: nothing is left to carry there.
            if store
                .proposal(mac)?
                .is_some_and(|p| p.state == ProposalState::Rejecting)
            {
                store.set_proposal_state(mac, ProposalState::Closed, Utc::now())?;
            }
            Ok::<_, StoreError>(m)
        })
        .await?;
        self.remove_discovery_objects(mac).await;
        Ok(machine)
    }

    async fn open_proposal(&self, mac: Mac) -> Result<Proposal, ProposeError> {
        let store = self.store.clone();
        let p = blocking(move || store.proposal(mac))
            .await?
            .ok_or(ProposeError::NotFound(mac))?;
        match p.state {
            ProposalState::Open | ProposalState::Approving => Ok(p),
            s => Err(ProposeError::Conflict(format!(
                "the proposal for {mac} is {s}, not open"
            ))),
        }
    }

    /// `mac`'s proposal, if it is (still) in `state`.
    async fn proposal_in(&self, mac: Mac, state: ProposalState) -> Result<Option<Proposal>, ProposeError> {
        let store = self.store.clone();
        Ok(blocking(move || store.proposal(mac))
            .await?
            .filter(|p| p.state == state))
    }

    /// Converges Registrar's records with what the forge and the repository say, so a crash
    /// in the middle of a review, or a merge done outside Registrar, leaves nothing behind.
    pub async fn reconcile(&self) -> Result<(), ProposeError> {
        let store = self.store.clone();
        let proposals = blocking(move || store.proposals(None)).await?;
        for p in proposals {
            let result: Result<(), ProposeError> = async {
                match p.state {
                    ProposalState::Merged | ProposalState::Closed => {}
                    ProposalState::Rejecting => {
                        // Rejected, but a crash may have come before the forge heard of it.
                        // Read again in the lane: the rejection may have been lifted since.
                        let _lane = self.lane.lock().await;
                        if let Some(p) = self.proposal_in(p.mac, ProposalState::Rejecting).await? {
                            self.close_rejected(&p, "registrar").await?;
                        }
                    }
                    ProposalState::Approving => {
                        // In the lane, so no background sync pushes the branch mid-merge.
                        let _lane = self.lane.lock().await;
                        let Some(p) = self.proposal_in(p.mac, ProposalState::Approving).await? else {
                            return Ok(());
                        };
                        if self.forge.state(&p).await? != ProposalState::Merged
                            && let Err(e) = self.forge.approve(&p, "registrar").await
                        {
                            // Not merged (the head moved, branch protection): back to review,
                            // never merged unattended on a later pass.
                            let (store, mac, why) = (self.store.clone(), p.mac, e.to_string());
                            blocking(move || {
                                store.set_proposal_state(mac, ProposalState::Open, Utc::now())?;
                                store.set_error(mac, Some(&format!("the interrupted approval did not merge: {why}")))
                            })
                            .await?;
                            return Ok(());
                        }
                        self.finish_approval_inner(p.mac, &format!("{} merged (resumed)", p.branch), "registrar")
                            .await?;
                    }
                    ProposalState::Open if self.forge.lists_changes() => {}
                    ProposalState::Open => match self.forge.state(&p).await? {
                        ProposalState::Merged => {
                            self.finish_approval(p.mac, &format!("{} found merged", p.branch), "registrar")
                                .await?;
                        }
                        ProposalState::Closed => {
                            self.reject(
                                p.mac,
                                "registrar",
                                &format!("{} was closed outside Registrar", p.branch),
                            )
                            .await?;
                        }
                        _ => {}
                    },
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(mac = %p.mac, error = %e, "reconcile of proposal failed");
            }
        }
        self.rebuild_stale().await?;
        self.metrics.reconcile_passes.inc();
        Ok(())
    }
}

/// The proposal commit's message carries the normalised facts, so the repository's history
/// answers "what did this machine look like when it was approved".
pub fn commit_message(rendered: &Rendered, mac: &Mac, facts: &Facts) -> String {
    let facts_json = serde_json::to_string(facts).expect("facts serialise");
    format!(
        "{}\n\nProposed by Registrar: rule {}, workflow {}.\n\nRegistrar-Mac: {mac}\nRegistrar-Facts: {facts_json}\n",
        rendered.title,
        rendered.decision.rule,
        rendered.decision.workflow.as_deref().unwrap_or("none"),
    )
}
