//! Changes of a machine git already holds: new hardware (drift), netboot off once it is
//! provisioned, and decommission. Each is a proposal of its own kind on a branch of its own
//! (`registrar/<mac>-<kind>-<rev>`), reviewed like a registration; merging it changes the
//! machine's manifests, closing it refuses only the change.
//!
//! Whether a machine changed is decided between two renders with today's templates: one
//! from what its manifests in git were rendered from (`Machine::settled`), one from what it
//! reports now. A template edit alone changes both alike and proposes nothing (that is
//! `registrar check --impact`'s business); facts the templates do not use change neither.

use chrono::Utc;

use super::{MachineGuard, ProposeError, Proposer, blocking, git};
use crate::domain::lifecycle::hardware_changes;
use crate::domain::{Basis, Facts, Machine, Proposal, ProposalKind, ProposalState, State, change_branch};
use crate::render::{RenderInput, Rendered, markdown};
use crate::store::{Pending, StoreError};

/// At most this many change lines in a title's count and a body's list.
const MAX_LINES: usize = 24;

/// A change worth a proposal.
struct Plan {
    kind: ProposalKind,
    /// What the forge shows: the manifest as it would be, with a title and body that say
    /// what changes (for a decommission, the manifest that goes).
    presented: Rendered,
    /// The new manifest; None removes the file.
    manifest: Option<String>,
    basis: Option<Basis>,
    /// What changes, in words, for the timeline.
    headline: String,
}

impl Proposer {
    /// Brings a change of a machine git holds to git and the forge, if there is one.
    pub(super) async fn publish_change(
        &self,
        held: &MachineGuard<'_>,
        work: Pending,
        machine: &Machine,
        recorded: Option<Proposal>,
    ) -> Result<bool, ProposeError> {
        let Some(home) = recorded else {
            // Adopted from the base branch without a proposal: nothing says where it lives.
            return self
                .synced_with_note(
                    work,
                    Some("no proposal recorded for this machine, so no change can be proposed"),
                )
                .await;
        };
        let open = Some(&home)
            .filter(|p| p.kind.is_change() && matches!(p.state, ProposalState::Open | ProposalState::Approving));
        if let Some(p) = open
            && self.branch_taken_over(held, work, p).await?
        {
            return Ok(false);
        }
        let Some(plan) = self.plan_change(machine, &home).await? else {
            return self.synced_with_note(work, None).await;
        };
        if let Some(p) = open.filter(|p| p.kind != plan.kind) {
            // One change at a time: the next one is proposed once this one is merged or closed.
            let why = format!(
                "a {} is proposed ({}): merge or close it, then the {} is proposed",
                p.kind.as_str(),
                p.url.as_deref().unwrap_or(&p.branch),
                plan.kind.as_str()
            );
            return self.synced_with_note(work, Some(&why)).await;
        }
        let branch = match open {
            Some(p) => p.branch.clone(),
            None => change_branch(&machine.mac, plan.kind, work.rev),
        };
        let git = self.git.clone();
        let base_head = blocking(move || git.base_head()).await?;
        let files = self
            .change_files(&home.path, plan.manifest.as_deref(), base_head)
            .await?;
        let message = format!(
            "{}\n\n{}\n\nRegistrar-Mac: {}\nRegistrar-Change: {}\n",
            plan.presented.title,
            plan.headline,
            machine.mac,
            plan.kind.as_str()
        );
        let (published, forge_ref) = self
            .publish_and_open(&branch, files, base_head, message, &plan.presented, open)
            .await?;
        let now = Utc::now();
        let proposal = Proposal {
            name: home.name.clone(),
            created_at: open.map(|p| p.created_at).unwrap_or(now),
            kind: plan.kind,
            basis: plan.basis.clone(),
            ..self.opened(
                machine.mac,
                forge_ref,
                branch.clone(),
                home.path.clone(),
                &plan.presented,
                published.commit.to_string(),
            )
        };
        let (store, mac, name) = (self.store.clone(), machine.mac, home.name.clone());
        let cause = (open.is_none()).then(|| format!("{} proposed on {branch}: {}", plan.kind.as_str(), plan.headline));
        blocking(move || {
            store.mark_synced(work, Some(&proposal), Some(&name), now)?;
            match cause {
                Some(cause) => store.note(mac, &cause, "registrar", now),
                None => Ok(()),
            }
        })
        .await?;
        if published.changed {
            tracing::info!(%mac, kind = plan.kind.as_str(), %branch, "change proposed");
        }
        Ok(published.changed)
    }

    /// Whether someone else pushed to an open change's branch: then it is theirs (recorded,
    /// told once), and this revision is done.
    pub(super) async fn branch_taken_over(
        &self,
        held: &MachineGuard<'_>,
        work: Pending,
        open: &Proposal,
    ) -> Result<bool, ProposeError> {
        let (git, b) = (self.git.clone(), open.branch.clone());
        let remote = blocking(move || Ok::<_, git::GitError>(git.branch_head(&b)))
            .await?
            .map(|o| o.to_string());
        let foreign = match &remote {
            Some(head) => self.is_foreign_head(open, head).await?,
            None => false,
        };
        if !(open.hands_off || foreign) {
            return Ok(false);
        }
        self.keep_hands_off(held, work, open, remote.as_deref().unwrap_or_default())
            .await?;
        Ok(true)
    }

    /// This revision needs nothing from git: recorded as synced, with why if there is a why.
    async fn synced_with_note(&self, work: Pending, why: Option<&str>) -> Result<bool, ProposeError> {
        let (store, why) = (self.store.clone(), why.map(str::to_string));
        blocking(move || {
            store.mark_synced(work, None, None, Utc::now())?;
            match why {
                Some(why) => store.set_error(work.mac, Some(&why)),
                None => Ok(()),
            }
        })
        .await?;
        Ok(false)
    }

    /// What, if anything, should change in git for a machine git holds.
    async fn plan_change(&self, machine: &Machine, home: &Proposal) -> Result<Option<Plan>, ProposeError> {
        let Some(facts) = machine.facts.clone() else {
            return Ok(None);
        };
        let settled = machine
            .settled
            .clone()
            .unwrap_or_else(|| Basis::registered(facts.clone()));
        match machine.wanted {
            Some(ProposalKind::Decommission) => return self.plan_decommission(machine, home, &settled).await.map(Some),
            Some(ProposalKind::Reprovision) => return self.plan_reprovision(machine, home, &settled).await.map(Some),
            _ => {}
        }
        let now = Basis {
            facts,
            // Once its netboot-off change merged, it stays off through later changes.
            provisioned: matches!(machine.state, State::Provisioned | State::Inventorying) || settled.provisioned,
            round: settled.round,
        };
        if now == settled {
            return Ok(None);
        }
        // Its address is looked up once: both renders keep the one it holds.
        let address = self.production_address(machine).await?;
        let before = self
            .render_settled(machine, &settled, &home.name, address.as_ref())
            .await?;
        let after = self.render_settled(machine, &now, &home.name, address.as_ref()).await?;
        let (git, path) = (self.git.clone(), home.path.clone());
        let on_base = blocking(move || git.read(git.base(), &path)).await?;
        let open_change = home.kind.is_change() && matches!(home.state, ProposalState::Open | ProposalState::Approving);
        if before.manifest == after.manifest || on_base.as_deref() == Some(after.manifest.as_bytes()) {
            // Nothing its manifests use changed (or git has it already): later reports are
            // compared with these facts. An open change is left to its reviewers.
            if !open_change {
                let (store, mac) = (self.store.clone(), machine.mac);
                blocking(move || store.settle(mac, &now)).await?;
            }
            return Ok(None);
        }
        let mut changes = hardware_changes(&settled.facts, &now.facts);
        if now.provisioned && !settled.provisioned {
            changes.push("netboot off after provisioning: allowPXE false, so a reboot cannot re-image it".into());
        }
        if changes.is_empty() {
            changes.push("what it reports changed its manifest (see the diff)".into());
        }
        let headline = summarise(&changes);
        let mut presented = after.clone();
        presented.title = format!("Update {}: {headline}", home.name);
        presented.summary = format!(
            "## Change of a registered machine\n\n{}\n\nMerging this updates {}; {} keeps its name, address and state. Closing it refuses only this change.\n\nThe manifest after this change:\n\n{}",
            bullet_list(&changes),
            markdown::code(&home.path),
            markdown::escape(&home.name),
            markdown::fenced(&after.manifest, "yaml"),
        );
        Ok(Some(Plan {
            kind: ProposalKind::Update,
            manifest: Some(after.manifest),
            presented,
            basis: Some(now),
            headline,
        }))
    }

    async fn plan_decommission(
        &self,
        machine: &Machine,
        home: &Proposal,
        settled: &Basis,
    ) -> Result<Plan, ProposeError> {
        let address = self.production_address(machine).await?;
        let mut presented = self
            .render_settled(machine, settled, &home.name, address.as_ref())
            .await?;
        let name = markdown::escape(&home.name);
        presented.title = format!("Decommission {}", home.name);
        presented.summary = format!(
            "## Decommission\n\nRemoves {} — the Hardware {name} and the Workflow and BMC objects in that file — from {}.\n\nOnce merged and applied (Flux or Argo CD prunes the objects), {name} ({}) is decommissioned: its addresses return to their pools after the quarantine, and Registrar keeps its history. Closing this pull request keeps the machine as it is.\n",
            markdown::code(&home.path),
            markdown::code(self.git.base()),
            markdown::code(&machine.mac.to_string()),
        );
        Ok(Plan {
            kind: ProposalKind::Decommission,
            manifest: None,
            presented,
            basis: None,
            headline: format!("decommission {}", home.name),
        })
    }

    async fn plan_reprovision(
        &self,
        machine: &Machine,
        home: &Proposal,
        settled: &Basis,
    ) -> Result<Plan, ProposeError> {
        let (next, after, workflow) = self.reprovision_render(machine, &home.name, settled).await?;
        let name = markdown::escape(&home.name);
        let mut presented = after.clone();
        presented.title = format!("Re-provision {}", home.name);
        presented.summary = format!(
            "## Re-provisioning\n\n> **⚠ Merging this re-images {name}.** Its Hardware gets netboot back (`allowPXE: true`) and a new Workflow, {workflow}, which Tinkerbell runs at its next network boot: power-cycle it once Flux or Argo CD has applied this (Registrar does not). Registrar follows {workflow} to provisioned and then proposes switching netboot off again.\n\nClosing this pull request keeps the machine as it is.\n\nThe manifest after this change:\n\n{}",
            markdown::fenced(&after.manifest, "yaml"),
            workflow = markdown::code(&workflow),
        );
        Ok(Plan {
            kind: ProposalKind::Reprovision,
            manifest: Some(after.manifest),
            presented,
            basis: Some(next),
            headline: format!("re-provision {} with Workflow {workflow}", home.name),
        })
    }

    /// The next provisioning round of a machine git holds (netboot on, the round's Workflow
    /// name), and that Workflow's name; refused when the templates would give the new round's
    /// Workflow the old one's name, which Tinkerbell would never run again.
    pub(super) async fn reprovision_render(
        &self,
        machine: &Machine,
        name: &str,
        settled: &Basis,
    ) -> Result<(Basis, Rendered, String), ProposeError> {
        let address = self.production_address(machine).await?;
        let next = Basis {
            facts: machine.facts.clone().unwrap_or_else(|| settled.facts.clone()),
            provisioned: false,
            round: settled.round + 1,
        };
        let before = self.render_settled(machine, settled, name, address.as_ref()).await?;
        let after = self.render_settled(machine, &next, name, address.as_ref()).await?;
        let workflow_of = |r: &Rendered| {
            r.documents
                .iter()
                .find(|d| d["kind"] == "Workflow")
                .and_then(|d| d["metadata"]["name"].as_str().map(str::to_string))
        };
        match (workflow_of(&before), workflow_of(&after)) {
            (_, None) => Err(ProposeError::Conflict(format!(
                "{name}'s manifest has no provisioning Workflow: there is nothing to run again"
            ))),
            (Some(old), Some(new)) if old == new => Err(ProposeError::Conflict(format!(
                "its workflow template names the Workflow {new:?} in every round, and Tinkerbell never runs a finished Workflow again: name it `{{{{ workflow_name }}}}`"
            ))),
            (_, Some(new)) => Ok((next, after, new)),
        }
    }

    /// Renders a machine git holds under its name in git, from `basis`.
    pub(super) async fn render_settled(
        &self,
        machine: &Machine,
        basis: &Basis,
        name: &str,
        address: Option<&crate::ipam::Address>,
    ) -> Result<Rendered, ProposeError> {
        let (facts, warnings): (Facts, Vec<String>) = self.check_identity(machine, &basis.facts).await?;
        Ok(self.renderer.render(&RenderInput {
            address,
            warnings: &warnings,
            name: Some(name),
            provisioned: basis.provisioned,
            round: basis.round,
            ..RenderInput::for_machine(machine, &facts)
        })?)
    }

    /// The files a change writes: the manifest (or its removal), and the directory's
    /// kustomization with the file listed (or no longer listed).
    async fn change_files(
        &self,
        path: &str,
        manifest: Option<&str>,
        base: git2::Oid,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, ProposeError> {
        let mut files = vec![(path.to_string(), manifest.map(|m| m.as_bytes().to_vec()))];
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
        if let Some((kpath, text)) = self.base_kustomization(dir, Some(base)).await? {
            let text = String::from_utf8_lossy(&text);
            let updated = match manifest {
                Some(_) => super::index::with_resource(&text, file),
                None => super::index::without_resource(&text, file),
            }
            .map_err(|e| ProposeError::Conflict(format!("{kpath}: {e}")))?;
            files.push((kpath, Some(updated.into_bytes())));
        }
        Ok(files)
    }

    /// A merged decommission whose Hardware is gone from the cluster (or, without a cluster
    /// to watch, merged): decommissioned, its addresses back to their pools after the
    /// quarantine, its discovery objects and tokens gone. Its history stays.
    pub async fn finish_decommission(&self, mac: crate::domain::Mac, cause: &str) -> Result<Machine, ProposeError> {
        let held = self.machines.lock(mac).await;
        self.record_decommissioned(&held, cause).await
    }

    pub(super) async fn record_decommissioned(
        &self,
        held: &MachineGuard<'_>,
        cause: &str,
    ) -> Result<Machine, ProposeError> {
        let (store, mac, cause) = (self.store.clone(), held.mac(), cause.to_string());
        let (machine, done) = blocking(move || {
            let m = store.machine(mac)?.ok_or(StoreError::NotFound(mac))?;
            if m.state != State::Decommissioning {
                return Ok::<_, StoreError>((m, false));
            }
            Ok((
                store.transition(mac, State::Decommissioned, &cause, "registrar", Utc::now())?,
                true,
            ))
        })
        .await?;
        if done {
            self.remove_discovery_objects(mac).await;
            self.release_addresses(mac).await?;
            tracing::info!(%mac, "machine decommissioned");
        }
        Ok(machine)
    }

    /// Whether Registrar watches a cluster (then the Hardware leaving it finishes a
    /// decommission; otherwise the merge does).
    pub(super) fn watches_cluster(&self) -> bool {
        self.cluster.get().is_some()
    }
}

/// The first change, and how many more: a title's worth.
fn summarise(changes: &[String]) -> String {
    match changes {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first}, and {} more", rest.len()),
    }
}

/// The changes as a Markdown list; reported text is escaped, so no fact can format, link
/// or mention.
fn bullet_list(changes: &[String]) -> String {
    let mut out: Vec<String> = changes
        .iter()
        .take(MAX_LINES)
        .map(|c| format!("- {}", markdown::escape(c)))
        .collect();
    if changes.len() > MAX_LINES {
        out.push(format!("- … and {} more", changes.len() - MAX_LINES));
    }
    out.join("\n")
}
