//! The `github` forge: one pull request per machine, on GitHub or GitHub Enterprise.
//!
//! The branch is pushed over git (no REST cost); then, for a new machine, at most three
//! REST calls: a lookup by head branch (only when Registrar has no record), the create,
//! and the labels. An unchanged repeat costs none.
//!
//! Answers are read with octocrab's models (pull requests, labels, webhook events); the
//! requests themselves go through `client`, the one module that speaks raw REST, because
//! each needs what octocrab's typed calls cannot carry: the shared pacing budget, ETags,
//! and a create or merge that is never resent blindly.

mod auto_merge;
pub mod commands;
mod pull_request;
pub use pull_request::PullRequest;
pub mod client;
pub mod dashboard;
pub mod events;
mod gate;
mod rules_review;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, StatusCode};
use octocrab::models::Label;
use octocrab::models::pulls::PullRequest as GhPullRequest;
use serde_json::json;

use super::{AutoMerge, Draft, Forge, ForgeError, ForgeRef, Review};
use crate::domain::{Proposal, ProposalState};
use client::{Client, GhError, Kind, Pacing, pulls, segment};

pub const REGISTRAR_LABEL: &str = "registrar";
pub const WORKFLOW_PREFIX: &str = "workflow/";

impl From<GhError> for ForgeError {
    fn from(e: GhError) -> Self {
        ForgeError::Other(e.to_string())
    }
}

/// How Registrar authenticates to GitHub.
pub enum GithubAuth {
    /// A token (fine-grained personal access token, or one minted elsewhere).
    Token(secrecy::SecretString),
    /// A GitHub App: a JWT signed with its key buys installation tokens, which octocrab
    /// refreshes before they expire.
    App {
        app_id: u64,
        key_pem: Vec<u8>,
        installation_id: u64,
    },
}

pub struct GithubForge {
    client: Arc<Client>,
    /// The App-level client and installation, to mint tokens for git.
    app: Option<(octocrab::Octocrab, u64)>,
    owner: String,
    repo: String,
    base: String,
    /// `forge.github.approve_in_registrar`: off, approvals are merges on GitHub.
    approves_in_registrar: bool,
    /// Where GraphQL is (auto-merge has no REST call).
    graphql: String,
}

impl GithubForge {
    pub fn new(
        api_url: &str,
        auth: GithubAuth,
        owner: &str,
        repo: &str,
        base: &str,
        pacing: Pacing,
    ) -> anyhow::Result<Self> {
        let builder = octocrab::Octocrab::builder()
            .base_uri(api_url)?
            // Never let the library resend a request: see client.rs.
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(pacing.timeout));
        let (octo, app) = match auth {
            GithubAuth::Token(token) => (builder.personal_token(token).build()?, None),
            GithubAuth::App {
                app_id,
                key_pem,
                installation_id,
            } => {
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key_pem)
                    .map_err(|e| anyhow::anyhow!("the GitHub App key is not an RSA PEM key: {e}"))?;
                let app_client = builder.app(octocrab::models::AppId(app_id), key).build()?;
                let installation = app_client.installation(octocrab::models::InstallationId(installation_id))?;
                (installation, Some((app_client, installation_id)))
            }
        };
        Ok(GithubForge {
            client: Arc::new(Client::new(octo, pacing)),
            app,
            owner: owner.into(),
            repo: repo.into(),
            base: base.into(),
            approves_in_registrar: false,
            graphql: auto_merge::graphql_path(api_url),
        })
    }

    /// Lets the console, API and CLI approve by merging through the API.
    pub fn approving_in_registrar(mut self, allowed: bool) -> Self {
        self.approves_in_registrar = allowed;
        self
    }

    /// A fresh installation token for git, when authenticating as an App.
    pub async fn installation_token(&self) -> anyhow::Result<Option<secrecy::SecretString>> {
        let Some((app, id)) = &self.app else { return Ok(None) };
        let (_, token) = app
            .installation_and_token(octocrab::models::InstallationId(*id))
            .await?;
        Ok(Some(token))
    }

    pub fn counters(&self) -> Arc<client::Counters> {
        self.client.counters.clone()
    }

    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    fn path(&self, rest: &str) -> String {
        format!("/repos/{}/{}{rest}", self.owner, self.repo)
    }

    /// Creates Registrar's labels (with colour and description) before anything uses them;
    /// GitHub would otherwise create grey ones without a description.
    pub async fn ensure_labels<'a>(&self, workflows: impl Iterator<Item = &'a str>) -> Result<(), GhError> {
        let mut wanted = vec![(
            REGISTRAR_LABEL.to_string(),
            "5319e7".to_string(),
            "A machine proposed by Registrar".to_string(),
        )];
        wanted.extend(workflows.map(|w| {
            (
                format!("{WORKFLOW_PREFIX}{w}"),
                "0e8a16".to_string(),
                format!("Provision with the {w} workflow"),
            )
        }));
        let existing: Vec<Label> = self.client.get(&self.path("/labels?per_page=100")).await?.parse()?;
        let have: Vec<&str> = existing.iter().map(|l| l.name.as_str()).collect();
        for (name, color, description) in wanted.iter().filter(|(n, _, _)| !have.contains(&n.as_str())) {
            let body = json!({"name": name, "color": color, "description": description});
            match self
                .client
                .call(Method::POST, &self.path("/labels"), Some(&body), Kind::Idempotent)
                .await
            {
                Ok(_) => {}
                // already_exists: someone made it meanwhile.
                Err(e) if e.status() == Some(StatusCode::UNPROCESSABLE_ENTITY) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The pull request whose head is `branch` in this repository: the open one, else the
    /// newest. GitHub needs `owner:` in `head`, and its answer is re-checked here.
    pub async fn find(&self, branch: &str) -> Result<Option<PullRequest>, GhError> {
        let head = format!("{}:{branch}", self.owner);
        let reply = self
            .client
            .get(&self.path(&format!("/pulls?head={}&state=all&per_page=100", segment(&head))))
            .await?;
        let mut prs: Vec<PullRequest> = pulls(reply)?
            .into_iter()
            .filter(|p| {
                p.head_ref == branch && p.base_ref == self.base && p.head_repo.eq_ignore_ascii_case(&self.full_name())
            })
            .collect();
        prs.sort_by_key(|p| (p.open, p.number));
        Ok(prs.pop())
    }

    pub async fn get(&self, number: u64) -> Result<PullRequest, GhError> {
        let reply = self.client.get(&self.path(&format!("/pulls/{number}"))).await?;
        Ok(reply.parse::<GhPullRequest>()?.into())
    }

    /// Registrar's pull requests: every open one, and the most recently updated closed ones.
    pub async fn list_recent(&self) -> Result<Vec<PullRequest>, GhError> {
        let mut out = Vec::new();
        for state in ["open", "closed"] {
            for page in 1..=10 {
                // Conditional: at rest GitHub answers 304, which costs no rate limit.
                let (reply, _) = self
                    .client
                    .get_if_changed(&self.path(&format!(
                        "/pulls?state={state}&sort=updated&direction=desc&per_page=100&page={page}"
                    )))
                    .await?;
                let items = pulls(reply)?;
                let full_page = items.len() == 100;
                out.extend(
                    items
                        .into_iter()
                        .filter(|p| p.head_ref.starts_with(crate::domain::branch_prefix())),
                );
                // Closed ones: the newest page is enough between two passes.
                if !full_page || state == "closed" {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub async fn comment(&self, number: u64, body: &str) -> Result<(), GhError> {
        self.client
            .call(
                Method::POST,
                &self.path(&format!("/issues/{number}/comments")),
                Some(&json!({"body": body})),
                Kind::Create,
            )
            .await?;
        Ok(())
    }

    async fn set_workflow_label(&self, number: u64, old: Option<&str>, new: Option<&str>) -> Result<(), GhError> {
        if let Some(new) = new {
            let body = json!({"labels": [format!("{WORKFLOW_PREFIX}{new}")]});
            self.client
                .call(
                    Method::POST,
                    &self.path(&format!("/issues/{number}/labels")),
                    Some(&body),
                    Kind::Idempotent,
                )
                .await?;
        }
        if let Some(old) = old.filter(|o| Some(*o) != new) {
            let name = segment(&format!("{WORKFLOW_PREFIX}{old}"));
            match self
                .client
                .call(
                    Method::DELETE,
                    &self.path(&format!("/issues/{number}/labels/{name}")),
                    None,
                    Kind::Idempotent,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Opens the pull request for `branch`, or adopts the one that exists: a create that
    /// failed ambiguously, or a 422 "already exists", is resolved by looking it up.
    async fn create(&self, draft: &Draft<'_>) -> Result<PullRequest, ForgeError> {
        let body = json!({
            "title": draft.title,
            "head": draft.branch,
            "base": self.base,
            "body": draft.body,
            "maintainer_can_modify": false,
        });
        let mut earlier = None;
        for _ in 0..3 {
            // Only an open one is ours to adopt (a create whose answer was lost): a closed
            // one on the same branch is an earlier, rejected proposal, never silently revived.
            match self.find(draft.branch).await? {
                Some(pr) if pr.open => return Ok(pr),
                Some(pr) if !pr.merged => earlier = Some(pr.number),
                _ => {}
            }
            match self
                .client
                .call(Method::POST, &self.path("/pulls"), Some(&body), Kind::Create)
                .await
            {
                Ok(reply) => {
                    let pr = PullRequest::from(reply.parse::<GhPullRequest>()?);
                    if let Some(old) = earlier {
                        let note = format!(
                            "Registrar proposes this machine again; its earlier pull request #{old} stays closed."
                        );
                        if let Err(e) = self.comment(pr.number, &note).await {
                            tracing::warn!(number = pr.number, error = %e, "could not say which pull request this one replaces");
                        }
                    }
                    return Ok(pr);
                }
                Err(e @ GhError::Status { .. }) if e.status() == Some(StatusCode::UNPROCESSABLE_ENTITY) => {
                    let messages = e.validation_messages().join("; ");
                    if messages.contains("already exists") {
                        continue; // adopt it: the next lookup finds it
                    }
                    return Err(ForgeError::Other(format!(
                        "GitHub refused the pull request for {}: {messages}",
                        draft.branch
                    )));
                }
                Err(GhError::Ambiguous { detail, .. }) => {
                    tracing::warn!(branch = draft.branch, %detail, "pull request create unanswered; looking it up before trying again");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.find(draft.branch)
            .await?
            .filter(|pr| pr.open)
            .ok_or_else(|| ForgeError::Other(format!("could not open a pull request for {}", draft.branch)))
    }

    /// Reopens a closed proposal's pull request. False when there is none to reopen or
    /// GitHub refuses (a branch recreated since, say): the caller opens a fresh one.
    async fn reopen(&self, proposal: &Proposal) -> Result<bool, ForgeError> {
        let Some(number) = proposal.number else {
            return Ok(false);
        };
        let pr = self.get(number).await?;
        if pr.open {
            return Ok(true);
        }
        if pr.merged {
            return Ok(false);
        }
        match self
            .client
            .call(
                Method::PATCH,
                &self.path(&format!("/pulls/{number}")),
                Some(&json!({"state": "open"})),
                Kind::Idempotent,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(
                    number,
                    "reopened the pull request of a machine whose rejection was lifted"
                );
                Ok(true)
            }
            Err(e) if e.status() == Some(StatusCode::UNPROCESSABLE_ENTITY) => {
                tracing::info!(number, error = %e, "GitHub would not reopen the pull request; opening a fresh one");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Forge for GithubForge {
    fn kind(&self) -> &'static str {
        "github"
    }

    async fn auto_merge(&self, proposal: &Proposal) -> Result<AutoMerge, ForgeError> {
        self.enable_auto_merge(proposal).await
    }

    async fn cancel_auto_merge(&self, proposal: &Proposal) -> Result<(), ForgeError> {
        self.disable_auto_merge(proposal).await
    }

    fn lists_changes(&self) -> bool {
        true
    }

    fn approval_elsewhere(&self, proposal: &Proposal) -> Option<String> {
        (!self.approves_in_registrar).then(|| {
            format!(
                "approving in Registrar is off for GitHub (forge.github.approve_in_registrar): merge {} on GitHub, where its reviews and branch protection apply",
                proposal.url.as_deref().unwrap_or("the pull request")
            )
        })
    }

    async fn say(&self, proposal: &Proposal, text: &str) -> Result<(), ForgeError> {
        let Some(number) = proposal.number else { return Ok(()) };
        self.comment(number, text).await?;
        Ok(())
    }

    async fn open(&self, draft: &Draft<'_>, existing: Option<&Proposal>) -> Result<ForgeRef, ForgeError> {
        let workflow = draft.workflow;
        // A rejection that was lifted brings its pull request back: reopened, or — where
        // GitHub refuses to reopen it — a fresh one (the proposal then records the new number).
        let reopened = match existing.filter(|p| matches!(p.state, ProposalState::Closed | ProposalState::Rejecting)) {
            Some(p) => self.reopen(p).await?,
            None => true,
        };
        if let Some(p) = existing.filter(|p| p.number.is_some() && p.forge == "github" && reopened) {
            let number = p.number.expect("filtered");
            if p.title != draft.title || p.summary != draft.body {
                let body = json!({"title": draft.title, "body": draft.body});
                self.client
                    .call(
                        Method::PATCH,
                        &self.path(&format!("/pulls/{number}")),
                        Some(&body),
                        Kind::Idempotent,
                    )
                    .await?;
            }
            if p.workflow.as_deref() != workflow {
                self.set_workflow_label(number, p.workflow.as_deref(), workflow).await?;
            }
            return Ok(ForgeRef {
                number: Some(number),
                url: p.url.clone(),
            });
        }
        let pr = self.create(draft).await?;
        let mut labels = vec![REGISTRAR_LABEL.to_string()];
        labels.extend(workflow.map(|w| format!("{WORKFLOW_PREFIX}{w}")));
        if !labels.iter().all(|l| pr.labels.contains(l)) {
            self.client
                .call(
                    Method::POST,
                    &self.path(&format!("/issues/{}/labels", pr.number)),
                    Some(&json!({"labels": labels})),
                    Kind::Idempotent,
                )
                .await?;
        }
        Ok(ForgeRef {
            number: Some(pr.number),
            url: pr.url,
        })
    }

    async fn approve(&self, proposal: &Proposal, actor: &str) -> Result<(), ForgeError> {
        let number = proposal
            .number
            .ok_or_else(|| ForgeError::Other("the proposal has no pull request".into()))?;
        let mut body = json!({"merge_method": "merge", "commit_title": format!("Merge {}: {}", proposal.branch, proposal.title), "commit_message": format!("Approved-by: {actor}")});
        // Only what was reviewed is merged: the head Registrar pushed. (A branch a person
        // took over is reviewed on GitHub, as it is there.)
        if !proposal.hands_off && !proposal.head.is_empty() {
            body["sha"] = json!(proposal.head);
        }
        // Sent once (Kind::Create): a merge whose answer is lost is looked up, not resent.
        let merged = self
            .client
            .call(
                Method::PUT,
                &self.path(&format!("/pulls/{number}/merge")),
                Some(&body),
                Kind::Create,
            )
            .await;
        if let Err(e) = merged {
            let moved = matches!(&e, GhError::Status { status, .. } if *status == http::StatusCode::CONFLICT);
            // Whatever the answer said, GitHub's pull request is the truth.
            let observed = self.get(number).await;
            match observed {
                Ok(pr) if pr.merged => {
                    tracing::info!(number, error = %e, "the merge's answer was an error, but the pull request is merged");
                }
                _ if moved => {
                    return Err(ForgeError::Conflict(format!(
                        "pull request #{number} changed after it was reviewed (its head is no longer {}); nothing was merged: look at it again",
                        short(&proposal.head)
                    )));
                }
                // 405: not mergeable (branch protection, conflicts); the PR stays the record.
                _ => {
                    return Err(ForgeError::Other(format!(
                        "GitHub did not merge pull request #{number} ({e}); branch protection may require a review there: {}",
                        proposal.url.as_deref().unwrap_or("see the pull request")
                    )));
                }
            }
        }
        // The forge is the record of who approved what: say who, on the PR itself.
        let (origin, who) = actor.split_once(':').unwrap_or(("registrar", actor));
        let via = match origin {
            "console" => "in Registrar's console",
            "cli" => "with Registrar's command line",
            "api" => "through Registrar's API",
            _ => "by Registrar",
        };
        let note = format!(
            "Approved and merged {via} by **{}**.",
            crate::render::markdown::escape(who)
        );
        // The click is answered once the merge is: the comment is an ordinary mutation that
        // would wait its turn behind every proposal being opened, so it follows on its own.
        // (A crash before it is sent loses the comment, never the approval: the merge
        // commit carries `Approved-by:` too.)
        let (client, path) = (self.client.clone(), self.path(&format!("/issues/{number}/comments")));
        tokio::spawn(async move {
            let body = json!({ "body": note });
            if let Err(e) = client.call(Method::POST, &path, Some(&body), Kind::Create).await {
                tracing::warn!(number, error = %e, "merged, but could not comment who approved");
            }
        });
        Ok(())
    }

    async fn reject(&self, proposal: &Proposal, _actor: &str) -> Result<(), ForgeError> {
        let Some(number) = proposal.number else { return Ok(()) };
        let pr = self.get(number).await?;
        if pr.merged {
            return Err(ForgeError::Merged(number));
        }
        if pr.open {
            // The branch stays, so that reopening the pull request brings the machine back.
            self.client
                .call(
                    Method::PATCH,
                    &self.path(&format!("/pulls/{number}")),
                    Some(&json!({"state": "closed"})),
                    Kind::Idempotent,
                )
                .await?;
        }
        Ok(())
    }

    async fn branch_state(&self, branch: &str) -> Result<Option<(ProposalState, ForgeRef)>, ForgeError> {
        Ok(self.find(branch).await?.map(|pr| {
            let state = if pr.merged {
                ProposalState::Merged
            } else if pr.open {
                ProposalState::Open
            } else {
                ProposalState::Closed
            };
            (
                state,
                ForgeRef {
                    number: Some(pr.number),
                    url: pr.url,
                },
            )
        }))
    }

    async fn review(&self, proposal: &Proposal) -> Result<Review, ForgeError> {
        let Some(number) = proposal.number else {
            // Not opened yet: nothing was decided.
            return Ok(Review::unopened());
        };
        let pr = self.get(number).await?;
        let state = if pr.merged {
            ProposalState::Merged
        } else if pr.open {
            ProposalState::Open
        } else {
            ProposalState::Closed
        };
        Ok(Review {
            state,
            head: pr.head_sha,
            description: Some(pr.body),
            labels: pr.labels,
        })
    }
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}
