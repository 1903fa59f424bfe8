//! GitLab (`forge.kind: gitlab`): a merge request per machine, through the REST API
//! (`/api/v4`), on gitlab.com or a self-managed instance. Merge approves, close rejects, a
//! `workflow/<name>` label shows the workflow and a reviewer's chooses another; webhooks
//! carrying the secret token only make Registrar look sooner (`hooks.rs`, then
//! `forge/hooks.rs`), and the reconcile asks about every open proposal, so a lost delivery
//! changes nothing.
//!
//! Every call is idempotent, as the `Forge` contract asks: a merge request is found by its
//! source and target branches before one is made (and again after a refused create), a
//! merge names the head it was reviewed at (`sha`), and closing or deleting what is gone
//! already succeeds. Labels are added and removed by name (`add_labels`, `remove_labels`),
//! so reviewers' own labels stay; GitLab makes a label the project lacks.

pub mod hooks;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::rest::{RestApi, snippet};
use super::{Draft, Forge, ForgeError, ForgeRef, MERGE_PATIENCE, Patience, Review};
use crate::domain::{Proposal, ProposalState};

/// A merge request as the API shows it (the fields Registrar reads).
#[derive(Debug, Clone, Deserialize)]
pub struct MergeRequest {
    /// The project-local number people see (`!12`).
    pub iid: u64,
    pub web_url: String,
    /// `opened`, `closed`, `locked` (being merged) or `merged`.
    pub state: String,
    #[serde(default)]
    pub description: Option<String>,
    pub source_branch: String,
    /// The head of the source branch.
    #[serde(default)]
    pub sha: Option<String>,
    /// A fork's merge request names its own project here: never one of Registrar's.
    #[serde(default)]
    pub source_project_id: Option<u64>,
    #[serde(default)]
    pub target_project_id: Option<u64>,
    /// Whether it can be merged, which GitLab works out in the background after a push.
    #[serde(default)]
    pub detailed_merge_status: Option<String>,
    #[serde(default)]
    pub merge_status: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
}

impl MergeRequest {
    /// From a branch of the project itself, not a fork's branch of the same name.
    fn is_from_the_project(&self) -> bool {
        self.source_project_id == self.target_project_id
    }

    fn is_being_checked(&self) -> bool {
        let detailed = self.detailed_merge_status.as_deref();
        matches!(
            detailed,
            Some("unchecked" | "checking" | "preparing" | "approvals_syncing")
        ) || matches!(
            self.merge_status.as_deref(),
            Some("unchecked" | "checking" | "cannot_be_merged_recheck")
        )
    }

    fn forge_ref(&self) -> ForgeRef {
        ForgeRef {
            number: Some(self.iid),
            url: Some(self.web_url.clone()),
        }
    }

    fn proposal_state(&self) -> ProposalState {
        match self.state.as_str() {
            "merged" => ProposalState::Merged,
            "closed" => ProposalState::Closed,
            _ => ProposalState::Open,
        }
    }
}

pub struct GitlabForge {
    /// `https://gitlab.example/api/v4/projects/<group%2Fproject>`, with the token.
    api: RestApi,
    base: String,
}

/// `text` as one path segment or query value (a project path's and a branch's slashes too).
fn encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Not found is never "closed": GitLab answers 404 for a project the token cannot see, and
/// reading that as a close would reject every machine.
fn gone(iid: u64) -> ForgeError {
    ForgeError::Other(format!(
        "merge request !{iid} is not found: does the token still see the project?"
    ))
}

/// The merge requests of one branch read at once (a fork's among them).
const PAGE: usize = 20;

impl GitlabForge {
    pub fn new(url: &str, project: &str, token: SecretString, base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let root = format!("{}/api/v4/projects/{}", url.trim_end_matches('/'), encoded(project));
        Ok(GitlabForge {
            api: RestApi::new(root, "private-token", token, timeout)?,
            base: base.to_string(),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value), ForgeError> {
        self.api.call(method, path, body).await
    }

    /// Merge request `iid` as GitLab shows it now, if it exists.
    pub async fn merge_request(&self, iid: u64) -> Result<Option<MergeRequest>, ForgeError> {
        let (status, body) = self.call(Method::GET, &format!("/merge_requests/{iid}"), None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => serde_json::from_value(body)
                .map(Some)
                .map_err(|e| ForgeError::Other(format!("merge request !{iid}: unexpected answer: {e}"))),
            s => Err(ForgeError::Other(format!(
                "merge request !{iid}: {s}: {}",
                snippet(&body.to_string())
            ))),
        }
    }

    /// The newest merge request from `branch` into the base branch in `state` (`opened`,
    /// or `all`), if any.
    async fn of_branch(&self, branch: &str, state: &str) -> Result<Option<MergeRequest>, ForgeError> {
        // A fork may have a branch of the same name: read a page, and take the project's own.
        let path = format!(
            "/merge_requests?source_branch={}&target_branch={}&state={state}&order_by=created_at&sort=desc&per_page={PAGE}",
            encoded(branch),
            encoded(&self.base)
        );
        let (status, body) = self.call(Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(ForgeError::Other(format!(
                "the merge requests of {branch}: {status}: {}",
                snippet(&body.to_string())
            )));
        }
        let found: Vec<MergeRequest> = serde_json::from_value(body)
            .map_err(|e| ForgeError::Other(format!("the merge requests of {branch}: unexpected answer: {e}")))?;
        Ok(found.into_iter().find(MergeRequest::is_from_the_project))
    }

    /// The `workflow/<name>` label `draft` should carry, if any.
    fn label_of(draft: &Draft<'_>) -> Option<String> {
        draft.workflow.map(|w| format!("workflow/{w}"))
    }

    /// Rewrites the title and description, and swaps Registrar's `workflow/*` label, in one
    /// request that leaves every other label alone — a reviewer's `workflow/*` label too,
    /// which may be a choice not read yet: only the label Registrar set before (`previous`)
    /// is taken off.
    async fn edit(&self, mr: &MergeRequest, draft: &Draft<'_>, previous: Option<&str>) -> Result<ForgeRef, ForgeError> {
        let wanted = Self::label_of(draft);
        let stale: Vec<String> = previous
            .map(|w| format!("workflow/{w}"))
            .filter(|old| Some(old) != wanted.as_ref() && mr.labels.contains(old))
            .into_iter()
            .collect();
        let body = json!({
            "title": draft.title,
            "description": draft.body,
            "add_labels": wanted.unwrap_or_default(),
            "remove_labels": stale.join(","),
        });
        let (status, answer) = self
            .call(Method::PUT, &format!("/merge_requests/{}", mr.iid), Some(body))
            .await?;
        if !status.is_success() {
            return Err(ForgeError::Other(format!(
                "editing merge request !{}: {status}: {}",
                mr.iid,
                snippet(&answer.to_string())
            )));
        }
        Ok(mr.forge_ref())
    }

    /// The proposal's merge request: the recorded one (gone is an error, never "nothing to
    /// do"), or the branch's, if it was never recorded.
    async fn recorded(&self, proposal: &Proposal) -> Result<Option<MergeRequest>, ForgeError> {
        match proposal.number {
            Some(iid) => Ok(Some(self.merge_request(iid).await?.ok_or_else(|| gone(iid))?)),
            None => self.of_branch(&proposal.branch, "all").await,
        }
    }
}

#[async_trait]
impl Forge for GitlabForge {
    fn kind(&self) -> &'static str {
        "gitlab"
    }

    async fn open(&self, draft: &Draft<'_>, existing: Option<&Proposal>) -> Result<ForgeRef, ForgeError> {
        let recorded = match existing.filter(|p| p.branch == draft.branch).and_then(|p| p.number) {
            Some(iid) => self.merge_request(iid).await?,
            None => None,
        };
        let open = match recorded.filter(|m| m.proposal_state() == ProposalState::Open) {
            Some(m) => Some(m),
            None => self.of_branch(draft.branch, "opened").await?,
        };
        if let Some(mr) = open {
            let previous = existing.and_then(|p| p.workflow.as_deref());
            return self.edit(&mr, draft, previous).await;
        }
        let body = json!({
            "source_branch": draft.branch,
            "target_branch": self.base,
            "title": draft.title,
            "description": draft.body,
            "labels": Self::label_of(draft).unwrap_or_default(),
            "remove_source_branch": true,
        });
        let (status, answer) = self.call(Method::POST, "/merge_requests", Some(body)).await?;
        if status == StatusCode::CONFLICT {
            // Made meanwhile (a create whose answer was lost): the open one that exists.
            if let Some(m) = self.of_branch(draft.branch, "opened").await? {
                return Ok(m.forge_ref());
            }
        }
        if !status.is_success() {
            return Err(ForgeError::Other(format!(
                "opening a merge request for {}: {status}: {}",
                draft.branch,
                snippet(&answer.to_string())
            )));
        }
        let mr: MergeRequest = serde_json::from_value(answer)
            .map_err(|e| ForgeError::Other(format!("opening a merge request: unexpected answer: {e}")))?;
        Ok(mr.forge_ref())
    }

    async fn approve(&self, proposal: &Proposal, _actor: &str) -> Result<(), ForgeError> {
        let iid = proposal
            .number
            .ok_or_else(|| ForgeError::Other(format!("{} has no merge request", proposal.branch)))?;
        let mut patience = Patience::new(MERGE_PATIENCE);
        loop {
            let mr = self.merge_request(iid).await?.ok_or_else(|| gone(iid))?;
            match mr.proposal_state() {
                ProposalState::Merged => return Ok(()),
                ProposalState::Closed => return Err(ForgeError::Conflict(format!("merge request !{iid} is closed"))),
                _ => {}
            }
            let refusal = if mr.is_being_checked() {
                "GitLab is still checking whether it can be merged".to_string()
            } else {
                // Pinned to the head that was reviewed: GitLab answers 409 while the head it
                // knows is another (a push it has not caught up with, or someone else's).
                let body = json!({"sha": proposal.head, "should_remove_source_branch": true});
                let (status, answer) = self
                    .call(Method::PUT, &format!("/merge_requests/{iid}/merge"), Some(body))
                    .await?;
                // 2xx but not merged: it waits for a pipeline; 405/406/422: not mergeable yet.
                if status.is_success() && answer["state"] == "merged" {
                    return Ok(());
                }
                format!("{status}: {}", snippet(&answer.to_string()))
            };
            if !patience.wait().await {
                return Err(ForgeError::Conflict(format!(
                    "merge request !{iid} was not merged: {refusal}"
                )));
            }
        }
    }

    async fn reject(&self, proposal: &Proposal, _actor: &str) -> Result<(), ForgeError> {
        if let Some(mr) = self.recorded(proposal).await? {
            match mr.proposal_state() {
                ProposalState::Merged => return Err(ForgeError::Merged(mr.iid)),
                ProposalState::Closed => {}
                _ => {
                    let path = format!("/merge_requests/{}", mr.iid);
                    let (status, _) = self
                        .call(Method::PUT, &path, Some(json!({"state_event": "close"})))
                        .await?;
                    if !status.is_success() {
                        return Err(ForgeError::Other(format!(
                            "closing merge request !{}: {status}",
                            mr.iid
                        )));
                    }
                }
            }
        }
        let path = format!("/repository/branches/{}", encoded(&proposal.branch));
        let (status, _) = self.call(Method::DELETE, &path, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(ForgeError::Other(format!(
                "deleting branch {}: {status}",
                proposal.branch
            )))
        }
    }

    async fn branch_state(&self, branch: &str) -> Result<Option<(ProposalState, ForgeRef)>, ForgeError> {
        Ok(self
            .of_branch(branch, "all")
            .await?
            .map(|m| (m.proposal_state(), m.forge_ref())))
    }

    async fn say(&self, proposal: &Proposal, text: &str) -> Result<(), ForgeError> {
        let Some(iid) = proposal.number else { return Ok(()) };
        let path = format!("/merge_requests/{iid}/notes");
        let (status, _) = self.call(Method::POST, &path, Some(json!({"body": text}))).await?;
        if !status.is_success() {
            return Err(ForgeError::Other(format!(
                "commenting on merge request !{iid}: {status}"
            )));
        }
        Ok(())
    }

    async fn review(&self, proposal: &Proposal) -> Result<Review, ForgeError> {
        Ok(match self.recorded(proposal).await? {
            Some(m) => Review {
                state: m.proposal_state(),
                head: m.sha.unwrap_or_default(),
                description: m.description,
                labels: m.labels,
            },
            // Not opened yet: nothing was decided.
            None => Review::unopened(),
        })
    }
}
