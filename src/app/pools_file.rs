//! Address pools kept in the GitOps repository (`ipam.file`): a pool change is a reviewed,
//! merged commit like any other. The file is read from the base branch each time it is
//! fetched; a change that validates replaces the pools in use, one that does not keeps the
//! previous pools and makes Registrar not ready, naming the file and the key.

use crate::config::ipam::IpamConfig;
use crate::propose::Proposer;
use crate::supervisor::Readiness;

/// The pools' file and what was last read from it.
pub struct PoolsFile {
    path: String,
    last: Option<Vec<u8>>,
}

impl PoolsFile {
    pub fn new(path: String) -> Self {
        PoolsFile { path, last: None }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reads the file at the base branch's head (just fetched) and puts its pools in use
    /// if they changed and are valid.
    pub async fn refresh(&mut self, proposer: &Proposer, readiness: &Readiness) {
        let (git, path) = (proposer.git().clone(), self.path.clone());
        let read = tokio::task::spawn_blocking(move || {
            let head = git.base_head()?;
            git.read_at(head, &path)
        })
        .await;
        let base = proposer.git().base().to_string();
        let text = match read {
            Ok(Ok(Some(text))) => text,
            Ok(Ok(None)) => {
                return readiness.not_ready("ipam", format!("{} is not on the base branch {base}", self.path));
            }
            Ok(Err(e)) => return readiness.not_ready("ipam", format!("reading {} on {base}: {e}", self.path)),
            Err(e) => return readiness.not_ready("ipam", format!("reading {} on {base}: {e}", self.path)),
        };
        if self.last.as_ref() == Some(&text) {
            return;
        }
        let parsed = match self.parse(&text, proposer) {
            Ok(pools) => clash_free(pools, proposer).await,
            Err(e) => Err(e),
        };
        match parsed {
            Ok(pools) => {
                tracing::info!(file = %self.path, pools = pools.production.len(), "address pools read from the GitOps repository");
                proposer.replace_pools(pools);
                readiness.ready("ipam", format!("pools from {} on {base}", self.path));
                self.last = Some(text);
            }
            Err(e) => {
                // The pools in use stay: a broken change on the base branch must not take
                // addresses away from machines mid-way.
                tracing::warn!(file = %self.path, error = %e, "the address pools' file is invalid; keeping the pools in use");
                readiness.not_ready("ipam", format!("{} on {base}: {e}", self.path));
            }
        }
    }

    fn parse(&self, text: &[u8], proposer: &Proposer) -> anyhow::Result<crate::ipam::Pools> {
        let config: IpamConfig = yaml_serde::from_slice(text)?;
        if config.file.is_some() {
            anyhow::bail!("`file` names the pools' file; it cannot name another");
        }
        super::checked_pools(&config, proposer.renderer())
    }
}

/// `pools`, unless they would hand out an address a Hardware on the base branch holds that
/// Registrar did not render: the same check as at start, for pools that change while
/// Registrar runs (the pools in use stay, and readiness names the clash).
async fn clash_free(pools: crate::ipam::Pools, proposer: &Proposer) -> anyhow::Result<crate::ipam::Pools> {
    let (git, store) = (proposer.git().clone(), proposer.store().clone());
    tokio::task::spawn_blocking(move || {
        let held = git
            .registered_macs("", None)?
            .map(|(_, found)| found.held)
            .unwrap_or_default();
        let found = super::pool_clashes::clashes(&pools, &held, store.as_ref())?;
        if !found.is_empty() {
            anyhow::bail!("the pools clash with Hardware on the base branch: {}", found.join("; "));
        }
        Ok(pools)
    })
    .await?
}
