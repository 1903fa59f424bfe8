//! The pools against the repository, before anything starts: an address a pool would hand
//! out that a Hardware on the base branch already holds — one Registrar did not render — is
//! a configuration error (issue 16), and the start stops, naming the file, the key and the
//! clash. Hardware that Registrar rendered holds its address by design: its
//! `registrar.dev/mac` label names the MAC, or the store says Registrar gave the address.
//! A clash that appears later (a Hardware added while Registrar runs, or in the cluster) is
//! skipped and reported instead (`registrar ipam check`): a running service does not stop.

use std::time::Duration;

use crate::ipam::Pools;
use crate::propose::Proposer;
use crate::propose::index::HeldAddress;
use crate::store::Store;

/// How long the start waits for the remote to answer before going on unchecked.
const FETCH_WAIT: Duration = Duration::from_secs(60);

/// The clashes, each a sentence for the operator.
pub fn clashes(pools: &Pools, held: &[HeldAddress], store: &dyn Store) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for h in held.iter().filter(|h| !h.registrars) {
        let Some((key, pool)) = pools.keyed().find(|(_, p)| p.may_hand_out(h.ip)) else {
            continue;
        };
        if h.mac.is_some() && store.address_holder(&pool.name, h.ip)? == h.mac {
            continue;
        }
        out.push(format!(
            "{} is held by Hardware {:?} in {} on the base branch, and {key}.ranges (pool {:?}) would hand it out: add it to {key}.exclude, or leave it out of the ranges",
            h.ip, h.name, h.path, pool.name
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Fetches the base branch and refuses to go on if the configured pools clash with it. A
/// remote that cannot be read in time is not a clash: the start goes on, and says so.
pub async fn check_at_start(proposer: &Proposer, pools: &Pools) -> anyhow::Result<()> {
    if pools.keyed().next().is_none() {
        return Ok(());
    }
    let git = proposer.git().clone();
    let read = tokio::task::spawn_blocking(move || {
        git.fetch()?;
        git.registered_macs("", None)
    });
    let indexed = match tokio::time::timeout(FETCH_WAIT, read).await {
        Ok(Ok(Ok(Some((_, found))))) => found,
        Ok(Ok(Ok(None))) => return Ok(()),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "could not read the base branch to check the address pools against it; starting unchecked");
            return Ok(());
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            tracing::warn!(
                "the GitOps repository did not answer in time to check the address pools against it; starting unchecked"
            );
            return Ok(());
        }
    };
    let store = proposer.store().clone();
    let pools = pools.clone();
    let found = tokio::task::spawn_blocking(move || clashes(&pools, &indexed.held, store.as_ref())).await??;
    if !found.is_empty() {
        anyhow::bail!(
            "the address pools clash with Hardware on the base branch ({} address(es)); nothing was started:\n  - {}",
            found.len(),
            found.join("\n  - ")
        );
    }
    Ok(())
}

/// `registrar check`, offline: the configured pools against the base branch as Registrar
/// last fetched it into its state directory. `None` when there is no local copy yet.
pub fn check_local_copy(config: &crate::config::Config, pools: &Pools) -> anyhow::Result<Option<Vec<String>>> {
    let base = &config.gitops.base_branch;
    // Where Registrar keeps the base, as GitRepo::open decides: a file:// remote in place,
    // any other behind the mirror in the state directory.
    let remote = config.remote_url();
    let (path, refname) = match remote.strip_prefix("file://") {
        Some(local) => (std::path::PathBuf::from(local), format!("refs/heads/{base}")),
        None => (
            config.state_dir.join("mirror.git"),
            format!("refs/remotes/origin/{base}"),
        ),
    };
    if pools.keyed().next().is_none() || !path.join("HEAD").exists() {
        return Ok(None);
    }
    let repo = git2::Repository::open_bare(&path)?;
    let Ok(head) = repo.refname_to_id(&refname) else {
        return Ok(None);
    };
    let tree = repo.find_commit(head)?.tree()?;
    let mut found = crate::propose::index::Registered::default();
    let mut failed = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
        let name = entry.name().unwrap_or_default();
        if entry.kind() == Some(git2::ObjectType::Blob) && crate::propose::index::is_yaml(std::path::Path::new(name)) {
            match repo.find_blob(entry.id()) {
                Ok(blob) => crate::propose::index::hardware_identities(
                    &format!("{parent}{name}"),
                    &String::from_utf8_lossy(blob.content()),
                    &mut found,
                ),
                Err(e) => {
                    failed = Some(e);
                    return git2::TreeWalkResult::Abort;
                }
            }
        }
        git2::TreeWalkResult::Ok
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let store: Box<dyn Store> = match crate::store::open_for_reading(config)? {
        Some(store) => store,
        None => Box::new(crate::store::SqliteStore::in_memory()?),
    };
    clashes(pools, &found.held, store.as_ref()).map(Some)
}
