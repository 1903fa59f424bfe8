//! Rebuilding the store from git after it was lost (a new volume, a restore from an old
//! backup). Every proposal commit carries `Registrar-Mac` and `Registrar-Facts` trailers,
//! so a `registrar/<mac>` branch that the store knows nothing about can be adopted: the
//! machine comes back with the facts it was proposed with, and the forge says whether the
//! proposal is still open (adopt it), was closed (the machine stays rejected), or merged
//! (the base branch holds it; nothing to do).

use chrono::Utc;

use super::{ProposeError, Proposer, blocking};
use crate::domain::{Facts, Mac, ProposalState, Source, pushed_key};
use crate::store::StoreError;

/// The MAC and facts a Registrar proposal commit names, if the message has both trailers.
pub fn trailers(message: &str) -> Option<(Mac, Facts)> {
    let mut mac = None;
    let mut facts = None;
    for line in message.lines() {
        if let Some(v) = line.strip_prefix("Registrar-Mac: ") {
            mac = Mac::parse(v.trim()).ok();
        } else if let Some(v) = line.strip_prefix("Registrar-Facts: ") {
            facts = serde_json::from_str::<Facts>(v.trim()).ok().map(Facts::bounded);
        }
    }
    Some((mac?, facts?))
}

impl Proposer {
    /// A commit Registrar could have written: a single parent, and changes only to files
    /// directly in the proposals' directory (a manifest and its kustomization).
    async fn looks_like_ours(&self, head: git2::Oid) -> Result<bool, ProposeError> {
        let git = self.git.clone();
        let touched = blocking(move || git.touched(head)).await?;
        let dir = super::index::manifest_dir(&self.path_template)
            .trim_end_matches('/')
            .to_string();
        Ok(touched.is_some_and(|paths| {
            paths.len() <= 2
                && paths.iter().all(|p| {
                    let (parent, file) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
                    parent == dir && (file.ends_with(".yaml") || file.ends_with(".yml"))
                })
        }))
    }

    /// Adopts every `registrar/` branch whose machine the store does not know. Returns how
    /// many machines came back. Safe to repeat: a known machine is left alone.
    pub async fn adopt_orphan_branches(&self) -> Result<usize, ProposeError> {
        let git = self.git.clone();
        let branches = blocking(move || {
            git.fetch()?;
            git.registrar_branches()
        })
        .await?;
        let mut adopted = 0;
        for (branch, head, message) in branches {
            // A change of a machine git holds (`registrar/<mac>-<kind>-<rev>`) is not a
            // registration to adopt: its machine is on the base branch already.
            if crate::domain::mac_of_branch(&branch).is_some_and(|mac| crate::domain::branch_for(&mac) != branch) {
                continue;
            }
            let Some((mac, facts)) = trailers(&message) else {
                tracing::warn!(%branch, "not adopted: its head commit has no Registrar-Mac/Registrar-Facts trailers (a person's commit on top?)");
                continue;
            };
            if crate::domain::branch_for(&mac) != branch || self.known.contains(&mac) {
                continue;
            }
            let store = self.store.clone();
            if blocking(move || store.machine(mac)).await?.is_some() {
                continue;
            }
            let state = self.forge.branch_state(&branch).await?.map(|(state, _)| state);
            let _machine = self.machines.lock(mac).await;
            let store = self.store.clone();
            let (b, now) = (branch.clone(), Utc::now());
            match state {
                Some(ProposalState::Merged) => continue,
                Some(ProposalState::Closed | ProposalState::Rejecting) => {
                    blocking(move || {
                        store.record_facts(mac, Source::Report, &facts, now)?;
                        store.note(
                            mac,
                            &format!("adopted from {b}: the store had no record"),
                            "registrar",
                            now,
                        )?;
                        store.reject(
                            mac,
                            &format!("{b}'s proposal was closed (found after the store was lost)"),
                            "registrar",
                            now,
                        )?;
                        Ok::<_, StoreError>(())
                    })
                    .await?;
                }
                Some(ProposalState::Open | ProposalState::Approving) | None => {
                    // Trust the head as Registrar's own only if it looks like one of its
                    // commits: one parent, and nothing touched but the proposals' directory.
                    // Otherwise the next sync rewrites the branch to exactly the proposal.
                    let ours = self.looks_like_ours(head).await?;
                    if !ours {
                        tracing::warn!(%mac, %branch, "adopted branch's head changes more than a proposal does; Registrar rewrites it to the proposal alone");
                    }
                    blocking(move || {
                        store.record_facts(mac, Source::Report, &facts, now)?;
                        store.note(
                            mac,
                            &format!("adopted from {b}: the store had no record"),
                            "registrar",
                            now,
                        )?;
                        if ours {
                            store.remember_once(&pushed_key(&head.to_string()), now)?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await?;
                }
            }
            tracing::info!(%mac, %branch, state = ?state, "adopted a proposal the store had lost");
            adopted += 1;
        }
        if adopted > 0 {
            self.wake();
        }
        self.metrics.adoption_scans.inc();
        Ok(adopted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_trailers_of_a_proposal_commit() {
        let facts = Facts {
            serial: Some("S1".into()),
            ..Facts::default()
        };
        let msg = format!(
            "Register s1\n\nProposed by Registrar: rule default.\n\nRegistrar-Mac: aa:bb:cc:dd:ee:01\nRegistrar-Facts: {}\n",
            serde_json::to_string(&facts).unwrap()
        );
        let (mac, f) = trailers(&msg).unwrap();
        assert_eq!(mac.to_string(), "aa:bb:cc:dd:ee:01");
        assert_eq!(f, facts);
        assert!(trailers("Merge registrar/x\n\nApproved-by: alice\n").is_none());
        assert!(trailers("x\n\nRegistrar-Mac: aa:bb:cc:dd:ee:01\nRegistrar-Facts: {not json\n").is_none());
    }
}
