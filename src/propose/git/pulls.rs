//! Someone else's pull request, read from git: its head (GitHub keeps `refs/pull/<n>/head`
//! in the base repository, forks included) and a directory of it, written out to be loaded.
//! The fetched ref is dropped after use, so nothing at rest grows with the pull requests
//! looked at.

use std::path::Path;

use git2::{FetchOptions, Oid, Repository, Tree};

use super::{Ctx, GitError, GitRepo, REMOTE, Result, Transport};

/// Where a pull request's head is kept while it is read.
fn local_ref(number: u64) -> String {
    format!("refs/registrar-pulls/{number}")
}

impl GitRepo {
    /// The commit at the head of pull request `number`, fetched into this repository.
    pub fn fetch_pull_head(&self, number: u64) -> Result<Oid> {
        let remote_ref = format!("refs/pull/{number}/head");
        let repo = self.lock();
        if let Transport::InPlace = self.transport {
            return repo.refname_to_id(&remote_ref).ctx(|| format!("reading {remote_ref}"));
        }
        let mut remote = repo.find_remote(REMOTE).ctx(|| "finding remote".into())?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        let spec = format!("+{remote_ref}:{}", local_ref(number));
        remote.fetch(&[spec.as_str()], Some(&mut opts), None).ctx(|| {
            format!(
                "fetching {remote_ref} from {}{}",
                self.settings.remote_url,
                self.ssh_refusal()
            )
        })?;
        repo.refname_to_id(&local_ref(number))
            .ctx(|| format!("reading {remote_ref}"))
    }

    /// Drops what `fetch_pull_head` kept (its objects go at the next gc).
    pub fn forget_pull_head(&self, number: u64) -> Result<()> {
        if let Transport::InPlace = self.transport {
            return Ok(());
        }
        let repo = self.lock();
        if let Ok(mut r) = repo.find_reference(&local_ref(number)) {
            r.delete().ctx(|| format!("deleting {}", local_ref(number)))?;
        }
        Ok(())
    }

    /// The id of the tree at `path` in `commit` (None when the path is not there): two
    /// commits whose directory has the same id hold the same files.
    pub fn tree_at(&self, commit: Oid, path: &str) -> Result<Option<Oid>> {
        let repo = self.lock();
        let root = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .ctx(|| format!("reading commit {commit}"))?;
        Ok(root.get_path(Path::new(path)).ok().map(|e| e.id()))
    }

    /// Writes the directory `tree` (from `tree_at`) into `into`, within `budget`: the
    /// directory comes from someone's pull request.
    pub fn write_dir(&self, tree: Oid, into: &Path, budget: &mut Budget) -> Result<()> {
        let repo = self.lock();
        let tree = repo.find_tree(tree).ctx(|| format!("reading tree {tree}"))?;
        write_bounded(&repo, &tree, into, budget)
    }
}

/// How much a written directory may hold.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub files: usize,
    pub bytes: usize,
}

impl Budget {
    /// Far more than any rules and templates directory holds.
    pub const TEMPLATES: Budget = Budget {
        files: 2_000,
        bytes: 16 << 20,
    };
}

/// Writes `tree` into the directory `into`, files and subdirectories (trusted trees: the
/// operator's own repository).
pub fn write_tree(repo: &Repository, tree: &Tree, into: &Path) -> Result<()> {
    write_bounded(
        repo,
        tree,
        into,
        &mut Budget {
            files: usize::MAX,
            bytes: usize::MAX,
        },
    )
}

/// Writes `tree` into `into` within `budget`. Names come from the repository, so each is
/// checked to stay inside `into`.
fn write_bounded(repo: &Repository, tree: &Tree, into: &Path, budget: &mut Budget) -> Result<()> {
    let io = |e: std::io::Error, what: &Path| GitError::Git {
        context: format!("writing {}", what.display()),
        source: git2::Error::from_str(&e.to_string()),
    };
    std::fs::create_dir_all(into).map_err(|e| io(e, into))?;
    for entry in tree.iter() {
        let Some(name) = entry
            .name()
            .ok()
            .filter(|n| !n.contains('/') && *n != ".." && *n != ".")
        else {
            return Err(GitError::Git {
                context: format!("unexpected entry in tree {}", tree.id()),
                source: git2::Error::from_str("a name that is not a plain file name"),
            });
        };
        let path = into.join(name);
        match entry.kind() {
            Some(git2::ObjectType::Tree) => {
                let sub = repo.find_tree(entry.id()).ctx(|| format!("reading {name}"))?;
                write_bounded(repo, &sub, &path, budget)?;
            }
            Some(git2::ObjectType::Blob) => {
                let blob = repo.find_blob(entry.id()).ctx(|| format!("reading {name}"))?;
                let size = blob.content().len();
                if budget.files == 0 || budget.bytes < size {
                    return Err(GitError::Git {
                        context: format!("writing {}", path.display()),
                        source: git2::Error::from_str(
                            "the directory holds more files or bytes than rules and templates do",
                        ),
                    });
                }
                budget.files -= 1;
                budget.bytes -= size;
                std::fs::write(&path, blob.content()).map_err(|e| io(e, &path))?;
            }
            _ => {}
        }
    }
    Ok(())
}
