//! Branches: reading them, publishing a proposal's commit, merging, deleting, and what the
//! base branch holds.

use std::path::Path;

use git2::Oid;

use super::{Change, Ctx, GitError, GitRepo, Merged, Published, RefUpdate, Result, objects};

/// A YAML file on the base branch: its path from the repository's root, and its text.
pub type YamlFile = (String, String);

impl GitRepo {
    pub fn base_head(&self) -> Result<Oid> {
        self.target(&self.lock(), &self.settings.base)
            .ok_or_else(|| GitError::NoBase(self.settings.base.clone()))
    }

    pub fn branch_head(&self, branch: &str) -> Option<Oid> {
        self.target(&self.lock(), branch)
    }

    /// This Registrar's branches on the remote (`gitops.branch_prefix`), with their head commit and its
    /// message (capped: a message is data from the repository, not trusted to be small).
    pub fn registrar_branches(&self) -> Result<Vec<(String, Oid, String)>> {
        const MAX_MESSAGE: usize = 1 << 20;
        let repo = self.lock();
        let ours = crate::domain::branch_prefix();
        let prefix = self.tracking(ours);
        let mut out = Vec::new();
        let refs = repo
            .references_glob(&format!("{prefix}*"))
            .ctx(|| "listing Registrar's branches".into())?;
        for r in refs.flatten() {
            let (Ok(name), Some(oid)) = (r.name().map(str::to_string), r.target()) else {
                continue;
            };
            let Some(branch) = name.strip_prefix(&prefix).map(|b| format!("{ours}{b}")) else {
                continue;
            };
            let Ok(commit) = repo.find_commit(oid) else { continue };
            let raw = commit.message_bytes();
            let message = String::from_utf8_lossy(&raw[..raw.len().min(MAX_MESSAGE)]).into_owned();
            out.push((branch, oid, message));
        }
        Ok(out)
    }

    /// What merging `branch` would change: every path that differs between the branch head
    /// and its merge base with the base branch, with both contents (lossy UTF-8, capped).
    pub fn changes(&self, branch: &str) -> Result<Vec<Change>> {
        const MAX_CONTENT: usize = 256 << 10;
        let repo = self.lock();
        let (Some(head), Some(base)) = (self.target(&repo, branch), self.target(&repo, &self.settings.base)) else {
            return Ok(vec![]);
        };
        let merge_base = repo
            .merge_base(head, base)
            .ctx(|| format!("finding where {branch} left the base"))?;
        let old_tree = repo
            .find_commit(merge_base)
            .and_then(|c| c.tree())
            .ctx(|| "reading the merge base".into())?;
        let new_tree = repo
            .find_commit(head)
            .and_then(|c| c.tree())
            .ctx(|| format!("reading {branch}"))?;
        let diff = repo
            .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)
            .ctx(|| format!("comparing {branch} with the base"))?;
        let text = |oid: Oid| -> Option<String> {
            if oid.is_zero() {
                return None;
            }
            repo.find_blob(oid)
                .ok()
                .map(|b| String::from_utf8_lossy(&b.content()[..b.content().len().min(MAX_CONTENT)]).into_owned())
        };
        Ok(diff
            .deltas()
            .map(|d| {
                let path = d
                    .new_file()
                    .path()
                    .or(d.old_file().path())
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Change {
                    path,
                    old: text(d.old_file().id()),
                    new: text(d.new_file().id()),
                }
            })
            .collect())
    }

    /// The paths a commit changes relative to its only parent; `None` for a merge or a root.
    pub fn touched(&self, commit: Oid) -> Result<Option<Vec<String>>> {
        let repo = self.lock();
        let c = repo.find_commit(commit).ctx(|| format!("reading {commit}"))?;
        if c.parent_count() != 1 {
            return Ok(None);
        }
        let parent = c.parent(0).and_then(|p| p.tree()).ctx(|| "reading the parent".into())?;
        let tree = c.tree().ctx(|| "reading the tree".into())?;
        let diff = repo
            .diff_tree_to_tree(Some(&parent), Some(&tree), None)
            .ctx(|| "comparing with the parent".into())?;
        Ok(Some(
            diff.deltas()
                .filter_map(|d| {
                    d.new_file()
                        .path()
                        .or(d.old_file().path())
                        .map(|p| p.to_string_lossy().into_owned())
                })
                .collect(),
        ))
    }

    /// The file at `path` on the remote's `branch`, if both exist.
    pub fn read(&self, branch: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(head) = self.branch_head(branch) else {
            return Ok(None);
        };
        self.read_at(head, path)
    }

    /// The file at `path` in `commit`, if it has one.
    pub fn read_at(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>> {
        let repo = self.lock();
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .ctx(|| format!("reading {commit}"))?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        let blob = repo.find_blob(entry.id()).ctx(|| format!("reading {path}"))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// Makes `branch` hold the base commit `base` plus `files` (path, content; no content
    /// removes the file), in one commit
    /// whose message is `message`. Writes nothing if the branch already holds exactly that.
    /// `base` is the base head the files were computed from (a kustomization's resources):
    /// a fetch meanwhile must not put them on a newer base that they would undo.
    /// `before_push` runs with the new commit after it is written and before any ref moves:
    /// the caller records the commit as its own there, so that the forge's notice of the push
    /// (which may arrive before the push returns) is never taken for someone else's.
    pub fn publish(
        &self,
        branch: &str,
        files: &[(&str, Option<&[u8]>)],
        base: Oid,
        message: &str,
        before_push: impl FnOnce(Oid) -> std::result::Result<(), String>,
    ) -> Result<Published> {
        let (commit, old) = {
            let repo = self.lock();
            let blobs = files
                .iter()
                .map(|(p, c)| Ok((*p, c.map(|c| repo.blob(c)).transpose().ctx(|| format!("writing {p}"))?)))
                .collect::<Result<Vec<_>>>()?;
            let old = self.target(&repo, branch);
            let base_oid = base;
            let base = repo.find_commit(base_oid).ctx(|| "reading base".into())?;
            let mut tree = base.tree_id();
            for (path, blob) in &blobs {
                tree = match blob {
                    Some(blob) => objects::tree_with(&repo, &self.trees, tree, path, *blob),
                    // A removal (a decommission) is rare: libgit2's own tree update will do.
                    None => repo.find_tree(tree).and_then(|t| {
                        git2::build::TreeUpdateBuilder::new()
                            .remove(path)
                            .create_updated(&repo, &t)
                    }),
                }
                .ctx(|| format!("building tree with {path}"))?;
            }
            // Unchanged means the whole commit is what Registrar would write: the base head
            // as its only parent, the base tree plus these files and nothing else, this
            // message. A branch carrying anything more (another file, an older base) is
            // rewritten, so what a reviewer approves is what Registrar proposed.
            if let Some(head) = old {
                let current = repo.find_commit(head).ctx(|| format!("reading {branch}"))?;
                let parents: Vec<Oid> = current.parent_ids().collect();
                if current.tree_id() == tree && parents == [base_oid] && current.message().ok() == Some(message) {
                    return Ok(Published {
                        commit: head,
                        changed: false,
                    });
                }
            }
            let oid = objects::write_commit(&repo, tree, &[base_oid], &self.signature()?, message)
                .ctx(|| "committing".into())?;
            (oid, old)
        };
        before_push(commit).map_err(|message| GitError::Refused {
            refname: format!("refs/heads/{branch}"),
            message: format!("not pushed: {message}"),
        })?;
        self.update_refs(&[RefUpdate {
            branch,
            old,
            new: Some(commit),
            force: true,
        }])?;
        Ok(Published { commit, changed: true })
    }

    /// Whether `branch` was built on the current base head (false if either is missing).
    pub fn is_on_base(&self, branch: &str) -> bool {
        let repo = self.lock();
        let (Some(head), Some(base)) = (self.target(&repo, branch), self.target(&repo, &self.settings.base)) else {
            return false;
        };
        repo.find_commit(head)
            .ok()
            .is_some_and(|c| c.parent_ids().any(|p| p == base))
    }

    /// Merges `branch` into the base branch with a merge commit, as a forge's merge button
    /// would, then deletes the branch. A conflict is reported, never forced.
    pub fn merge(&self, branch: &str, message: &str) -> Result<Merged> {
        let mut attempt = 0;
        loop {
            self.fetch()?;
            let (merge_oid, base_oid) = {
                let repo = self.lock();
                let head = self
                    .target(&repo, branch)
                    .ok_or_else(|| GitError::NoBranch(branch.to_string()))?;
                let base_oid = self
                    .target(&repo, &self.settings.base)
                    .ok_or_else(|| GitError::NoBase(self.settings.base.clone()))?;
                if head == base_oid
                    || repo
                        .graph_descendant_of(base_oid, head)
                        .ctx(|| "comparing history".into())?
                {
                    drop(repo);
                    self.delete_branch(branch)?;
                    return Ok(Merged::AlreadyMerged);
                }
                let ours = repo.find_commit(base_oid).ctx(|| "reading base".into())?;
                let theirs = repo.find_commit(head).ctx(|| format!("reading {branch}"))?;
                let mut index = repo
                    .merge_commits(&ours, &theirs, None)
                    .ctx(|| format!("merging {branch}"))?;
                if index.has_conflicts() {
                    let mut paths: Vec<String> = index
                        .conflicts()
                        .ctx(|| "listing conflicts".into())?
                        .filter_map(|c| c.ok())
                        .filter_map(|c| c.our.or(c.their).map(|e| String::from_utf8_lossy(&e.path).into_owned()))
                        .collect();
                    paths.dedup();
                    return Err(GitError::Conflict {
                        branch: branch.to_string(),
                        base: self.settings.base.clone(),
                        paths,
                    });
                }
                let tree_oid = index.write_tree_to(&repo).ctx(|| "writing merged tree".into())?;
                let tree = repo.find_tree(tree_oid).ctx(|| "reading merged tree".into())?;
                let sig = self.signature()?;
                let oid = repo
                    .commit(None, &sig, &sig, message, &tree, &[&ours, &theirs])
                    .ctx(|| "committing merge".into())?;
                (oid, base_oid)
            };
            // Not forced: if someone moved the base meanwhile, the update is refused and we retry.
            match self.update_refs(&[RefUpdate {
                branch: &self.settings.base,
                old: Some(base_oid),
                new: Some(merge_oid),
                force: false,
            }]) {
                Ok(()) => {
                    self.delete_branch(branch)?;
                    return Ok(Merged::Merged(merge_oid));
                }
                Err(GitError::Refused { .. }) if attempt < 3 => {
                    attempt += 1;
                    tracing::info!(%branch, base = %base_oid, "base moved while merging; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes `branch` on the remote; a missing branch is fine.
    pub fn delete_branch(&self, branch: &str) -> Result<()> {
        let Some(old) = self.branch_head(branch) else {
            return Ok(());
        };
        self.update_refs(&[RefUpdate {
            branch,
            old: Some(old),
            new: None,
            force: true,
        }])
    }

    /// The text of every YAML file below `dir` on the base branch, with the directory's
    /// tree id; `None` if that id is `unless_tree` (nothing changed since the last call).
    pub fn yaml_files(&self, dir: &str, unless_tree: Option<Oid>) -> Result<Option<(Oid, Vec<YamlFile>)>> {
        let repo = self.lock();
        let Some(base) = self.target(&repo, &self.settings.base) else {
            return Ok(None);
        };
        let root = repo
            .find_commit(base)
            .and_then(|c| c.tree())
            .ctx(|| "reading base".into())?;
        let tree = if dir.is_empty() {
            root
        } else {
            match root.get_path(Path::new(dir)) {
                Ok(e) => repo.find_tree(e.id()).ctx(|| format!("reading {dir}"))?,
                Err(_) => return Ok(Some((Oid::ZERO_SHA1, Vec::new()))),
            }
        };
        if Some(tree.id()) == unless_tree {
            return Ok(None);
        }
        let mut files = Vec::new();
        let mut failed = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            let name = entry.name().unwrap_or_default();
            if entry.kind() == Some(git2::ObjectType::Blob) && crate::propose::index::is_yaml(Path::new(name)) {
                match repo.find_blob(entry.id()) {
                    Ok(b) => {
                        let path = match dir {
                            "" => format!("{parent}{name}"),
                            dir => format!("{}/{parent}{name}", dir.trim_end_matches('/')),
                        };
                        files.push((path, String::from_utf8_lossy(b.content()).into_owned()))
                    }
                    Err(e) => {
                        failed = Some((format!("{parent}{name}"), e));
                        return git2::TreeWalkResult::Abort;
                    }
                }
            }
            git2::TreeWalkResult::Ok
        })
        .ok();
        if let Some((path, e)) = failed {
            return Err(GitError::Git {
                context: format!("reading {path}"),
                source: e,
            });
        }
        Ok(Some((tree.id(), files)))
    }

    /// Whether `commit` is contained in the base branch (as last fetched).
    pub fn is_in_base(&self, commit: Oid) -> Result<bool> {
        let repo = self.lock();
        let Some(base) = self.target(&repo, &self.settings.base) else {
            return Ok(false);
        };
        Ok(base == commit
            || repo
                .graph_descendant_of(base, commit)
                .ctx(|| "comparing history".into())?)
    }
}
