//! `registrar check --impact`: which recorded machines the working copy's rules and
//! templates (`templates_dir`) would render differently from the templates at a git
//! revision (`--base`, default `HEAD` of the repository `templates_dir` is in) or in
//! another directory (`--base-dir`). Read-only: the store is only read, git only checked
//! out into a temporary directory, and nothing is proposed.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::Config;
use crate::domain::State;
use crate::render::Renderer;
use crate::render::impact::{Change, compare, in_scope};
use crate::store::{MachineQuery, SqliteStore, Store};

/// What the templates are compared with.
pub enum Base {
    /// A revision of the git repository that holds `templates_dir`.
    Revision(String),
    Directory(PathBuf),
}

#[derive(Debug, serde::Serialize)]
pub struct Impact {
    /// Machines with facts in a state a template edit reaches.
    pub compared: usize,
    pub changed: Vec<Change>,
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
    let db = config.state_dir.join("registrar.db");
    if !db.exists() {
        bail!(
            "no store at {}: run this where Registrar's state_dir is (its machines' facts are compared)",
            db.display()
        );
    }
    let store = SqliteStore::open_read_only(&db)?;
    let pools = crate::ipam::Pools::from_config(&config.ipam).map_err(|e| anyhow::anyhow!(e))?;
    let mut compared = 0;
    let mut changed = Vec::new();
    for state in State::ALL.into_iter().filter(|s| in_scope(*s)) {
        let mut offset = 0;
        loop {
            let page = store.machines(&MachineQuery {
                state: Some(state),
                limit: 1000,
                offset,
                ..MachineQuery::default()
            })?;
            for machine in &page {
                let Some(_) = &machine.facts else { continue };
                compared += 1;
                let address = store.addresses(machine.mac)?.into_iter().find_map(|(pool, ip)| {
                    let pool = pools.production.iter().find(|p| p.name == pool)?;
                    Some(pool.address(ip.parse().ok()?))
                });
                changed.extend(compare(&before, &after, machine, address.as_ref()));
            }
            if page.len() < 1000 {
                break;
            }
            offset += 1000;
        }
    }
    changed.sort_by(|a, b| a.mac.cmp(&b.mac));
    Ok(Impact { compared, changed })
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
    write_tree(&repo, &tree, into)
}

fn write_tree(repo: &git2::Repository, tree: &git2::Tree, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into)?;
    for entry in tree.iter() {
        let name = entry.name().context("a file name that is not UTF-8")?;
        // Names come from the repository: keep them inside `into`.
        if name.contains('/') || name == ".." || name == "." {
            bail!("unexpected entry {name:?} in the templates' tree");
        }
        match entry.kind() {
            Some(git2::ObjectType::Tree) => write_tree(repo, &repo.find_tree(entry.id())?, &into.join(name))?,
            Some(git2::ObjectType::Blob) => std::fs::write(into.join(name), repo.find_blob(entry.id())?.content())?,
            _ => {}
        }
    }
    Ok(())
}
