//! The GitOps repository, through a bare mirror in Registrar's state directory.
//!
//! Commits are built in memory (no worktree): the base branch's tree with one file replaced.
//! A `file://` remote is written in place; any other is reached through a bare mirror.
//! Every operation is idempotent: publishing identical content pushes nothing, merging
//! something already merged is a no-op, deleting a missing branch succeeds. Push results
//! are checked per ref, because libgit2 reports a refused ref through a callback while
//! `push()` itself may still succeed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod objects;

use git2::{Cred, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository, Signature};
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
    Conflict {
        branch: String,
        base: String,
        paths: Vec<String>,
    },
}

type Result<T> = std::result::Result<T, GitError>;

trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}
impl<T> Ctx<T> for std::result::Result<T, git2::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| GitError::Git {
            context: what(),
            source,
        })
    }
}

/// A password that may change while Registrar runs (a GitHub App's installation token
/// expires after an hour and is refreshed before that).
#[derive(Clone, Default)]
pub struct Password(Arc<std::sync::RwLock<Option<SecretString>>>);

impl Password {
    pub fn fixed(secret: Option<SecretString>) -> Self {
        Password(Arc::new(std::sync::RwLock::new(secret)))
    }
    pub fn set(&self, secret: SecretString) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(secret);
    }
    pub fn get(&self) -> Option<SecretString> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
pub struct GitSettings {
    pub remote_url: String,
    pub base: String,
    pub author_name: String,
    pub author_email: String,
    pub username: Option<String>,
    pub password: Password,
}

/// One file a branch changes: its content on the base (None: new) and on the branch
/// (None: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub old: Option<String>,
    pub new: Option<String>,
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

/// How commits reach the remote.
enum Transport {
    /// A `file://` remote: Registrar writes into the bare repository itself and moves its
    /// refs with compare-and-swap, as a local push would, without negotiating a pack (whose
    /// walk over the base tree grows with the repository).
    InPlace,
    /// Any other remote: a bare mirror in the state directory, fetched and pushed.
    Mirror,
}

/// One ref change: `new: None` deletes; `force: false` requires the ref to still be `old`.
struct RefUpdate<'a> {
    branch: &'a str,
    old: Option<Oid>,
    new: Option<Oid>,
    force: bool,
}

pub struct GitRepo {
    repo: Mutex<Repository>,
    trees: objects::TreeCache,
    transport: Transport,
    settings: GitSettings,
    path: PathBuf,
}

const REMOTE: &str = "origin";

/// Has libgit2 fsync the objects and refs it writes (off by default): a crash or power loss
/// must never leave a ref pointing at an object that is not on disk. Once per process.
fn fsync_git_writes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        libgit2_sys::init();
        // SAFETY: git_libgit2_opts with ENABLE_FSYNC_GITDIR takes one int; it only sets a
        // global flag, and runs before any repository is opened here.
        let rc = unsafe {
            libgit2_sys::git_libgit2_opts(
                libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as std::ffi::c_int,
                1 as std::ffi::c_int,
            )
        };
        if rc != 0 {
            tracing::warn!(rc, "libgit2 would not fsync its writes");
        }
    });
}

impl GitRepo {
    /// Opens the repository Registrar works in: the remote itself for `file://` remotes,
    /// otherwise a bare mirror at `mirror`, created and pointed at the remote as needed.
    pub fn open(mirror: &Path, settings: GitSettings) -> Result<Self> {
        fsync_git_writes();
        if let Some(local) = settings.remote_url.strip_prefix("file://") {
            let path = PathBuf::from(local);
            let repo =
                Repository::open_bare(&path).ctx(|| format!("opening the GitOps repository {}", path.display()))?;
            return Ok(GitRepo {
                repo: Mutex::new(repo),
                trees: Default::default(),
                transport: Transport::InPlace,
                settings,
                path,
            });
        }
        let repo = match Repository::open_bare(mirror) {
            Ok(r) => r,
            Err(_) => Repository::init_bare(mirror).ctx(|| format!("creating mirror {}", mirror.display()))?,
        };
        match repo.find_remote(REMOTE) {
            Ok(r) if r.url().ok() == Some(settings.remote_url.as_str()) => {}
            Ok(_) => repo
                .remote_set_url(REMOTE, &settings.remote_url)
                .ctx(|| "setting remote URL".into())?,
            Err(_) => {
                repo.remote_with_fetch(REMOTE, &settings.remote_url, "+refs/heads/*:refs/remotes/origin/*")
                    .ctx(|| "adding remote".into())?;
            }
        }
        Ok(GitRepo {
            repo: Mutex::new(repo),
            trees: Default::default(),
            transport: Transport::Mirror,
            settings,
            path: mirror.to_path_buf(),
        })
    }

    pub fn base(&self) -> &str {
        &self.settings.base
    }

    /// Replaces the remote's password (a refreshed token).
    pub fn set_password(&self, secret: SecretString) {
        self.settings.password.set(secret);
    }

    /// The repository Registrar writes objects into (the remote itself, or the mirror).
    pub fn local_path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Repository> {
        self.repo.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the remote's `branch` is read from.
    fn tracking(&self, branch: &str) -> String {
        match self.transport {
            Transport::InPlace => format!("refs/heads/{branch}"),
            Transport::Mirror => format!("refs/remotes/{REMOTE}/{branch}"),
        }
    }

    fn target(&self, repo: &Repository, branch: &str) -> Option<Oid> {
        repo.refname_to_id(&self.tracking(branch)).ok()
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        let user = self.settings.username.clone();
        let pass = self.settings.password.get();
        let mut tries = 0;
        cb.credentials(move |_url, username_from_url, _allowed| {
            tries += 1;
            // libgit2 asks again after a refusal; answering forever would loop.
            if tries > 1 {
                return Err(git2::Error::from_str("the remote refused the configured credentials"));
            }
            match &pass {
                Some(p) => Cred::userpass_plaintext(
                    user.as_deref().or(username_from_url).unwrap_or("registrar"),
                    p.expose_secret(),
                ),
                None => Err(git2::Error::from_str(
                    "the remote asks for credentials; set gitops.username and gitops.password_file",
                )),
            }
        });
        cb
    }

    /// Brings the base branch and Registrar's branches up to date from the remote.
    pub fn fetch(&self) -> Result<()> {
        if let Transport::InPlace = self.transport {
            return Ok(());
        }
        let repo = self.lock();
        let mut remote = repo.find_remote(REMOTE).ctx(|| "finding remote".into())?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        opts.prune(git2::FetchPrune::On);
        let base = &self.settings.base;
        let specs = [
            format!("+refs/heads/{base}:refs/remotes/origin/{base}"),
            "+refs/heads/registrar/*:refs/remotes/origin/registrar/*".to_string(),
        ];
        remote
            .fetch(&specs, Some(&mut opts), None)
            .ctx(|| format!("fetching from {}", self.settings.remote_url))?;
        Ok(())
    }

    pub fn base_head(&self) -> Result<Oid> {
        self.target(&self.lock(), &self.settings.base)
            .ok_or_else(|| GitError::NoBase(self.settings.base.clone()))
    }

    pub fn branch_head(&self, branch: &str) -> Option<Oid> {
        self.target(&self.lock(), branch)
    }

    /// Registrar's branches on the remote (`registrar/…`), with their head commit and its
    /// message (capped: a message is data from the repository, not trusted to be small).
    pub fn registrar_branches(&self) -> Result<Vec<(String, Oid, String)>> {
        const MAX_MESSAGE: usize = 1 << 20;
        let repo = self.lock();
        let prefix = self.tracking("registrar/");
        let mut out = Vec::new();
        let refs = repo
            .references_glob(&format!("{prefix}*"))
            .ctx(|| "listing Registrar's branches".into())?;
        for r in refs.flatten() {
            let (Ok(name), Some(oid)) = (r.name().map(str::to_string), r.target()) else {
                continue;
            };
            let Some(branch) = name.strip_prefix(&prefix).map(|b| format!("registrar/{b}")) else {
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
        let repo = self.lock();
        let Some(head) = self.target(&repo, branch) else {
            return Ok(None);
        };
        let tree = repo
            .find_commit(head)
            .and_then(|c| c.tree())
            .ctx(|| format!("reading {branch}"))?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        let blob = repo.find_blob(entry.id()).ctx(|| format!("reading {path}"))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// Makes `branch` hold the base branch plus `files` (path, content), in one commit whose
    /// message is `message`. Writes nothing if the branch already holds exactly that.
    /// `before_push` runs with the new commit after it is written and before any ref moves:
    /// the caller records the commit as its own there, so that the forge's notice of the push
    /// (which may arrive before the push returns) is never taken for someone else's.
    pub fn publish(
        &self,
        branch: &str,
        files: &[(&str, &[u8])],
        message: &str,
        before_push: impl FnOnce(Oid) -> std::result::Result<(), String>,
    ) -> Result<Published> {
        let (commit, old) = {
            let repo = self.lock();
            let blobs = files
                .iter()
                .map(|(p, c)| Ok((*p, repo.blob(c).ctx(|| format!("writing {p}"))?)))
                .collect::<Result<Vec<_>>>()?;
            let old = self.target(&repo, branch);
            let base_oid = self
                .target(&repo, &self.settings.base)
                .ok_or_else(|| GitError::NoBase(self.settings.base.clone()))?;
            let base = repo.find_commit(base_oid).ctx(|| "reading base".into())?;
            let mut tree = base.tree_id();
            for (path, blob) in &blobs {
                tree = objects::tree_with(&repo, &self.trees, tree, path, *blob)
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
    pub fn yaml_files(&self, dir: &str, unless_tree: Option<Oid>) -> Result<Option<(Oid, Vec<String>)>> {
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
                    Ok(b) => files.push(String::from_utf8_lossy(b.content()).into_owned()),
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

    fn update_refs(&self, updates: &[RefUpdate]) -> Result<()> {
        match self.transport {
            Transport::InPlace => self.update_in_place(updates),
            Transport::Mirror => self.push(updates),
        }
    }

    fn update_in_place(&self, updates: &[RefUpdate]) -> Result<()> {
        let repo = self.lock();
        for u in updates {
            let name = format!("refs/heads/{}", u.branch);
            let current = repo.refname_to_id(&name).ok();
            if !u.force && current != u.old {
                return Err(GitError::Refused {
                    refname: name,
                    message: "the ref moved (not a fast-forward from what Registrar read)".into(),
                });
            }
            match (u.new, current) {
                (Some(new), Some(cur)) if !u.force => {
                    repo.reference_matching(&name, new, true, cur, "registrar")
                        .map_err(|e| GitError::Refused {
                            refname: name.clone(),
                            message: e.message().to_string(),
                        })?;
                }
                (Some(new), _) => {
                    repo.reference(&name, new, true, "registrar")
                        .ctx(|| format!("updating {name}"))?;
                }
                (None, Some(_)) => {
                    repo.find_reference(&name)
                        .and_then(|mut r| r.delete())
                        .ctx(|| format!("deleting {name}"))?;
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    fn push(&self, updates: &[RefUpdate]) -> Result<()> {
        let repo = self.lock();
        let mut specs = Vec::new();
        for u in updates {
            let local = format!("refs/heads/{}", u.branch);
            match u.new {
                Some(new) => {
                    repo.reference(&local, new, true, "registrar: to push")
                        .ctx(|| format!("updating {local}"))?;
                    specs.push(format!("{}{local}:{local}", if u.force { "+" } else { "" }));
                }
                None => specs.push(format!(":{local}")),
            }
        }
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
        remote
            .push(&specs, Some(&mut opts))
            .ctx(|| format!("pushing {} to {}", specs.join(" "), self.settings.remote_url))?;
        drop(opts);
        if let Some((refname, message)) = refused.into_inner().into_iter().next() {
            return Err(GitError::Refused { refname, message });
        }
        // The remote took it: record what it now holds.
        for u in updates {
            let tracking = self.tracking(u.branch);
            match u.new {
                Some(new) => {
                    repo.reference(&tracking, new, true, "registrar: pushed")
                        .ctx(|| format!("updating {tracking}"))?;
                }
                None => {
                    for name in [tracking, format!("refs/heads/{}", u.branch)] {
                        if let Ok(mut r) = repo.find_reference(&name) {
                            r.delete().ctx(|| format!("deleting {name}"))?;
                        }
                    }
                }
            }
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
    let tree = repo
        .find_tree(tb.write().ctx(|| "tree".into())?)
        .ctx(|| "tree".into())?;
    let sig = Signature::now("Registrar", "registrar@localhost").ctx(|| "signature".into())?;
    repo.commit(
        Some(&format!("refs/heads/{base}")),
        &sig,
        &sig,
        "Start the hardware repository",
        &tree,
        &[],
    )
    .ctx(|| "initial commit".into())?;
    repo.set_head(&format!("refs/heads/{base}")).ctx(|| "HEAD".into())?;
    Ok(true)
}
