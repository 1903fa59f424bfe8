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

mod branches;
mod objects;
mod pulls;
mod remote;
pub use pulls::{Budget, write_tree};
pub mod ssh;

use git2::{Oid, Repository, Signature};
use secrecy::SecretString;

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
    /// For an SSH remote: the deploy key and the pinned host keys.
    pub ssh: Option<ssh::SshSettings>,
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
        clear_stale_locks(mirror)?;
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

/// Removes the `.lock` files a killed process left in a repository of the state directory.
/// git takes a ref's lock by creating `<ref>.lock` and renames it over the ref when done;
/// SIGKILL between the two leaves the lock behind, and every later update of that ref fails
/// with "failed to lock file" until someone deletes it. The mirror, and the embedded
/// default's `gitops.git`, belong to this state directory alone and the caller holds its
/// `registrar.lock`, so at start-up no lock in them can belong to a live writer. A GitOps
/// repository elsewhere (a `file://` remote written in place) is never touched: other people
/// and tools write there.
pub fn clear_stale_locks(repo: &Path) -> Result<()> {
    fn ref_locks(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            entries => entries?,
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                ref_locks(&path, found)?;
            } else if path.extension().is_some_and(|e| e == "lock") {
                found.push(path);
            }
        }
        Ok(())
    }
    const TOP_LEVEL: [&str; 5] = [
        "HEAD.lock",
        "packed-refs.lock",
        "config.lock",
        "shallow.lock",
        "index.lock",
    ];
    let clear = || -> std::io::Result<()> {
        let mut stale: Vec<PathBuf> = TOP_LEVEL.iter().map(|l| repo.join(l)).filter(|p| p.exists()).collect();
        ref_locks(&repo.join("refs"), &mut stale)?;
        for path in &stale {
            std::fs::remove_file(path)?;
            tracing::warn!(lock = %path.display(), "removed a git lock a killed Registrar left");
        }
        Ok(())
    };
    clear().map_err(|e| GitError::Git {
        context: format!("clearing stale locks in {}", repo.display()),
        source: git2::Error::from_str(&e.to_string()),
    })
}
