//! A bare git repository as a reviewer (or a person pushing) sees it.

use std::path::{Path, PathBuf};

/// A bare git repository, read through git2 as a reviewer would read it.
pub struct Repo {
    pub path: PathBuf,
}

impl Repo {
    pub fn at(path: &Path) -> Self {
        Repo {
            path: path.to_path_buf(),
        }
    }

    pub fn open(&self) -> git2::Repository {
        git2::Repository::open_bare(&self.path).unwrap()
    }

    pub fn branches(&self) -> Vec<String> {
        let repo = self.open();
        let mut out: Vec<String> = repo
            .branches(Some(git2::BranchType::Local))
            .unwrap()
            .map(|b| b.unwrap().0.name().unwrap().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    /// Merges `head` into `base` with a merge commit, as a forge's merge button does (the
    /// fakes merge only clean pull requests).
    pub fn merge(&self, head: &str, base: &str, message: &str, committer: &str) {
        let repo = self.open();
        let tip = |b: &str| {
            repo.find_branch(b, git2::BranchType::Local)
                .unwrap()
                .get()
                .peel_to_commit()
                .unwrap()
        };
        let (ours, theirs) = (tip(base), tip(head));
        let mut index = repo.merge_commits(&ours, &theirs, None).unwrap();
        assert!(!index.has_conflicts(), "the fake merges only clean pull requests");
        let tree = repo.find_tree(index.write_tree_to(&repo).unwrap()).unwrap();
        let sig = git2::Signature::now(committer, "noreply@forge.example").unwrap();
        repo.commit(
            Some(&format!("refs/heads/{base}")),
            &sig,
            &sig,
            message,
            &tree,
            &[&ours, &theirs],
        )
        .unwrap();
    }

    /// Deletes `branch`, as a forge does after a merge or on request; gone already is fine.
    pub fn delete_branch(&self, branch: &str) {
        if let Ok(mut b) = self.open().find_branch(branch, git2::BranchType::Local) {
            b.delete().unwrap();
        }
    }

    pub fn head(&self, branch: &str) -> Option<git2::Oid> {
        self.open()
            .find_branch(branch, git2::BranchType::Local)
            .ok()
            .and_then(|b| b.get().target())
    }

    pub fn read(&self, branch: &str, path: &str) -> Option<String> {
        let repo = self.open();
        let head = self.head(branch)?;
        let tree = repo.find_commit(head).unwrap().tree().unwrap();
        let entry = tree.get_path(Path::new(path)).ok()?;
        Some(String::from_utf8(repo.find_blob(entry.id()).unwrap().content().to_vec()).unwrap())
    }

    /// Paths of all files on `branch`.
    pub fn files(&self, branch: &str) -> Vec<String> {
        let repo = self.open();
        let tree = repo.find_commit(self.head(branch).unwrap()).unwrap().tree().unwrap();
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            if e.kind() == Some(git2::ObjectType::Blob) {
                out.push(format!("{dir}{}", e.name().unwrap()));
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
        out
    }

    /// Commits on `branch` that `base` does not have.
    pub fn commits_ahead(&self, base: &str, branch: &str) -> usize {
        let repo = self.open();
        let (ahead, _) = repo
            .graph_ahead_behind(self.head(branch).unwrap(), self.head(base).unwrap())
            .unwrap();
        ahead
    }

    pub fn message(&self, branch: &str) -> String {
        let repo = self.open();
        repo.find_commit(self.head(branch).unwrap())
            .unwrap()
            .message()
            .unwrap()
            .to_string()
    }

    /// A person's new branch `branch` at `from`'s head.
    pub fn branch_from(&self, from: &str, branch: &str) {
        let repo = self.open();
        let head = repo.find_commit(self.head(from).unwrap()).unwrap();
        repo.branch(branch, &head, false).unwrap();
    }

    /// A person's commit on `branch` writing every file of the directory `dir` under `into`.
    pub fn push_dir(&self, branch: &str, dir: &Path, into: &str) -> git2::Oid {
        let repo = self.open();
        let head = repo.find_commit(self.head(branch).unwrap()).unwrap();
        let mut update = git2::build::TreeUpdateBuilder::new();
        fn add(repo: &git2::Repository, update: &mut git2::build::TreeUpdateBuilder, dir: &Path, at: &str) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let path = format!("{at}/{}", entry.file_name().to_str().unwrap());
                if entry.file_type().unwrap().is_dir() {
                    add(repo, update, &entry.path(), &path);
                } else {
                    let blob = repo.blob(&std::fs::read(entry.path()).unwrap()).unwrap();
                    update.upsert(&path, blob, git2::FileMode::Blob);
                }
            }
        }
        add(&repo, &mut update, dir, into);
        let tree = update.create_updated(&repo, &head.tree().unwrap()).unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let sig = git2::Signature::now("A Person", "person@example.com").unwrap();
        let oid = repo
            .commit(None, &sig, &sig, &format!("add {into}"), &tree, &[&head])
            .unwrap();
        repo.reference(&format!("refs/heads/{branch}"), oid, true, "push")
            .unwrap();
        oid
    }

    /// A person's push: a commit adding the file `path` on top of `branch`, written into the remote.
    pub fn push_on_top(&self, branch: &str, path: &str, content: &str) -> git2::Oid {
        let repo = self.open();
        let head = repo.find_commit(self.head(branch).unwrap()).unwrap();
        let blob = repo.blob(content.as_bytes()).unwrap();
        let tree = git2::build::TreeUpdateBuilder::new()
            .upsert(path, blob, git2::FileMode::Blob)
            .create_updated(&repo, &head.tree().unwrap())
            .unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let sig = git2::Signature::now("A Person", "person@example.com").unwrap();
        let oid = repo
            .commit(None, &sig, &sig, "a person's change", &tree, &[&head])
            .unwrap();
        repo.reference(&format!("refs/heads/{branch}"), oid, true, "push")
            .unwrap();
        oid
    }

    pub fn parent_count(&self, branch: &str) -> usize {
        self.open()
            .find_commit(self.head(branch).unwrap())
            .unwrap()
            .parent_count()
    }
}
