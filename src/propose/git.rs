//! The GitOps repository, through a bare mirror in Registrar's state directory.
//!
//! Commits are built in memory (no worktree): the base branch's tree with one file replaced.
//! Every operation is idempotent: publishing identical content pushes nothing, merging
//! something already merged is a no-op, deleting a missing branch succeeds. Push results
//! are checked per ref, because libgit2 reports a refused ref through a callback while
//! `push()` itself may still succeed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::{BranchType, Cred, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository, Signature};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git: {context}: {source}")]
    Git { context: String, source: git2::Error },
    #[error("the remote refused {refname}: {message}")]
    Refused { refname: String, message: String },
    #[error("branch {0} does not exist on the remote")]
    NoBranch(String),
    #[error("base branch {0} does not exist on the remote; create it with an initial commit")]
    NoBase(String),
    #[error("merging {branch} into {base} conflicts in: {}", .paths.join(", "))]
    Conflict { branch: String, base: String, paths: Vec<String> },
}

type Result<T> = std::result::Result<T, GitError>;

trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}
impl<T> Ctx<T> for std::result::Result<T, git2::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| GitError::Git { context: what(), source })
    }
}

#[derive(Clone)]
pub struct GitSettings {
    pub remote_url: String,
    pub base: String,
    pub author_name: String,
    pub author_email: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub commit: Oid,
    /// False when the branch already held exactly this content: nothing was pushed.
    pub changed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// A merge commit on the base branch.
    Merged(Oid),
    /// The branch's head was already in the base branch.
    AlreadyMerged,
}

pub struct GitRepo {
    repo: Mutex<Repository>,
    settings: GitSettings,
    path: PathBuf,
}

const REMOTE: &str = "origin";

impl GitRepo {
    /// Opens (or creates) the bare mirror at `path` and points it at the remote.
    pub fn open(path: &Path, settings: GitSettings) -> Result<Self> {
        let repo = match Repository::open_bare(path) {
            Ok(r) => r,
            Err(_) => Repository::init_bare(path).ctx(|| format!("creating mirror {}", path.display()))?,
        };
        match repo.find_remote(REMOTE) {
            Ok(r) if r.url().ok() == Some(settings.remote_url.as_str()) => {}
            Ok(_) => repo.remote_set_url(REMOTE, &settings.remote_url).ctx(|| "setting remote URL".into())?,
            Err(_) => {
                repo.remote_with_fetch(REMOTE, &settings.remote_url, "+refs/heads/*:refs/remotes/origin/*").ctx(|| "adding remote".into())?;
            }
        }
        Ok(GitRepo { repo: Mutex::new(repo), settings, path: path.to_path_buf() })
    }

    pub fn base(&self) -> &str {
        &self.settings.base
    }

    pub fn mirror_path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Repository> {
        self.repo.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        let user = self.settings.username.clone();
        let pass = self.settings.password.clone();
        let mut tries = 0;
        cb.credentials(move |_url, username_from_url, _allowed| {
            tries += 1;
            // libgit2 asks again after a refusal; answering forever would loop.
            if tries > 1 {
                return Err(git2::Error::from_str("the remote refused the configured credentials"));
            }
            match &pass {
                Some(p) => Cred::userpass_plaintext(user.as_deref().or(username_from_url).unwrap_or("registrar"), p.expose_secret()),
                None => Err(git2::Error::from_str("the remote asks for credentials; set gitops.username and gitops.password_file")),
            }
        });
        cb
    }

    /// Brings the base branch and Registrar's branches up to date from the remote.
    pub fn fetch(&self) -> Result<()> {
        let repo = self.lock();
        let mut remote = repo.find_remote(REMOTE).ctx(|| "finding remote".into())?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        opts.prune(git2::FetchPrune::On);
        let base = &self.settings.base;
        let specs = [format!("+refs/heads/{base}:refs/remotes/origin/{base}"), "+refs/heads/registrar/*:refs/remotes/origin/registrar/*".to_string()];
        remote.fetch(&specs, Some(&mut opts), None).ctx(|| format!("fetching from {}", self.settings.remote_url))?;
        Ok(())
    }

    fn remote_ref(repo: &Repository, branch: &str) -> Option<Oid> {
        repo.find_branch(&format!("origin/{branch}"), BranchType::Remote).ok().and_then(|b| b.get().target())
    }

    pub fn base_head(&self) -> Result<Oid> {
        Self::remote_ref(&self.lock(), &self.settings.base).ok_or_else(|| GitError::NoBase(self.settings.base.clone()))
    }

    pub fn branch_head(&self, branch: &str) -> Option<Oid> {
        Self::remote_ref(&self.lock(), branch)
    }

    /// The file at `path` on the remote-tracking `branch`, if both exist.
    pub fn read(&self, branch: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let repo = self.lock();
        let Some(head) = Self::remote_ref(&repo, branch) else { return Ok(None) };
        let tree = repo.find_commit(head).and_then(|c| c.tree()).ctx(|| format!("reading {branch}"))?;
        let Ok(entry) = tree.get_path(Path::new(path)) else { return Ok(None) };
        let blob = repo.find_blob(entry.id()).ctx(|| format!("reading {path}"))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// Makes `branch` hold the base branch plus `content` at `path`, in one commit whose
    /// message is `message`. Pushes only if that differs from what the branch holds.
    pub fn publish(&self, branch: &str, path: &str, content: &[u8], message: &str) -> Result<Published> {
        let commit = {
            let repo = self.lock();
            let blob = repo.blob(content).ctx(|| "writing blob".into())?;
            if let Some(head) = Self::remote_ref(&repo, branch) {
                let current = repo.find_commit(head).ctx(|| format!("reading {branch}"))?;
                let same_blob = current.tree().ok().and_then(|t| t.get_path(Path::new(path)).ok()).map(|e| e.id()) == Some(blob);
                if same_blob && current.message().ok() == Some(message) {
                    return Ok(Published { commit: head, changed: false });
                }
            }
            let base_oid = Self::remote_ref(&repo, &self.settings.base).ok_or_else(|| GitError::NoBase(self.settings.base.clone()))?;
            let base = repo.find_commit(base_oid).ctx(|| "reading base".into())?;
            let base_tree = base.tree().ctx(|| "reading base tree".into())?;
            let tree_oid = git2::build::TreeUpdateBuilder::new()
                .upsert(path, blob, git2::FileMode::Blob)
                .create_updated(&repo, &base_tree)
                .ctx(|| format!("building tree with {path}"))?;
            let tree = repo.find_tree(tree_oid).ctx(|| "reading new tree".into())?;
            let sig = self.signature()?;
            let oid = repo.commit(None, &sig, &sig, message, &tree, &[&base]).ctx(|| "committing".into())?;
            repo.reference(&format!("refs/heads/{branch}"), oid, true, "registrar: publish").ctx(|| format!("updating {branch}"))?;
            oid
        };
        self.push(&[format!("+refs/heads/{branch}:refs/heads/{branch}")])?;
        self.lock()
            .reference(&format!("refs/remotes/origin/{branch}"), commit, true, "registrar: pushed")
            .ctx(|| "updating remote-tracking ref".into())?;
        Ok(Published { commit, changed: true })
    }

    /// Merges `branch` into the base branch with a merge commit, as a forge's merge button
    /// would, then deletes the branch. A conflict is reported, never forced.
    pub fn merge(&self, branch: &str, message: &str) -> Result<Merged> {
        for attempt in 0.. {
            self.fetch()?;
            let (merge_oid, base_oid) = {
                let repo = self.lock();
                let head = Self::remote_ref(&repo, branch).ok_or_else(|| GitError::NoBranch(branch.to_string()))?;
                let base_oid = Self::remote_ref(&repo, &self.settings.base).ok_or_else(|| GitError::NoBase(self.settings.base.clone()))?;
                if head == base_oid || repo.graph_descendant_of(base_oid, head).ctx(|| "comparing history".into())? {
                    drop(repo);
                    self.delete_branch(branch)?;
                    return Ok(Merged::AlreadyMerged);
                }
                let ours = repo.find_commit(base_oid).ctx(|| "reading base".into())?;
                let theirs = repo.find_commit(head).ctx(|| format!("reading {branch}"))?;
                let mut index = repo.merge_commits(&ours, &theirs, None).ctx(|| format!("merging {branch}"))?;
                if index.has_conflicts() {
                    let mut paths: Vec<String> = index
                        .conflicts()
                        .ctx(|| "listing conflicts".into())?
                        .filter_map(|c| c.ok())
                        .filter_map(|c| c.our.or(c.their).map(|e| String::from_utf8_lossy(&e.path).into_owned()))
                        .collect();
                    paths.dedup();
                    return Err(GitError::Conflict { branch: branch.to_string(), base: self.settings.base.clone(), paths });
                }
                let tree_oid = index.write_tree_to(&repo).ctx(|| "writing merged tree".into())?;
                let tree = repo.find_tree(tree_oid).ctx(|| "reading merged tree".into())?;
                let sig = self.signature()?;
                let oid = repo.commit(None, &sig, &sig, message, &tree, &[&ours, &theirs]).ctx(|| "committing merge".into())?;
                let base = &self.settings.base;
                repo.reference(&format!("refs/heads/{base}"), oid, true, "registrar: merge").ctx(|| "updating base".into())?;
                (oid, base_oid)
            };
            let base = self.settings.base.clone();
            // Not forced: if someone pushed to the base meanwhile, the remote refuses and we retry.
            match self.push(&[format!("refs/heads/{base}:refs/heads/{base}")]) {
                Ok(()) => {
                    self.lock().reference(&format!("refs/remotes/origin/{base}"), merge_oid, true, "registrar: pushed").ctx(|| "updating base ref".into())?;
                    self.delete_branch(branch)?;
                    return Ok(Merged::Merged(merge_oid));
                }
                Err(GitError::Refused { .. }) if attempt < 3 => {
                    tracing::info!(%branch, base = %base_oid, "base moved while merging; retrying");
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Deletes `branch` on the remote; a missing branch is fine.
    pub fn delete_branch(&self, branch: &str) -> Result<()> {
        if self.branch_head(branch).is_none() {
            return Ok(());
        }
        self.push(&[format!(":refs/heads/{branch}")])?;
        let repo = self.lock();
        for name in [format!("refs/remotes/origin/{branch}"), format!("refs/heads/{branch}")] {
            if let Ok(mut r) = repo.find_reference(&name) {
                r.delete().ctx(|| format!("deleting {name}"))?;
            }
        }
        Ok(())
    }

    /// Whether `commit` is contained in the base branch (as fetched).
    pub fn is_in_base(&self, commit: Oid) -> Result<bool> {
        let repo = self.lock();
        let Some(base) = Self::remote_ref(&repo, &self.settings.base) else { return Ok(false) };
        Ok(base == commit || repo.graph_descendant_of(base, commit).ctx(|| "comparing history".into())?)
    }

    fn push(&self, specs: &[String]) -> Result<()> {
        let repo = self.lock();
        let mut remote = repo.find_remote(REMOTE).ctx(|| "finding remote".into())?;
        let refused = std::cell::RefCell::new(Vec::new());
        let mut cb = self.callbacks();
        cb.push_update_reference(|refname, status| {
            if let Some(msg) = status {
                refused.borrow_mut().push((refname.to_string(), msg.to_string()));
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        remote.push(specs, Some(&mut opts)).ctx(|| format!("pushing {} to {}", specs.join(" "), self.settings.remote_url))?;
        drop(opts);
        if let Some((refname, message)) = refused.into_inner().into_iter().next() {
            return Err(GitError::Refused { refname, message });
        }
        Ok(())
    }

    fn signature(&self) -> Result<Signature<'static>> {
        Signature::now(&self.settings.author_name, &self.settings.author_email).ctx(|| "author signature".into())
    }
}

/// Creates the embedded default's GitOps repository: a bare repo whose base branch holds a
/// README, so it can be cloned, merged into and watched by Flux or Argo CD like any other.
pub fn init_local_remote(path: &Path, base: &str) -> Result<bool> {
    if path.join("HEAD").exists() {
        return Ok(false);
    }
    let repo = Repository::init_bare(path).ctx(|| format!("creating {}", path.display()))?;
    let readme = b"# Hardware\n\nTinkerbell Hardware manifests, proposed by Registrar and merged by reviewers.\n";
    let blob = repo.blob(readme).ctx(|| "writing README".into())?;
    let mut tb = repo.treebuilder(None).ctx(|| "tree".into())?;
    tb.insert("README.md", blob, 0o100644).ctx(|| "tree".into())?;
    let tree = repo.find_tree(tb.write().ctx(|| "tree".into())?).ctx(|| "tree".into())?;
    let sig = Signature::now("Registrar", "registrar@localhost").ctx(|| "signature".into())?;
    repo.commit(Some(&format!("refs/heads/{base}")), &sig, &sig, "Start the hardware repository", &tree, &[]).ctx(|| "initial commit".into())?;
    repo.set_head(&format!("refs/heads/{base}")).ctx(|| "HEAD".into())?;
    Ok(true)
}
