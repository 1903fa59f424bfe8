//! Grouped proposals (`discovery.group_by`): machines of one import batch, rack, switch or
//! rule-chosen key share one pull request, one file each. A member's sync renders it and
//! records it in its group (`join`); the group's branch and pull request are rewritten from
//! its members afterwards (`publish_groups`), once per pass however many joined. A reviewer
//! leaves machines out (a comment command, or unchecking one in the description); the branch
//! is rewritten without them, and merging registers exactly the members whose files the
//! base then holds.

use chrono::Utc;

use super::forge::{AutoMerge, Draft, ForgeRef};
mod observe;

use super::{MachineGuard, ProposeError, Proposer, blocking, git, index};
use crate::domain::{
    Basis, Facts, Group, GroupBy, GroupKey, GroupMember, Mac, Machine, Proposal, ProposalKind, ProposalState,
};
use crate::render::Rendered;
use crate::render::markdown::{code, escape};
use crate::store::Pending;

/// What publishing a group came to.
enum Published {
    /// Pushed and shown on the forge (or left alone: nothing to push).
    Pushed,
    /// Pushed, and merged by Registrar at once (approval by policy on a forge without
    /// merge-when-ready): the merge is to be recorded.
    MergedByPolicy,
}

/// How a group's pull request ended, as the forge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEnd {
    Open,
    Merged,
    Closed,
}

impl Proposer {
    /// Groups machines by `by`, at most `size` in one pull request.
    pub fn with_groups(mut self, by: GroupBy, size: u64) -> Self {
        self.group_by = by;
        self.group_size = size.max(1);
        self
    }

    pub(super) fn groups_machines(&self) -> bool {
        self.group_by != GroupBy::None
    }

    /// Whether a machine may be proposed in a group, before it is rendered (a rule's key is
    /// known only then): such a machine takes no review slot.
    pub(super) fn may_join_group(&self, machine: &Machine) -> bool {
        match self.group_by {
            GroupBy::None => false,
            GroupBy::Rule => true,
            _ => self.group_key(machine, None).is_some(),
        }
    }

    /// The group a machine is proposed in, if grouping is on and it has the key.
    pub(super) fn group_key(&self, machine: &Machine, rendered: Option<&Rendered>) -> Option<GroupKey> {
        let expected = machine.expected.as_ref();
        match self.group_by {
            GroupBy::None => None,
            GroupBy::Import => expected
                .and_then(|e| GroupKey::new("import", &e.batch_id.to_string(), format!("import batch {}", e.batch))),
            GroupBy::Rack => expected
                .and_then(|e| e.rack.as_deref())
                .and_then(|rack| GroupKey::new("rack", rack, format!("rack {rack}"))),
            GroupBy::Switch => machine
                .sighting
                .as_ref()
                .and_then(|s| s.relay.as_ref())
                .and_then(|r| r.remote_id.as_deref())
                .and_then(|switch| GroupKey::new("switch", switch, format!("switch {switch}"))),
            GroupBy::Rule => rendered?
                .decision
                .values
                .get("group")
                .and_then(|v| v.as_str())
                .and_then(|g| GroupKey::new("rule", g, format!("group {g}"))),
        }
    }

    /// Records a rendered machine in its group; the group's branch is rewritten after the
    /// pass (`publish_groups`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn join(
        &self,
        held: &MachineGuard<'_>,
        work: Pending,
        machine: &Machine,
        facts: &Facts,
        key: GroupKey,
        rendered: &Rendered,
        path: String,
        address: Option<&crate::ipam::Address>,
        existing: Option<&Proposal>,
    ) -> Result<bool, ProposeError> {
        debug_assert_eq!(held.mac(), machine.mac);
        let member = GroupMember {
            mac: machine.mac,
            path: path.clone(),
            name: rendered.name.clone(),
            manifest: rendered.manifest.clone(),
            workflow: rendered.decision.workflow.clone(),
            address: address.map(|a| a.ip.clone()),
            expected: machine
                .expected
                .as_ref()
                .map(|e| format!("row {} of {}", e.row, e.batch)),
            warnings: rendered.warnings.clone(),
            exact: self.auto_approve
                && rendered.warnings.is_empty()
                && machine.expected.as_ref().is_some_and(|e| e.matches(facts)),
        };
        let (store, size) = (self.store.clone(), self.group_size);
        let group = blocking(move || store.join_group(&key, size, &member, Utc::now())).await?;
        let now = Utc::now();
        let proposal = Proposal {
            created_at: existing.map(|e| e.created_at).unwrap_or(now),
            basis: Some(Basis::registered(facts.clone())),
            ..self.opened(
                machine.mac,
                ForgeRef {
                    number: group.number,
                    url: group.url.clone(),
                },
                group.branch.clone(),
                path,
                rendered,
                group.head.clone(),
            )
        };
        let (store, name) = (self.store.clone(), rendered.name.clone());
        blocking(move || store.mark_synced(work, Some(&proposal), Some(&name), now)).await?;
        tracing::debug!(mac = %machine.mac, group = %group.branch, "machine joined its group");
        Ok(group.rev > group.synced_rev)
    }

    /// The groups' task: after each pass of the queue (and every `interval` anyway, so a
    /// failed push is tried again), pushes the groups whose members changed.
    pub async fn run_groups(
        self: std::sync::Arc<Self>,
        interval: std::time::Duration,
        shutdown: crate::shutdown::Shutdown,
    ) {
        loop {
            // Idle: nothing in the queue is due now (a machine waiting out its backoff would
            // otherwise keep every partly filled group from ever being pushed).
            let store = self.store.clone();
            let idle = match blocking(move || store.pending(1000)).await {
                Ok(pending) => {
                    let now = std::time::Instant::now();
                    !pending.iter().any(|w| self.retries.due(w.mac, now))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the queue; groups wait");
                    false
                }
            };
            if let Err(e) = self.publish_groups(idle).await {
                tracing::warn!(error = %e, "group pass failed; retrying");
            }
            tokio::select! {
                _ = self.groups_wake.notified() => {}
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Rewrites every group whose members changed: its branch, then its pull request. While
    /// machines still wait in the queue (`idle` false), only full groups are: a delivery
    /// that fills its groups over many passes costs each pull request one create, not an
    /// edit per pass.
    async fn publish_groups(&self, idle: bool) -> Result<(), ProposeError> {
        if !self.groups_machines() {
            return Ok(());
        }
        let _gate = self.group_gate.lock().await;
        let store = self.store.clone();
        let due: Vec<Group> = blocking(move || store.groups())
            .await?
            .into_iter()
            .filter(|g| g.state == "open" && !g.hands_off && g.rev > g.synced_rev)
            // A group already on the forge is rewritten at once: a machine left out must not
            // stay in what reviewers (or auto-merge) may merge.
            .filter(|g| idle || g.members >= self.group_size || g.number.is_some())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let git = self.git.clone();
        blocking(move || git.fetch()).await?;
        let mut merged_now = Vec::new();
        for group in due {
            match self.publish_group(&group).await {
                Ok(Published::MergedByPolicy) => merged_now.push(group.id),
                Ok(Published::Pushed) => {}
                Err(e) => {
                    tracing::warn!(group = %group.branch, error = %e, "could not publish the group; retried at the next pass")
                }
            }
        }
        // Registrar merged these itself: recorded now (outside the gate, which recording
        // takes), not when a delivery or the reconcile happens to look.
        drop(_gate);
        for id in merged_now {
            if let Err(e) = self.look_at_group(id, super::auto_approve::POLICY_ACTOR).await {
                tracing::warn!(group = id, error = %e, "could not record the group's merge; the reconcile will");
            }
        }
        Ok(())
    }

    async fn publish_group(&self, group: &Group) -> Result<Published, ProposeError> {
        let (store, id) = (self.store.clone(), group.id);
        let mut members = blocking(move || store.group_members(id)).await?;
        // Someone pushed to the branch: never overwrite their work.
        if group.number.is_some() {
            let (git, branch) = (self.git.clone(), group.branch.clone());
            let remote = blocking(move || Ok::<_, git::GitError>(git.branch_head(&branch))).await?;
            if let Some(head) = remote.map(|o| o.to_string())
                && self.is_foreign_group_head(group, &head).await?
            {
                self.hand_over_group(group, &head, &members).await?;
                return Ok(Published::Pushed);
            }
        }
        // The description as it is now first: a reviewer may have unchecked a machine since
        // the last look, and rewriting it must not undo that.
        if let (Some(number), Some(first)) = (group.number, members.first())
            && let Some(description) = self.forge.review(&self.shown(group, first.mac)).await?.description
        {
            let left_out: Vec<Mac> = crate::domain::group::unchecked_members(&description)
                .into_iter()
                .filter(|mac| members.iter().any(|m| m.mac == *mac))
                .collect();
            for mac in &left_out {
                let why = format!("left out of pull request #{number} (unchecked in its description)");
                let actor = format!("{}:description", self.forge.kind());
                self.reject(*mac, &actor, &why).await?;
            }
            members.retain(|m| !left_out.contains(&m.mac));
        }
        if members.is_empty() {
            // Every machine was left out: the pull request has nothing to register.
            if group.number.is_some() {
                self.forge.reject(&self.shown(group, no_machine()), "registrar").await?;
            }
            let store = self.store.clone();
            blocking(move || store.finish_group(id)).await?;
            tracing::info!(group = %group.branch, "every machine of the group was left out: its pull request is closed");
            return Ok(Published::Pushed);
        }
        let git = self.git.clone();
        let base_head = blocking(move || git.base_head()).await?;
        // A file at a member's path on the base that is not what Registrar would write (a
        // hand-written one, added since it joined) is never overwritten: the member goes
        // back to its queue, whose sync says why.
        let mut clashing = Vec::new();
        for m in &members {
            let (git, path) = (self.git.clone(), m.path.clone());
            if blocking(move || git.read_at(base_head, &path))
                .await?
                .is_some_and(|on_base| on_base != m.manifest.as_bytes())
            {
                clashing.push(m.mac);
            }
        }
        for mac in &clashing {
            let (store, mac) = (self.store.clone(), *mac);
            blocking(move || {
                store.leave_group(mac)?;
                store.requeue(mac, Utc::now()).map(|_| ())
            })
            .await?;
        }
        members.retain(|m| !clashing.contains(&m.mac));
        if members.is_empty() {
            return Ok(Published::Pushed);
        }
        let mut files: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(members.len() + 1);
        let mut kustomizations: std::collections::BTreeMap<String, (String, String)> = Default::default();
        for m in &members {
            files.push((m.path.clone(), Some(m.manifest.clone().into_bytes())));
            let (dir, file) = m.path.rsplit_once('/').unwrap_or(("", &m.path));
            if !kustomizations.contains_key(dir)
                && let Some((kpath, text)) = self.base_kustomization(dir, Some(base_head)).await?
            {
                kustomizations.insert(dir.to_string(), (kpath, String::from_utf8_lossy(&text).into_owned()));
            }
            if let Some((kpath, text)) = kustomizations.get_mut(dir) {
                *text =
                    index::with_resource(text, file).map_err(|e| ProposeError::Conflict(format!("{kpath}: {e}")))?;
            }
        }
        files.extend(kustomizations.into_values().map(|(p, t)| (p, Some(t.into_bytes()))));
        // Approval by policy holds only while every member matches its import row: taken
        // back before a branch that no longer qualifies is pushed, so GitHub never merges it.
        let qualifies = self.auto_approve && members.iter().all(|m| m.exact);
        if group.auto_merge && !qualifies {
            self.forge.cancel_auto_merge(&self.shown(group, members[0].mac)).await?;
            let store = self.store.clone();
            blocking(move || store.set_group_auto_merge(id, false)).await?;
            tracing::info!(group = %group.branch, "a member no longer matches its import row: auto-merge taken back");
        }
        let title = self.group_title(group, &members);
        let body = self.group_body(group, &members, qualifies);
        let message = group_commit_message(&title, group, &members);
        let published = self.publish_files(&group.branch, files, base_head, message).await?;
        // The body is written whenever the group is (its summary is not recorded).
        let existing = group.number.map(|_| Proposal {
            summary: String::new(),
            ..self.shown(group, members[0].mac)
        });
        let draft = Draft {
            branch: &group.branch,
            title: &title,
            body: &body,
            workflow: None,
        };
        let forge_ref = self.forge.open(&draft, existing.as_ref()).await?;
        let (store, rev, head) = (self.store.clone(), group.rev, published.commit.to_string());
        let recorded = forge_ref.clone();
        blocking(move || store.mark_group_synced(id, rev, recorded.number, recorded.url.as_deref(), &head)).await?;
        tracing::info!(group = %group.branch, members = members.len(), commit = %published.commit, "group proposal pushed");
        if qualifies && !group.auto_merge {
            let shown = Proposal {
                number: forge_ref.number,
                url: forge_ref.url,
                head: published.commit.to_string(),
                ..self.shown(group, members[0].mac)
            };
            return self.auto_merge_group(id, &shown, &members).await;
        }
        Ok(Published::Pushed)
    }

    /// Hands a group whose every member matches its import row to the forge's
    /// merge-when-ready; its merge is then observed like a person's.
    async fn auto_merge_group(
        &self,
        id: i64,
        shown: &Proposal,
        members: &[GroupMember],
    ) -> Result<Published, ProposeError> {
        match self.forge.auto_merge(shown).await {
            Ok(AutoMerge::Enabled | AutoMerge::Merged) => {
                let (store, macs) = (self.store.clone(), members.iter().map(|m| m.mac).collect::<Vec<_>>());
                let number = shown.number.map(|n| format!(" #{n}")).unwrap_or_default();
                blocking(move || {
                    store.set_group_auto_merge(id, true)?;
                    let note = format!(
                        "approved by policy (every machine of its group matches its import row exactly): auto-merge enabled on pull request{number}, the forge merges once the required checks pass"
                    );
                    macs.into_iter()
                        .try_for_each(|mac| store.note(mac, &note, super::auto_approve::POLICY_ACTOR, Utc::now()))
                })
                .await?;
            }
            // A forge without merge-when-ready (Forgejo/Gitea, GitLab): Registrar merges it
            // now, pinned to the head it just pushed; the merge is then seen like a person's.
            Ok(AutoMerge::MergeNow) => {
                if let Err(e) = self.forge.approve(shown, super::auto_approve::POLICY_ACTOR).await {
                    tracing::warn!(group = %shown.branch, error = %e, "could not merge the group by policy; a person reviews it");
                    return Ok(Published::Pushed);
                }
                let (store, macs) = (self.store.clone(), members.iter().map(|m| m.mac).collect::<Vec<_>>());
                let number = shown.number.map(|n| format!(" #{n}")).unwrap_or_default();
                blocking(move || {
                    let note = format!(
                        "approved by policy (every machine of its group matches its import row exactly): pull request{number} merged"
                    );
                    macs.into_iter()
                        .try_for_each(|mac| store.note(mac, &note, super::auto_approve::POLICY_ACTOR, Utc::now()))
                })
                .await?;
                return Ok(Published::MergedByPolicy);
            }
            Err(e) => {
                tracing::warn!(group = %shown.branch, error = %e, "could not enable auto-merge on the group; a person reviews it");
            }
        }
        Ok(Published::Pushed)
    }

    /// Whether `head` is a commit someone other than Registrar pushed to the group's branch.
    async fn is_foreign_group_head(&self, group: &Group, head: &str) -> Result<bool, ProposeError> {
        if head.is_empty() || head == group.head {
            return Ok(false);
        }
        let (store, key) = (self.store.clone(), crate::domain::pushed_key(head));
        Ok(!blocking(move || store.was_remembered(&key)).await?)
    }

    /// Leaves the group's branch to whoever pushed `head` to it: recorded first (so the
    /// note is said once), then said on the pull request. Members whose file that head
    /// does not hold (they joined after Registrar's last push) go back to their queue and
    /// into another group.
    async fn hand_over_group(&self, group: &Group, head: &str, members: &[GroupMember]) -> Result<(), ProposeError> {
        tracing::warn!(group = %group.branch, %head, "someone pushed to the group's branch; Registrar stops updating it");
        let (store, id) = (self.store.clone(), group.id);
        blocking(move || store.set_group_hands_off(id)).await?;
        let Some(first) = members.first() else { return Ok(()) };
        let note = super::sync::hands_off_note(&group.branch, head);
        self.forge.say(&self.shown(group, first.mac), &note).await?;
        let git = self.git.clone();
        blocking(move || git.fetch()).await?;
        let commit = git2::Oid::from_str(head).map_err(|e| ProposeError::Conflict(format!("head {head}: {e}")))?;
        for m in members {
            let (git, path) = (self.git.clone(), m.path.clone());
            if blocking(move || git.read_at(commit, &path)).await?.is_none() {
                let (store, mac) = (self.store.clone(), m.mac);
                blocking(move || {
                    store.leave_group(mac)?;
                    store.requeue(mac, Utc::now()).map(|_| ())
                })
                .await?;
            }
        }
        self.wake();
        Ok(())
    }

    /// A group's pull request as a proposal, for the forge's calls that take one.
    fn shown(&self, group: &Group, mac: Mac) -> Proposal {
        let now = Utc::now();
        Proposal {
            mac,
            forge: self.forge.kind().to_string(),
            number: group.number,
            url: group.url.clone(),
            branch: group.branch.clone(),
            path: String::new(),
            name: group.key.clone(),
            title: group.title.clone(),
            summary: String::new(),
            head: group.head.clone(),
            rule: String::new(),
            workflow: None,
            state: ProposalState::Open,
            created_at: group.created_at,
            updated_at: now,
            hands_off: group.hands_off,
            kind: ProposalKind::Register,
            basis: None,
            replaces: None,
        }
    }

    fn group_title(&self, group: &Group, members: &[GroupMember]) -> String {
        let n = members.len();
        let what = if n == 1 { "machine" } else { "machines" };
        // The title is plain text on GitHub (no Markdown), but it is capped like a name.
        let title: String = group.title.chars().take(80).collect();
        format!("Register {n} {what} of {title}")
    }

    /// The description: what merging does, how to leave a machine out, and one task-list
    /// line per machine. (GitHub makes task-list items clickable; a table's cells are not.)
    fn group_body(&self, group: &Group, members: &[GroupMember], by_policy: bool) -> String {
        let mut body = String::new();
        // Comment commands and auto-merge are GitHub's; elsewhere a checkbox is the way to
        // leave a machine out, and Registrar merges what qualifies itself.
        let github = self.forge.kind() == "github";
        if by_policy {
            body.push_str(if github {
                "**Approved by policy** (`discovery.auto_approve: expected`): every machine here reported exactly what its import row says, so auto-merge is on and GitHub merges once the required checks pass. Leaving a machine out, or one that no longer matches, takes it back.\n\n"
            } else {
                "**Approved by policy** (`discovery.auto_approve: expected`): every machine here reported exactly what its import row says, so Registrar merges it.\n\n"
            });
        }
        let warned = members.iter().filter(|m| !m.warnings.is_empty()).count();
        if warned > 0 {
            body.push_str(&format!(
                "> **⚠ {warned} of these machines carry a warning (marked ⚠ below): read them before merging.**\n\n"
            ));
        }
        let expected = members.iter().filter(|m| m.expected.is_some()).count();
        body.push_str(&format!(
            "Registrar proposes **{} machines** of {} ({} expected by an import, {} not).\n\n",
            members.len(),
            escape(&group.title),
            expected,
            members.len() - expected
        ));
        body.push_str(if github {
            "**Merging registers every machine checked below.** To leave one out, uncheck it, or comment \
             `/registrar reject <mac> [reason]`; `/registrar workflow <mac> <name>` changes one machine's workflow. \
             Registrar then rewrites this branch without it (or re-rendered), and the rest merge together. \
             Only people with write access to this repository are heard. Closing this pull request rejects every machine in it.\n\n"
        } else {
            "**Merging registers every machine checked below.** To leave one out, uncheck it: Registrar then \
             rewrites this branch without it, and the rest merge together. Closing this pull request rejects \
             every machine in it.\n\n"
        });
        for m in members {
            let mut line = format!("- [x] {} **{}**", code(&m.mac.to_string()), escape(&m.name));
            match &m.expected {
                Some(row) => line.push_str(&format!(" · expected ({})", escape(row))),
                None => line.push_str(" · not expected"),
            }
            if let Some(ip) = &m.address {
                line.push_str(&format!(" · {}", code(ip)));
            }
            match &m.workflow {
                Some(w) => line.push_str(&format!(" · workflow {}", code(w))),
                None => line.push_str(" · no workflow"),
            }
            line.push_str(&format!(" · {}", code(&m.path)));
            for w in &m.warnings {
                line.push_str(&format!(" · ⚠ {}", escape(w)));
            }
            body.push_str(&line);
            body.push('\n');
        }
        body
    }

    /// Groups whose branch is behind the base are rewritten on it.
    pub(super) async fn touch_stale_groups(&self) -> Result<usize, ProposeError> {
        let store = self.store.clone();
        let groups = blocking(move || store.groups()).await?;
        let mut touched = 0;
        for g in groups
            .into_iter()
            .filter(|g| g.state == "open" && !g.hands_off && g.number.is_some())
        {
            let (git, b) = (self.git.clone(), g.branch.clone());
            if !blocking(move || Ok::<_, git::GitError>(git.is_on_base(&b))).await? {
                let store = self.store.clone();
                blocking(move || store.touch_group(g.id)).await?;
                touched += 1;
            }
        }
        Ok(touched)
    }
}

/// The machine a group's proposal names when there is none in particular: the forge's calls
/// about a group read only its branch, number and head. (All zeroes is not a MAC.)
fn no_machine() -> Mac {
    Mac::from_bytes([0x02, 0, 0, 0, 0, 0]).expect("a locally administered unicast MAC")
}

/// The group's commit: which machines it registers (their facts are in each machine's
/// record; a hundred facts trailers would bury the list).
fn group_commit_message(title: &str, group: &Group, members: &[GroupMember]) -> String {
    let mut message = format!("{title}\n\nProposed by Registrar as group {}.\n\n", group.key);
    for m in members {
        message.push_str(&format!("Registrar-Mac: {}\n", m.mac));
    }
    message
}
