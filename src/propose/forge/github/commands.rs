//! Reviewers' commands in pull request comments: `/registrar reject <mac> [reason]` and
//! `/registrar workflow <mac> <name>`, heard only from people with write access to the
//! repository (GitHub is asked each time: an `author_association` in a delivery says
//! nothing about write access). Each command acts on a machine of the pull request it was
//! written in, through the same intents the API and the console use.

use chrono::{DateTime, Utc};
use http::Method;
use serde_json::Value;

use super::GithubForge;
use super::client::{self, GhError, Kind};
use super::events::GithubHooks;
use crate::domain::group::{Command, parse_commands};
use crate::domain::{Mac, ProposalState};
use crate::propose::{Intent, ProposeError};
use crate::render::markdown::{code, escape};

/// A comment, as read from an `issue_comment` delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// The issue or pull request it was written in.
    pub number: u64,
    pub id: u64,
    pub body: String,
    pub author: String,
    /// Written by an app (Registrar's own replies among them): never a command.
    pub by_bot: bool,
}

impl Comment {
    /// A created comment (edits and deletions are not commands). Read with octocrab's
    /// model, so a delivery that is not shaped as GitHub's is refused.
    pub fn read(v: &Value) -> Result<Option<Comment>, serde_json::Error> {
        if v["action"] != "created" {
            return Ok(None);
        }
        let number = serde_json::from_value::<u64>(v["issue"]["number"].clone())?;
        let comment: octocrab::models::issues::Comment = serde_json::from_value(v["comment"].clone())?;
        Ok(Some(Comment {
            number,
            id: comment.id.into_inner(),
            body: comment.body.unwrap_or_default(),
            by_bot: comment.user.r#type == "Bot",
            author: comment.user.login,
        }))
    }
}

/// Whether `login` can be a GitHub login (letters, digits, single hyphens): anything else
/// is not asked about.
fn is_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 39
        && login.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !login.starts_with('-')
}

/// The number at the end of a comment's `issue_url` (`…/issues/<n>`).
fn issue_number(issue_url: &str) -> Option<u64> {
    issue_url.rsplit('/').next()?.parse().ok()
}

impl GithubForge {
    /// The repository's comments updated since `since`, oldest first (at most 1,000): what
    /// the webhook may have missed.
    pub async fn comments_since(&self, since: DateTime<Utc>) -> Result<Vec<Comment>, GhError> {
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut out = Vec::new();
        for page in 1..=10 {
            let reply = self
                .client
                .get(&self.path(&format!(
                    "/issues/comments?sort=updated&direction=asc&per_page=100&page={page}&since={}",
                    client::segment(&since)
                )))
                .await?;
            let items: Vec<octocrab::models::issues::Comment> = reply.parse()?;
            let full = items.len() == 100;
            out.extend(items.into_iter().filter_map(|c| {
                Some(Comment {
                    number: issue_number(c.issue_url.as_ref()?.as_str())?,
                    id: c.id.into_inner(),
                    body: c.body.unwrap_or_default(),
                    by_bot: c.user.r#type == "Bot",
                    author: c.user.login,
                })
            }));
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// The permission `login` has on the repository: `admin`, `maintain`, `write`,
    /// `triage`, `read` or `none`.
    pub async fn permission(&self, login: &str) -> Result<String, GhError> {
        if !is_login(login) {
            return Ok("none".into());
        }
        let reply = self
            .client
            .call(
                Method::GET,
                &self.path(&format!("/collaborators/{login}/permission")),
                None,
                Kind::Read,
            )
            .await;
        match reply {
            Ok(reply) => {
                let v: Value = reply.parse()?;
                Ok(v["role_name"]
                    .as_str()
                    .or(v["permission"].as_str())
                    .unwrap_or("none")
                    .to_string())
            }
            // Not a collaborator at all.
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => Ok("none".into()),
            Err(e) => Err(e),
        }
    }
}

impl GithubHooks {
    /// Commands written in the open pull requests `open` since the last look, whose
    /// delivery may have been lost: carried out as if delivered (each comment once).
    pub(super) async fn catch_up_on_comments(&self, open: &[u64]) -> Result<(), ProposeError> {
        let since = *self.comments_seen.lock().unwrap_or_else(|p| p.into_inner());
        // A little overlap: a comment written during the last look is seen again, and
        // carried out once all the same.
        let started = Utc::now() - chrono::Duration::minutes(1);
        if open.is_empty() {
            *self.comments_seen.lock().unwrap_or_else(|p| p.into_inner()) = started;
            return Ok(());
        }
        let comments = self
            .forge
            .comments_since(since)
            .await
            .map_err(|e| ProposeError::Forge(e.into()))?;
        for comment in comments.iter().filter(|c| open.contains(&c.number)) {
            if let Err(e) = self.comment_commands(comment).await {
                tracing::warn!(number = comment.number, comment = comment.id, error = %e, "could not carry out a comment's commands; tried again at the next reconcile");
                return Ok(());
            }
        }
        *self.comments_seen.lock().unwrap_or_else(|p| p.into_inner()) = started;
        Ok(())
    }

    /// Carries out the commands in a comment, once per comment, and answers what was done.
    pub(super) async fn comment_commands(&self, comment: &Comment) -> Result<(), ProposeError> {
        if comment.by_bot {
            return Ok(());
        }
        let (commands, problems) = parse_commands(&comment.body);
        if commands.is_empty() && problems.is_empty() {
            return Ok(());
        }
        let _one_at_a_time = self.commands.lock().await;
        let key = format!("command:{}#{}", self.forge.full_name(), comment.id);
        let (store, seen) = (self.proposer.store().clone(), key.clone());
        if tokio::task::spawn_blocking(move || store.was_remembered(&seen))
            .await
            .map_err(|e| ProposeError::Join(e.to_string()))??
        {
            return Ok(());
        }
        let permission = self
            .forge
            .permission(&comment.author)
            .await
            .map_err(|e| ProposeError::Forge(e.into()))?;
        let mut answer = Vec::new();
        if matches!(permission.as_str(), "admin" | "maintain" | "write") {
            let actor = format!("github:{}", comment.author);
            for command in commands {
                answer.push(self.carry_out(comment.number, command, &actor).await);
            }
            answer.extend(problems.into_iter().map(|p| format!("not done: {p}")));
        } else {
            answer.push(format!(
                "not done: only people with write access to this repository may give Registrar commands ({} has {}).",
                code(&comment.author),
                code(&permission)
            ));
        }
        // Remembered once carried out: a redelivery after a crash repeats commands that are
        // idempotent, rather than losing them.
        let store = self.proposer.store().clone();
        tokio::task::spawn_blocking(move || store.remember_once(&key, Utc::now()))
            .await
            .map_err(|e| ProposeError::Join(e.to_string()))??;
        let text = answer.iter().map(|a| format!("- {a}")).collect::<Vec<_>>().join("\n");
        self.forge
            .comment(comment.number, &format!("Registrar, on that comment:\n\n{text}"))
            .await
            .map_err(|e| ProposeError::Forge(e.into()))?;
        Ok(())
    }

    /// One command, on a machine of pull request `number`; a sentence on what happened.
    async fn carry_out(&self, number: u64, command: Command, actor: &str) -> String {
        let mac = match &command {
            Command::Reject { mac, .. } | Command::Workflow { mac, .. } => *mac,
        };
        match self.member_of(mac, number).await {
            Ok(true) => {}
            Ok(false) => {
                return format!(
                    "not done: {} is not a machine this pull request proposes.",
                    code(&mac.to_string())
                );
            }
            Err(e) => return format!("not done: {}", escape(&e.to_string())),
        }
        let (intent, done) = match command {
            Command::Reject { reason, .. } => {
                let said = if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", escape(&reason))
                };
                let reason = if reason.is_empty() {
                    format!("left out of pull request #{number} by a comment")
                } else {
                    format!("left out of pull request #{number} by a comment: {reason}")
                };
                (
                    Intent::Reject { reason },
                    format!(
                        "left out {}{said}; the branch is rewritten without it.",
                        code(&mac.to_string())
                    ),
                )
            }
            Command::Workflow { workflow, .. } => {
                let done = format!(
                    "{} will be provisioned with {}; its file is re-rendered.",
                    code(&mac.to_string()),
                    code(&workflow)
                );
                (Intent::Workflow(workflow), done)
            }
        };
        match self.proposer.intend(mac, intent, actor).await {
            Ok(_) => done,
            Err(e) => format!("not done for {}: {}", code(&mac.to_string()), escape(&e.to_string())),
        }
    }

    /// Whether `mac`'s open proposal is pull request `number`.
    async fn member_of(&self, mac: Mac, number: u64) -> Result<bool, ProposeError> {
        let store = self.proposer.store().clone();
        let p = tokio::task::spawn_blocking(move || store.proposal(mac))
            .await
            .map_err(|e| ProposeError::Join(e.to_string()))??;
        Ok(p.is_some_and(|p| {
            p.number == Some(number) && matches!(p.state, ProposalState::Open | ProposalState::Approving)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_logins_are_asked_about() {
        assert!(is_login("octo-cat1"));
        assert!(!is_login("../admin"));
        assert!(!is_login("-x"));
        assert!(!is_login(""));
    }

    #[test]
    fn the_recorded_delivery_reads() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/github/webhooks/issue_comment.created.1.json"
        );
        let text = std::fs::read(path).expect("the recorded deliveries are beside the project, in ../shared");
        let v: Value = serde_json::from_slice(&text).unwrap();
        let c = Comment::read(&v).unwrap().unwrap();
        assert!(c.number > 0 && c.id > 0);
        assert!(!c.author.is_empty());
    }
}
