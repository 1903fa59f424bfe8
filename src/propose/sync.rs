//! Bringing one machine's revision to git and the forge: rendering, publishing the branch,
//! opening or updating its proposal, and keeping hands off a proposal someone else took over.

use chrono::Utc;

use super::forge::Draft;
use super::slots::Slot;
use super::{CrashPoint, MachineGuard, ProposeError, Proposer, blocking};
use super::{git, index};
use crate::domain::{Basis, Facts, Mac, Machine, Proposal, ProposalKind, ProposalState, branch_for};
use crate::render::{RenderInput, Rendered};
use crate::store::{Pending, StoreError};

impl Proposer {
    /// Brings one machine's revision to git and the forge. Returns whether git changed.
    pub async fn sync(&self, work: Pending) -> Result<bool, ProposeError> {
        let machine = self.machines.lock(work.mac).await;
        self.publish_revision(&machine, work).await
    }

    /// Renders, publishes and opens (or updates) one revision, holding the machine.
    pub(super) async fn publish_revision(&self, held: &MachineGuard<'_>, work: Pending) -> Result<bool, ProposeError> {
        debug_assert_eq!(held.mac(), work.mac);
        let store = self.store.clone();
        let (machine, existing) =
            blocking(move || Ok::<_, StoreError>((store.machine(work.mac)?, store.proposal(work.mac)?))).await?;
        let Some(machine) = machine else { return Ok(false) };
        if machine.state.is_settled() {
            return self.publish_change(held, work, &machine, existing).await;
        }
        let Some(facts) = machine
            .facts
            .clone()
            .filter(|_| !machine.suppressed && machine.state.accepts_facts())
        else {
            let store = self.store.clone();
            blocking(move || store.mark_synced(work, None, None, Utc::now())).await?;
            return Ok(false);
        };
        // Its MAC is on the base already, and Registrar has no record of a proposal: perhaps
        // its own pull request, merged while the record was not yet written (a crash between
        // opening it and recording it). The forge says.
        if existing.is_none()
            && self.known.contains(&machine.mac)
            && let Some((ProposalState::Merged, found)) = self.forge.branch_state(&branch_for(&machine.mac)).await?
        {
            return self.adopt_merged(held, work, &machine, &facts, found).await;
        }
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
        // A first proposal waits for a review slot while `max_open_proposals` are open; the
        // gate is held until it is recorded, so no two syncs take the last slot.
        // (A proposal closed earlier and opened again, after an unsuppress, counts too.)
        // (Grouped machines take none: their pull requests are few already.)
        let first = existing.as_ref().is_none_or(|p| p.state == ProposalState::Closed);
        let _slot = if first && !self.may_join_group(&machine) {
            match self.take_slot(work).await? {
                Slot::Full => return Ok(false),
                Slot::Taken(gate) => gate,
            }
        } else {
            None
        };
        // A new board of a machine git holds is proposed as that machine's change.
        if let Some(old) = self.replaced_machine(&machine, &facts).await? {
            return self
                .publish_replacement(held, work, &machine, &facts, old, existing)
                .await;
        }
        // Its address is chosen (or found: it keeps the one it has) before anything renders.
        let address = self.production_address(&machine).await?;
        let rendered = self.render_for(&machine, &facts, address.as_ref()).await?;
        let branch = branch_for(&machine.mac);
        let path = self.path_for(&rendered.name, &machine.mac);
        let message = commit_message(&rendered, &machine.mac, &facts);
        let group_key = self.group_key(&machine, Some(&rendered));
        let grouped = |p: &Proposal| crate::domain::group_of_branch(&p.branch).is_some();
        let existing = match existing {
            // It no longer has a group's key (grouping was turned off, say): proposed alone.
            Some(p) if group_key.is_none() && grouped(&p) && p.state == ProposalState::Open => {
                let (store, mac) = (self.store.clone(), machine.mac);
                blocking(move || store.leave_group(mac)).await?;
                None
            }
            other => other,
        };
        let joins_group = group_key.is_some()
            && existing
                .as_ref()
                .is_none_or(|p| p.state == ProposalState::Closed || grouped(p));

        if let Some(p) = existing
            .as_ref()
            .filter(|p| matches!(p.state, ProposalState::Open | ProposalState::Approving) && !grouped(p))
        {
            let (git, b) = (self.git.clone(), branch.clone());
            let remote = blocking(move || Ok::<_, git::GitError>(git.branch_head(&b)))
                .await?
                .map(|o| o.to_string());
            let foreign = match &remote {
                Some(head) => self.is_foreign_head(p, head).await?,
                None => false,
            };
            if p.hands_off || foreign {
                return self
                    .keep_hands_off(held, work, p, remote.as_deref().unwrap_or_default())
                    .await;
            }
        }
        if self.crash_at == Some(CrashPoint::BeforePush) {
            tracing::error!("REGISTRAR_CRASH_AT=before-push: aborting");
            std::process::abort();
        }
        // One base head for everything below: a fetch by another machine's step meanwhile
        // must not move the files' base under them.
        let git = self.git.clone();
        let base_head = blocking(move || git.base_head()).await?;
        // A file at this path on the base that Registrar did not put there (a hand-written
        // one, another tool's) is never overwritten by rebuilding on the base: say so.
        let (git, p) = (self.git.clone(), path.clone());
        let on_base = blocking(move || git.read_at(base_head, &p)).await?;
        // Its very file on the base with no proposal recorded: its own pull request, merged
        // while the record was lost, and the base's index has not caught up yet. The forge
        // says (the same check as above, without waiting for the index).
        if existing.is_none()
            && on_base.as_deref() == Some(rendered.manifest.as_bytes())
            && let Some((ProposalState::Merged, found)) = self.forge.branch_state(&branch).await?
        {
            return self.adopt_merged(held, work, &machine, &facts, found).await;
        }
        if let Some(on_base) = on_base
            && on_base != rendered.manifest.as_bytes()
        {
            return Err(ProposeError::Conflict(format!(
                "{path} already exists on {} with other content; Registrar does not overwrite it: remove or rename it there, then re-render",
                self.git.base()
            )));
        }
        if let Some(key) = group_key.filter(|_| joins_group) {
            return self
                .join(
                    held,
                    work,
                    &machine,
                    &facts,
                    key,
                    &rendered,
                    path,
                    address.as_ref(),
                    existing.as_ref(),
                )
                .await;
        }
        let files = self.files_for(&path, &rendered, base_head).await?;
        let (published, forge_ref) = self
            .publish_and_open(&branch, files, base_head, message, &rendered, existing.as_ref())
            .await?;
        let now = Utc::now();
        let proposal = Proposal {
            created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(now),
            basis: Some(Basis::registered(facts.clone())),
            ..self.opened(
                machine.mac,
                forge_ref,
                branch,
                path,
                &rendered,
                published.commit.to_string(),
            )
        };
        let (store, recorded) = (self.store.clone(), proposal.clone());
        let name = rendered.name.clone();
        blocking(move || store.mark_synced(work, Some(&recorded), Some(&name), now)).await?;
        if published.changed {
            tracing::info!(mac = %machine.mac, name = %rendered.name, commit = %published.commit, "proposal pushed");
        }
        self.approve_if_expected(held, &machine, &facts, &proposal, &rendered)
            .await?;
        Ok(published.changed)
    }

    /// The record of a proposal just opened or updated on the forge: open, at `head`, as
    /// `rendered` shows it, a registration unless the caller says otherwise.
    pub(super) fn opened(
        &self,
        mac: Mac,
        forge_ref: super::forge::ForgeRef,
        branch: String,
        path: String,
        rendered: &Rendered,
        head: String,
    ) -> Proposal {
        let now = Utc::now();
        Proposal {
            mac,
            forge: self.forge.kind().to_string(),
            number: forge_ref.number,
            url: forge_ref.url,
            branch,
            path,
            name: rendered.name.clone(),
            title: rendered.title.clone(),
            summary: rendered.summary.clone(),
            head,
            rule: rendered.decision.rule.clone(),
            workflow: rendered.decision.workflow.clone(),
            state: ProposalState::Open,
            created_at: now,
            updated_at: now,
            hands_off: false,
            kind: ProposalKind::Register,
            basis: None,
            replaces: None,
        }
    }

    /// Pushes `files` as `branch` on `base`, then makes sure the forge shows one proposal
    /// for it as `rendered` (`existing`: what Registrar recorded of it, if anything).
    pub(super) async fn publish_and_open(
        &self,
        branch: &str,
        files: Vec<(String, Option<Vec<u8>>)>,
        base: git2::Oid,
        message: String,
        rendered: &Rendered,
        existing: Option<&Proposal>,
    ) -> Result<(git::Published, super::forge::ForgeRef), ProposeError> {
        let published = self.publish_files(branch, files, base, message).await?;
        if self.crash_at == Some(CrashPoint::AfterPush) {
            tracing::error!("REGISTRAR_CRASH_AT=after-push: aborting");
            std::process::abort();
        }
        let forge_ref = self.forge.open(&Draft::of(branch, rendered), existing).await?;
        if self.crash_at == Some(CrashPoint::AfterOpen) {
            tracing::error!("REGISTRAR_CRASH_AT=after-open: aborting");
            std::process::abort();
        }
        Ok((published, forge_ref))
    }

    /// Makes `branch` the base head `base` plus `files` (no content: removed) in one commit.
    pub(super) async fn publish_files(
        &self,
        branch: &str,
        files: Vec<(String, Option<Vec<u8>>)>,
        base: git2::Oid,
        message: String,
    ) -> Result<git::Published, ProposeError> {
        let (git, b, store) = (self.git.clone(), branch.to_string(), self.store.clone());
        blocking(move || {
            let refs: Vec<(&str, Option<&[u8]>)> = files.iter().map(|(p, c)| (p.as_str(), c.as_deref())).collect();
            // The commit is recorded as Registrar's before it is pushed: the `synchronize`
            // of this push, or a crash right after it, must not make it look like a person's.
            git.publish(&b, &refs, base, &message, |commit| {
                store
                    .remember_once(&crate::domain::pushed_key(&commit.to_string()), Utc::now())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .await
    }

    /// Records a merged pull request Registrar opened but never recorded: the machine is
    /// proposed and approved on it, as if the merge's webhook had come in time.
    async fn adopt_merged(
        &self,
        held: &MachineGuard<'_>,
        work: Pending,
        machine: &Machine,
        facts: &Facts,
        found: super::forge::ForgeRef,
    ) -> Result<bool, ProposeError> {
        let address = self.production_address(machine).await?;
        let rendered = self.render_for(machine, facts, address.as_ref()).await?;
        let now = Utc::now();
        let path = self.path_for(&rendered.name, &machine.mac);
        let number = found.number.map(|n| format!(" #{n}")).unwrap_or_default();
        let proposal = Proposal {
            basis: Some(Basis::registered(facts.clone())),
            ..self.opened(
                machine.mac,
                found,
                branch_for(&machine.mac),
                path,
                &rendered,
                String::new(),
            )
        };
        let (store, name) = (self.store.clone(), rendered.name.clone());
        blocking(move || store.mark_synced(work, Some(&proposal), Some(&name), now)).await?;
        self.record_approval(
            held,
            &format!("its pull request{number} was found merged (Registrar had not recorded it)"),
            "registrar",
        )
        .await?;
        Ok(false)
    }

    /// Someone else pushed to the branch: never overwrite their work. Record it, say so once
    /// on the forge, and consider this revision done (merge and close are still followed).
    pub(super) async fn keep_hands_off(
        &self,
        held: &MachineGuard<'_>,
        work: Pending,
        proposal: &Proposal,
        head: &str,
    ) -> Result<bool, ProposeError> {
        self.record_hands_off(held, proposal, head).await?;
        let store = self.store.clone();
        blocking(move || store.mark_synced(work, None, None, Utc::now())).await?;
        Ok(false)
    }

    /// Marks a proposal whose branch someone else pushed to, and tells the reviewers once.
    /// The mark is stored first: after a crash, a missed comment beats a repeated one.
    pub(super) async fn hands_off(&self, proposal: &Proposal, head: &str) -> Result<(), ProposeError> {
        let machine = self.machines.lock(proposal.mac).await;
        self.record_hands_off(&machine, proposal, head).await
    }

    async fn record_hands_off(
        &self,
        held: &MachineGuard<'_>,
        proposal: &Proposal,
        head: &str,
    ) -> Result<(), ProposeError> {
        debug_assert_eq!(held.mac(), proposal.mac);
        if proposal.hands_off {
            return Ok(());
        }
        tracing::warn!(mac = %proposal.mac, branch = %proposal.branch, %head, "someone pushed to the proposal branch; Registrar stops updating it");
        let (store, mac) = (self.store.clone(), proposal.mac);
        blocking(move || store.set_hands_off(mac, Utc::now())).await?;
        self.forge
            .say(proposal, &hands_off_note(&proposal.branch, head))
            .await?;
        Ok(())
    }

    /// Whether `head` is a commit someone other than Registrar pushed to `proposal`'s branch.
    pub(super) async fn is_foreign_head(&self, proposal: &Proposal, head: &str) -> Result<bool, ProposeError> {
        if head.is_empty() || head == proposal.head {
            return Ok(false);
        }
        let (store, key) = (self.store.clone(), crate::domain::pushed_key(head));
        Ok(!blocking(move || store.was_remembered(&key)).await?)
    }

    /// The files a proposal writes: its manifest, and — where its directory on the base has
    /// a kustomization — that kustomization with the manifest added to `resources`.
    pub(super) async fn files_for(
        &self,
        path: &str,
        rendered: &Rendered,
        base: git2::Oid,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, ProposeError> {
        let mut files = vec![(path.to_string(), Some(rendered.manifest.clone().into_bytes()))];
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
        if let Some((kpath, text)) = self.base_kustomization(dir, Some(base)).await? {
            let updated = index::with_resource(&String::from_utf8_lossy(&text), file)
                .map_err(|e| ProposeError::Conflict(format!("{kpath}: {e}")))?;
            files.push((kpath, Some(updated.into_bytes())));
        }
        Ok(files)
    }

    /// The kustomization file in `dir` on the base branch (at commit `at`, or its head), if
    /// any: (path, content).
    pub(super) async fn base_kustomization(
        &self,
        dir: &str,
        at: Option<git2::Oid>,
    ) -> Result<Option<(String, Vec<u8>)>, ProposeError> {
        let (git, dir) = (self.git.clone(), dir.to_string());
        blocking(move || {
            for name in index::KUSTOMIZATION_FILES {
                let p = if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                };
                let text = match at {
                    Some(commit) => git.read_at(commit, &p)?,
                    None => git.read(git.base(), &p)?,
                };
                if let Some(text) = text {
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
            .base_kustomization(index::manifest_dir(&self.path_template), None)
            .await?
            .is_none()
        {
            return Ok(0);
        }
        let store = self.store.clone();
        let open = blocking(move || store.proposals(Some(ProposalState::Open))).await?;
        let mut queued = 0;
        queued += self.touch_stale_groups().await?;
        for p in open
            .into_iter()
            .filter(|p| !p.hands_off && crate::domain::group_of_branch(&p.branch).is_none())
        {
            let (git, b) = (self.git.clone(), p.branch.clone());
            if !blocking(move || Ok::<_, git::GitError>(git.is_on_base(&b))).await? {
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
    pub async fn render_for(
        &self,
        machine: &Machine,
        facts: &Facts,
        address: Option<&crate::ipam::Address>,
    ) -> Result<Rendered, ProposeError> {
        let (mut facts, mut warnings) = self.check_identity(machine, facts).await?;
        let input = RenderInput {
            address,
            ..RenderInput::for_machine(machine, &facts)
        };
        let sequence = self.name_number(&input).await?;
        let input = RenderInput { sequence, ..input };
        let named = self.renderer.name_for(&input);
        // A name another machine has (two machines claiming one serial, a Hardware on the
        // base branch or in the cluster): named after its MAC, and the reviewer is told.
        let force_mac_name = match self.name_clash(&named, &machine.mac).await? {
            Some(clash) => {
                warnings.insert(0, format!("Name: {clash}."));
                true
            }
            None => false,
        };
        let name = if force_mac_name {
            crate::render::names::mac_name(&machine.mac)
        } else {
            named
        };
        if let Some(refusal) = self.foreign_bmc_secret(machine, &facts, &name).await? {
            facts.bmc = None;
            warnings.push(refusal);
        }
        Ok(self.renderer.render(&RenderInput {
            address,
            sequence,
            force_mac_name,
            warnings: &warnings,
            ..RenderInput::for_machine(machine, &facts)
        })?)
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

/// What reviewers are told, once, when someone else pushed `head` to `branch`.
pub(super) fn hands_off_note(branch: &str, head: &str) -> String {
    let short: String = head.chars().take(12).collect();
    format!(
        "Someone pushed `{short}` to `{branch}`, so Registrar will not update this branch any more (new facts or workflow labels no longer change it). Merging still registers what it holds and closing still rejects it. To hand the branch back to Registrar, close this pull request and delete the branch."
    )
}
