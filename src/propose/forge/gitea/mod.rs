//! Forgejo and Gitea (`forge.kind: gitea`): a pull request per machine on an on-premises
//! forge, through its REST API (`/api/v1`, the same on both). Merge approves, close
//! rejects, a `workflow/<name>` label shows the workflow and a reviewer's chooses another;
//! signed webhooks only make Registrar look sooner (`hooks.rs`), and the reconcile asks
//! about every open proposal, so a lost delivery changes nothing.
//!
//! Every call is idempotent, as the `Forge` contract asks: a pull request is found by its
//! base and head before one is made (and again after a refused create), a merge names the
//! head it was reviewed at, and closing or deleting what is gone already succeeds.

pub mod hooks;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rest::{RestApi, snippet};
use super::{Draft, Forge, ForgeError, ForgeRef, MERGE_PATIENCE, Patience, Review};
use crate::domain::{Proposal, ProposalState};

/// A pull request as the API shows it (the fields Registrar reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Pull {
    pub number: u64,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub merged: bool,
    #[serde(default)]
    pub body: Option<String>,
    pub head: Head,
    pub base: Head,
    #[serde(default)]
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Label {
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Head {
    #[serde(rename = "ref")]
    pub branch: String,
    #[serde(default)]
    pub sha: String,
    /// A fork's pull request names its own repository here: never one of Registrar's.
    #[serde(default)]
    pub repo_id: Option<u64>,
}

impl Pull {
    /// From a branch of the repository itself, not a fork's branch of the same name.
    fn is_from_the_repository(&self) -> bool {
        self.head.repo_id == self.base.repo_id
    }

    fn forge_ref(&self) -> ForgeRef {
        ForgeRef {
            number: Some(self.number),
            url: Some(self.html_url.clone()),
        }
    }

    fn proposal_state(&self) -> ProposalState {
        match (self.merged, self.state.as_str()) {
            (true, _) => ProposalState::Merged,
            (false, "closed") => ProposalState::Closed,
            _ => ProposalState::Open,
        }
    }
}

pub struct GiteaForge {
    /// `https://git.example/api/v1/repos/<owner>/<repo>`, with the token.
    api: RestApi,
    base: String,
    /// Label ids by name, as the forge gave them.
    labels: tokio::sync::Mutex<HashMap<String, u64>>,
}

impl GiteaForge {
    pub fn new(
        url: &str,
        owner: &str,
        repo: &str,
        token: SecretString,
        base: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let root = format!("{}/api/v1/repos/{owner}/{repo}", url.trim_end_matches('/'));
        let auth = SecretString::from(format!("token {}", token.expose_secret()));
        Ok(GiteaForge {
            api: RestApi::new(root, "authorization", auth, timeout)?,
            base: base.to_string(),
            labels: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value), ForgeError> {
        self.api.call(method, path, body).await
    }

    fn pull_of(status: StatusCode, body: Value, what: &str) -> Result<Option<Pull>, ForgeError> {
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => serde_json::from_value(body)
                .map(Some)
                .map_err(|e| ForgeError::Other(format!("{what}: unexpected answer: {e}"))),
            s => Err(ForgeError::Other(format!(
                "{what}: {s}: {}",
                snippet(&body.to_string())
            ))),
        }
    }

    /// Pull request `number` as the forge shows it now, if it exists.
    pub async fn pull(&self, number: u64) -> Result<Option<Pull>, ForgeError> {
        let (status, body) = self.call(Method::GET, &format!("/pulls/{number}"), None).await?;
        Self::pull_of(status, body, &format!("pull request #{number}"))
    }

    /// A pull request from `branch` of this repository into the base branch, open or not
    /// (which one, when there were several, is the forge's choice).
    async fn pull_of_branch(&self, branch: &str) -> Result<Option<Pull>, ForgeError> {
        Ok(self
            .any_pull_of_branch(branch)
            .await?
            .filter(Pull::is_from_the_repository))
    }

    /// A pull request from a branch named `branch`, a fork's included.
    async fn any_pull_of_branch(&self, branch: &str) -> Result<Option<Pull>, ForgeError> {
        let path = format!("/pulls/{}/{}", self.base, branch);
        let (status, body) = self.call(Method::GET, &path, None).await?;
        Self::pull_of(status, body, &format!("the pull request of {branch}"))
    }

    /// The open pull request from `branch`, if any: looked up by base and head, and where
    /// that finds a closed one (a machine proposed again), among the open ones.
    async fn open_pull_of_branch(&self, branch: &str) -> Result<Option<Pull>, ForgeError> {
        match self.any_pull_of_branch(branch).await? {
            Some(p) if p.proposal_state() == ProposalState::Open && p.is_from_the_repository() => return Ok(Some(p)),
            None => return Ok(None),
            // Closed, or a fork's: look among the open ones.
            Some(_) => {}
        }
        for page in 1..=PAGES {
            let path = format!("/pulls?state=open&limit={PAGE}&page={page}");
            let (status, body) = self.call(Method::GET, &path, None).await?;
            if !status.is_success() {
                return Err(ForgeError::Other(format!("listing open pull requests: {status}")));
            }
            let pulls: Vec<Pull> =
                serde_json::from_value(body).map_err(|e| ForgeError::Other(format!("open pull requests: {e}")))?;
            if let Some(p) = pulls
                .iter()
                .find(|p| p.head.branch == branch && p.is_from_the_repository())
            {
                return Ok(Some(p.clone()));
            }
            if pulls.len() < PAGE {
                break;
            }
        }
        Ok(None)
    }

    /// The proposal's pull request: the recorded one (gone is an error, never "nothing to
    /// do"), or the branch's, if it was never recorded.
    async fn recorded(&self, proposal: &Proposal) -> Result<Option<Pull>, ForgeError> {
        match proposal.number {
            Some(n) => Ok(Some(self.pull(n).await?.ok_or_else(|| gone(n))?)),
            None => self.pull_of_branch(&proposal.branch).await,
        }
    }

    /// The id of label `name`, made if the repository lacks it.
    async fn label_id(&self, name: &str) -> Result<u64, ForgeError> {
        let mut labels = self.labels.lock().await;
        if let Some(id) = labels.get(name) {
            return Ok(*id);
        }
        for page in 1..=PAGES {
            let path = format!("/labels?limit={PAGE}&page={page}");
            let (status, body) = self.call(Method::GET, &path, None).await?;
            let found = body.as_array().map_or(0, Vec::len);
            if status.is_success() {
                for label in body.as_array().into_iter().flatten() {
                    if let (Some(n), Some(id)) = (label["name"].as_str(), label["id"].as_u64()) {
                        labels.insert(n.to_string(), id);
                    }
                }
            }
            if labels.contains_key(name) || found < PAGE {
                break;
            }
        }
        if let Some(id) = labels.get(name) {
            return Ok(*id);
        }
        let (status, body) = self
            .call(Method::POST, "/labels", Some(json!({"name": name, "color": "#1d76db"})))
            .await?;
        let id = body["id"]
            .as_u64()
            .filter(|_| status.is_success())
            .ok_or_else(|| ForgeError::Other(format!("creating label {name}: {status}")))?;
        labels.insert(name.to_string(), id);
        Ok(id)
    }

    async fn labels_of(&self, draft: &Draft<'_>) -> Result<Vec<u64>, ForgeError> {
        match draft.workflow {
            Some(w) => Ok(vec![self.label_id(&format!("workflow/{w}")).await?]),
            None => Ok(vec![]),
        }
    }

    /// Rewrites the title and description. Labels are added and removed one by one (an
    /// edit's label list would replace the reviewers' labels too), and only the `workflow/*`
    /// label Registrar set before (`previous`) is taken off: another may be a reviewer's
    /// choice not read yet.
    async fn edit(&self, pull: &Pull, draft: &Draft<'_>, previous: Option<&str>) -> Result<ForgeRef, ForgeError> {
        let body = json!({"title": draft.title, "body": draft.body});
        let (status, answer) = self
            .call(Method::PATCH, &format!("/pulls/{}", pull.number), Some(body))
            .await?;
        let edited = Self::pull_of(status, answer, &format!("editing pull request #{}", pull.number))?;
        let wanted = self.labels_of(draft).await?;
        let issue = format!("/issues/{}/labels", pull.number);
        let previous = previous.map(|w| format!("workflow/{w}"));
        for stale in pull
            .labels
            .iter()
            .filter(|l| Some(&l.name) == previous.as_ref() && !wanted.contains(&l.id))
        {
            self.call(Method::DELETE, &format!("{issue}/{}", stale.id), None)
                .await?;
        }
        if wanted.iter().any(|id| !pull.labels.iter().any(|l| l.id == *id)) {
            let (status, _) = self.call(Method::POST, &issue, Some(json!({"labels": wanted}))).await?;
            if !status.is_success() {
                return Err(ForgeError::Other(format!(
                    "labelling pull request #{}: {status}",
                    pull.number
                )));
            }
        }
        Ok(edited.unwrap_or_else(|| pull.clone()).forge_ref())
    }
}

/// Listings are read a page of this many at a time, at most `PAGES` pages.
const PAGE: usize = 50;
const PAGES: usize = 40;

/// Not found is never "closed": the forge answers 404 for a repository the token cannot
/// see (or a renamed one), and reading that as a close would reject every machine.
fn gone(number: u64) -> ForgeError {
    ForgeError::Other(format!(
        "pull request #{number} is not found: does the token still see the repository?"
    ))
}

#[async_trait]
impl Forge for GiteaForge {
    fn kind(&self) -> &'static str {
        "gitea"
    }

    async fn open(&self, draft: &Draft<'_>, existing: Option<&Proposal>) -> Result<ForgeRef, ForgeError> {
        let recorded = match existing.filter(|p| p.branch == draft.branch).and_then(|p| p.number) {
            Some(n) => self.pull(n).await?,
            None => None,
        };
        let open = match recorded.filter(|p| p.proposal_state() == ProposalState::Open) {
            Some(p) => Some(p),
            None => self.open_pull_of_branch(draft.branch).await?,
        };
        if let Some(pull) = open {
            let previous = existing.and_then(|p| p.workflow.as_deref());
            return self.edit(&pull, draft, previous).await;
        }
        let labels = self.labels_of(draft).await?;
        let body = json!({
            "head": draft.branch, "base": self.base, "title": draft.title, "body": draft.body, "labels": labels,
        });
        let (status, answer) = self.call(Method::POST, "/pulls", Some(body)).await?;
        if status == StatusCode::CONFLICT || status == StatusCode::UNPROCESSABLE_ENTITY {
            // Made meanwhile (a create whose answer was lost): the open one that exists.
            if let Some(p) = self.open_pull_of_branch(draft.branch).await? {
                return Ok(p.forge_ref());
            }
        }
        match Self::pull_of(status, answer, &format!("opening a pull request for {}", draft.branch))? {
            Some(p) => Ok(p.forge_ref()),
            None => Err(ForgeError::Other(format!(
                "opening a pull request for {}: not found",
                draft.branch
            ))),
        }
    }

    async fn approve(&self, proposal: &Proposal, _actor: &str) -> Result<(), ForgeError> {
        let number = proposal
            .number
            .ok_or_else(|| ForgeError::Other(format!("{} has no pull request", proposal.branch)))?;
        let mut patience = Patience::new(MERGE_PATIENCE);
        loop {
            let pull = self.pull(number).await?.ok_or_else(|| gone(number))?;
            match pull.proposal_state() {
                ProposalState::Merged => return Ok(()),
                ProposalState::Closed => {
                    return Err(ForgeError::Conflict(format!("pull request #{number} is closed")));
                }
                _ => {}
            }
            // Pinned to the head that was reviewed: a push after the review is not merged. The
            // forge answers 405 while it still checks the pull request after a push, and 409
            // while the head it knows is another (one it has not caught up with, or someone
            // else's push): both are tried again, within the patience.
            let body = json!({"Do": "merge", "head_commit_id": proposal.head, "delete_branch_after_merge": true});
            let (status, answer) = self
                .call(Method::POST, &format!("/pulls/{number}/merge"), Some(body))
                .await?;
            if status.is_success() {
                return Ok(());
            }
            if !patience.wait().await {
                return Err(ForgeError::Conflict(format!(
                    "pull request #{number} was not merged: {status}: {}",
                    snippet(&answer.to_string())
                )));
            }
        }
    }

    async fn reject(&self, proposal: &Proposal, _actor: &str) -> Result<(), ForgeError> {
        if let Some(pull) = self.recorded(proposal).await? {
            if pull.merged {
                return Err(ForgeError::Merged(pull.number));
            }
            if pull.state != "closed" {
                let (status, _) = self
                    .call(
                        Method::PATCH,
                        &format!("/pulls/{}", pull.number),
                        Some(json!({"state": "closed"})),
                    )
                    .await?;
                if !status.is_success() {
                    return Err(ForgeError::Other(format!(
                        "closing pull request #{}: {status}",
                        pull.number
                    )));
                }
            }
        }
        let (status, _) = self
            .call(Method::DELETE, &format!("/branches/{}", proposal.branch), None)
            .await?;
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
            .pull_of_branch(branch)
            .await?
            .map(|p| (p.proposal_state(), p.forge_ref())))
    }

    async fn say(&self, proposal: &Proposal, text: &str) -> Result<(), ForgeError> {
        let Some(n) = proposal.number else { return Ok(()) };
        let path = format!("/issues/{n}/comments");
        let (status, _) = self.call(Method::POST, &path, Some(json!({"body": text}))).await?;
        if !status.is_success() {
            return Err(ForgeError::Other(format!("commenting on pull request #{n}: {status}")));
        }
        Ok(())
    }

    async fn review(&self, proposal: &Proposal) -> Result<Review, ForgeError> {
        Ok(match self.recorded(proposal).await? {
            Some(p) => Review {
                state: p.proposal_state(),
                head: p.head.sha,
                description: p.body,
                labels: p.labels.into_iter().map(|l| l.name).collect(),
            },
            // Not opened yet: nothing was decided.
            None => Review::unopened(),
        })
    }
}
