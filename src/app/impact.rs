//! `registrar check --impact`: which recorded machines the working copy's rules and
//! templates (`templates_dir`) would render differently from the templates at a git
//! revision (`--base`, default `HEAD` of the repository `templates_dir` is in) or in
//! another directory (`--base-dir`). Read-only: the store is only read, git only checked
//! out into a temporary directory, and nothing is proposed.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::Config;
use crate::propose::impact::{self, Impact};
use crate::render::Renderer;

/// What the templates are compared with.
pub enum Base {
    /// A revision of the git repository that holds `templates_dir`.
    Revision(String),
    Directory(PathBuf),
}

pub fn preview(config: &Config, base: &Base) -> anyhow::Result<Impact> {
    let namespace = &config.tinkerbell.namespace;
    let after = Renderer::load(&config.templates_dir, namespace)
        .with_context(|| format!("the working copy's templates in {}", config.templates_dir.display()))?;
    let checkout = tempfile::tempdir()?;
    let before_dir = match base {
        Base::Directory(dir) => dir.clone(),
        Base::Revision(rev) => {
            templates_at(&config.templates_dir, rev, checkout.path())?;
            checkout.path().to_path_buf()
        }
    };
    let before = Renderer::load(&before_dir, namespace).context("the base's templates")?;
    let Some(store) = crate::store::open_for_reading(config)? else {
        bail!(
            "no store at {}: run this where Registrar's state_dir is (its machines' facts are compared)",
            config.state_dir.join("registrar.db").display()
        );
    };
    let pools = crate::ipam::Pools::from_config(&config.ipam).map_err(|e| anyhow::anyhow!(e))?;
    Ok(impact::compare_store(&before, &after, store.as_ref(), &pools)?)
}

/// `registrar check --impact`: the preview, as JSON or as text with a diff per machine.
pub fn print(config: &Config, base: &Base, json: bool) -> anyhow::Result<()> {
    let impact = preview(config, base)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&impact)?);
        return Ok(());
    }
    println!(
        "{} of {} machines would render differently",
        impact.changed.len(),
        impact.compared
    );
    for change in &impact.changed {
        let name = change.name.as_deref().unwrap_or("-");
        println!("\n== {} {name} ({})\n{}", change.mac, change.state, change.diff);
    }
    Ok(())
}

/// Writes the templates directory as it is at `rev` into `into`.
fn templates_at(templates_dir: &Path, rev: &str, into: &Path) -> anyhow::Result<()> {
    let dir = templates_dir
        .canonicalize()
        .with_context(|| format!("templates_dir {}", templates_dir.display()))?;
    let repo = git2::Repository::discover(&dir).with_context(|| {
        format!(
            "templates_dir {} is in no git repository: compare with --base-dir DIR instead",
            dir.display()
        )
    })?;
    let workdir = repo
        .workdir()
        .context("the templates' repository is bare")?
        .canonicalize()?;
    let inside = dir.strip_prefix(&workdir).unwrap_or(Path::new(""));
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .with_context(|| format!("no revision {rev:?} in {}", workdir.display()))?;
    let root = commit.tree()?;
    let tree = if inside.as_os_str().is_empty() {
        root
    } else {
        let entry = root
            .get_path(inside)
            .with_context(|| format!("{} does not exist at {rev}", inside.display()))?;
        repo.find_tree(entry.id())
            .with_context(|| format!("{} is not a directory at {rev}", inside.display()))?
    };
    Ok(crate::propose::git::write_tree(&repo, &tree, into)?)
}
