//! GitHub's side of the conversation: webhook deliveries and the periodic reconcile both
//! end in `apply`, which makes Registrar's record agree with a pull request's current state.
//! Being state-based, a replayed, reordered or lost delivery changes nothing that the next
//! delivery or reconcile would not set right.

use std::sync::Arc;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{GithubForge, PullRequest, WORKFLOW_PREFIX};
use crate::domain::{Mac, ProposalState, State};
use crate::propose::{GroupEnd, Observation, ProposeError, Proposer};
use crate::store::StoreError;

pub struct GithubHooks {
    pub proposer: Arc<Proposer>,
    pub forge: Arc<GithubForge>,
    secret: SecretString,
    /// During a rotation, the secret GitHub may still sign with.
    previous: Option<SecretString>,
    /// Where the GitOps repository keeps the rules and templates Registrar runs with: a
    /// pull request that edits them is told what it would change (`rules_review.rs`).
    pub(super) templates_path: Option<String>,
    pub(super) rules_reviews: tokio::sync::Mutex<()>,
    /// Comments updated before this were looked at by the reconcile (at start: a day back,
    /// so commands written while Registrar was down are carried out).
    pub(super) comments_seen: std::sync::Mutex<chrono::DateTime<Utc>>,
    /// One comment's commands at a time: a delivery and the reconcile's catch-up never
    /// carry out the same comment twice.
    pub(super) commands: tokio::sync::Mutex<()>,
}

/// `X-Hub-Signature-256` is `sha256=` and the lower-case hex HMAC-SHA256 of the raw body.
pub fn signature_ok(secret: &SecretString, header: Option<&str>, body: &[u8]) -> bool {
    header
        .and_then(|h| h.strip_prefix("sha256="))
        .is_some_and(|hex_sig| crate::propose::forge::hooks::hmac_sha256_ok(secret, hex_sig, body))
}

/// What Registrar takes from a delivery. Read with octocrab's webhook models, so a
/// delivery that is not what GitHub sends is refused before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A push to `branch_ref` (`refs/heads/…`).
    Push { branch_ref: String },
    PullRequest {
        pull: Box<PullRequest>,
        /// The label a `labeled` delivery names.
        labeled: Option<String>,
        sender: Option<String>,
    },
    /// A comment was written: it may hold commands.
    Comment(super::commands::Comment),
    /// An event Registrar does not act on.
    Unused,
}

impl Delivery {
    /// The pull request is read with octocrab's model (a delivery without what GitHub always
    /// sends is refused); the action, label and sender from the delivery as it is, so an
    /// action GitHub adds later is no error.
    pub fn read(event: &str, body: &[u8]) -> Result<Self, serde_json::Error> {
        if event != "pull_request" && event != "push" && event != "issue_comment" {
            return Ok(Delivery::Unused);
        }
        let v: Value = serde_json::from_slice(body)?;
        if event == "issue_comment" {
            return Ok(super::commands::Comment::read(&v)?.map_or(Delivery::Unused, Delivery::Comment));
        }
        if event == "push" {
            let branch_ref = serde_json::from_value::<String>(v["ref"].clone())?;
            return Ok(Delivery::Push { branch_ref });
        }
        let pull: octocrab::models::pulls::PullRequest = serde_json::from_value(v["pull_request"].clone())?;
        let labeled = (v["action"] == "labeled")
            .then(|| v["label"]["name"].as_str().map(str::to_string))
            .flatten();
        Ok(Delivery::PullRequest {
            pull: Box::new(pull.into()),
            labeled,
            sender: v["sender"]["login"].as_str().map(str::to_string),
        })
    }
}

fn mac_of(branch: &str) -> Option<Mac> {
    crate::domain::mac_of_branch(branch)
}

impl GithubHooks {
    pub fn new(proposer: Arc<Proposer>, forge: Arc<GithubForge>, secret: SecretString) -> Self {
        GithubHooks {
            proposer,
            forge,
            secret,
            previous: None,
            templates_path: None,
            rules_reviews: tokio::sync::Mutex::new(()),
            comments_seen: std::sync::Mutex::new(Utc::now() - chrono::Duration::days(1)),
            commands: tokio::sync::Mutex::new(()),
        }
    }

    /// Comments on pull requests that edit `path` (`gitops.templates_path`).
    pub fn with_templates_path(mut self, path: Option<String>) -> Self {
        self.templates_path = path.filter(|p| !p.is_empty());
        self
    }

    /// Also accepts deliveries signed with `previous`, while a new secret is rolled out.
    pub fn with_previous_secret(mut self, previous: Option<SecretString>) -> Self {
        self.previous = previous;
        self
    }

    /// The webhook secret, which also signs what Registrar writes where others can write.
    pub(super) fn secret(&self) -> &str {
        self.secret.expose_secret()
    }

    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> bool {
        signature_ok(&self.secret, header, body)
            || self.previous.as_ref().is_some_and(|p| signature_ok(p, header, body))
    }

    /// Whether a delivery is about the configured repository.
    pub fn is_ours(&self, payload: &Value) -> bool {
        payload["repository"]["full_name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&self.forge.full_name()))
    }

    /// Handles one verified delivery. Events and actions Registrar does not use are ignored.
    /// Counted when done, so that whoever sent it can tell it has been acted on.
    pub async fn handle(&self, delivery: &Delivery) -> Result<(), ProposeError> {
        let result = self.handle_delivery(delivery).await;
        self.proposer.metrics.webhook_handled(result.is_ok());
        result
    }

    async fn handle_delivery(&self, delivery: &Delivery) -> Result<(), ProposeError> {
        let (announced, labeled, sender) = match delivery {
            Delivery::Unused => return Ok(()),
            Delivery::PullRequest { pull, labeled, sender } => (pull, labeled, sender),
            Delivery::Push { branch_ref } => return self.pushed(branch_ref).await,
            Delivery::Comment(comment) => return self.comment_commands(comment).await,
        };
        // Cheap checks first: a delivery about any other pull request costs no request.
        if announced.base_ref != self.proposer.git().base() {
            return Ok(());
        }
        if mac_of(&announced.head_ref).is_none() && crate::domain::group_of_branch(&announced.head_ref).is_none() {
            // Someone's own pull request: it may edit the rules and templates. Only from this
            // repository's branches (pushing one takes write access): a fork's templates are
            // not rendered here.
            if self.templates_path.is_some() && announced.open && self.is_ours_pr(announced) {
                return self.review_rules_change(announced.number).await;
            }
            return Ok(());
        }
        if !self.is_ours_pr(announced) {
            return Ok(());
        }
        // A delivery says that something changed, not what is true now: deliveries arrive
        // late, out of order and with stale label lists. Look at the pull request itself.
        let pr = self
            .forge
            .get(announced.number)
            .await
            .map_err(|e| ProposeError::Forge(e.into()))?;
        // The label a reviewer just added wins over the others, if it is still there.
        let added = labeled.as_deref().filter(|l| pr.labels.iter().any(|x| x == l));
        let actor = format!("github:{}", sender.as_deref().unwrap_or("unknown"));
        self.apply(&pr, &actor, added).await
    }

    /// Someone moved the base: rebuild proposals that share a kustomization with it.
    async fn pushed(&self, branch_ref: &str) -> Result<(), ProposeError> {
        if branch_ref != format!("refs/heads/{}", self.proposer.git().base()) {
            return Ok(());
        }
        self.proposer.observe_base_moved().await
    }

    /// Whether a pull request is from this repository's own branches (a fork's branch may
    /// carry any name, `registrar/<mac>` included).
    /// (GitHub sends no head repository once a fork is deleted: that is not ours either.)
    fn is_ours_pr(&self, pr: &PullRequest) -> bool {
        pr.head_repo.eq_ignore_ascii_case(&self.forge.full_name())
    }

    /// Makes Registrar's record of `pr`'s machine agree with the pull request.
    pub async fn apply(&self, pr: &PullRequest, actor: &str, just_added: Option<&str>) -> Result<(), ProposeError> {
        if pr.base_ref != self.proposer.git().base() {
            return Ok(());
        }
        if !self.is_ours_pr(pr) {
            return Ok(());
        }
        if let Some(group) = crate::domain::group_of_branch(&pr.head_ref) {
            return self.apply_group(group, pr, actor).await;
        }
        let Some(mac) = mac_of(&pr.head_ref) else { return Ok(()) };
        let store = self.proposer.store().clone();
        let (machine, recorded) =
            tokio::task::spawn_blocking(move || Ok::<_, StoreError>((store.machine(mac)?, store.proposal(mac)?)))
                .await
                .map_err(|e| ProposeError::Join(e.to_string()))??;
        let Some(machine) = machine else { return Ok(()) };
        let number = pr.number;
        // Ours is the pull request Registrar opened and recorded: another one on a branch of
        // the same name (closed before the machine was forgotten, say) says nothing about
        // this machine. Without a record there is nothing to agree with yet: the next sync
        // opens or adopts (only an open) pull request, and records it.
        let Some(recorded) = recorded.filter(|p| p.number == Some(number)) else {
            return Ok(());
        };
        // A change of a machine git holds (an update, a decommission) is followed by its
        // proposal's state; a registration by the machine's.
        let change_pending = recorded.kind.is_change()
            && matches!(
                recorded.state,
                ProposalState::Open | ProposalState::Approving | ProposalState::Rejecting
            );
        if pr.merged {
            if change_pending || (!recorded.kind.is_change() && !machine.state.is_settled()) {
                let who = pr
                    .merged_by
                    .as_deref()
                    .map(|l| format!("github:{l}"))
                    .unwrap_or_else(|| actor.to_string());
                self.proposer.observe(mac, Observation::Merged { number }, &who).await?;
            }
            return Ok(());
        }
        if !pr.open {
            if change_pending
                || (!recorded.kind.is_change()
                    && machine.state != State::Rejected
                    && machine.state.can_become(State::Rejected))
            {
                self.proposer
                    .observe(mac, Observation::Closed { number }, actor)
                    .await?;
            }
            return Ok(());
        }
        if !recorded.hands_off {
            let head = Observation::Head {
                sha: pr.head_sha.clone(),
            };
            self.proposer.observe(mac, head, actor).await?;
        }
        // Open on GitHub while a rejection is under way (recorded, not yet carried to GitHub):
        // the reconcile closes it. Only a pull request Registrar knew as closed is reopened.
        if recorded.state == crate::domain::ProposalState::Rejecting {
            return Ok(());
        }
        if machine.state == State::Rejected || recorded.state == crate::domain::ProposalState::Closed {
            // Reopened: propose it again, on the same pull request.
            self.proposer
                .observe(mac, Observation::Reopened { number }, actor)
                .await?;
        }
        self.follow_workflow_label(&machine, recorded.workflow.as_deref(), pr, actor, just_added)
            .await
    }

    /// A grouped pull request: merged registers its members, closed rejects them, open
    /// leaves out the ones its description shows unchecked. (A person's edit of the
    /// description needs write access on GitHub, so the description is read as it is.)
    async fn apply_group(&self, group: i64, pr: &PullRequest, actor: &str) -> Result<(), ProposeError> {
        let (end, who) = if pr.merged {
            let who = pr.merged_by.as_deref().map(|l| format!("github:{l}"));
            (GroupEnd::Merged, who.unwrap_or_else(|| actor.to_string()))
        } else if pr.open {
            (GroupEnd::Open, actor.to_string())
        } else {
            (GroupEnd::Closed, actor.to_string())
        };
        self.proposer
            .observe_group(group, pr.number, end, &pr.body, &pr.head_sha, &who)
            .await
    }

    /// A `workflow/<name>` label chooses the provisioning workflow. The label a reviewer
    /// just added wins; otherwise a workflow label that is neither the machine's current
    /// choice nor the one Registrar itself last put on the pull request. (While Registrar
    /// swaps its label, the pull request shows both the old and the new one: the old one is
    /// Registrar's own and must not be taken for a reviewer's choice.)
    async fn follow_workflow_label(
        &self,
        machine: &crate::domain::Machine,
        labelled_by_registrar: Option<&str>,
        pr: &PullRequest,
        actor: &str,
        just_added: Option<&str>,
    ) -> Result<(), ProposeError> {
        let current = machine.workflow.as_deref().or(labelled_by_registrar);
        let labelled: Vec<&str> = pr
            .labels
            .iter()
            .filter_map(|l| l.strip_prefix(WORKFLOW_PREFIX))
            .collect();
        let candidates: Vec<&str> = match just_added.and_then(|l| l.strip_prefix(WORKFLOW_PREFIX)) {
            Some(added) => vec![added],
            None => labelled
                .iter()
                .copied()
                .filter(|w| Some(*w) != current && Some(*w) != labelled_by_registrar)
                .collect(),
        };
        let choice = match candidates.as_slice() {
            [] => return Ok(()),
            [one] => *one,
            several => {
                let list = several
                    .iter()
                    .map(|w| format!("`{WORKFLOW_PREFIX}{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let text = format!(
                    "Several workflow labels ({list}): keep exactly one and Registrar re-renders this proposal with it."
                );
                return self
                    .comment_once(pr.number, &format!("several:{}", several.join(",")), &text)
                    .await;
            }
        };
        if Some(choice) == current {
            return Ok(());
        }
        if !self.proposer.renderer().has_workflow(choice) {
            let known = self
                .proposer
                .renderer()
                .workflows()
                .map(|w| format!("`{WORKFLOW_PREFIX}{w}`"))
                .collect::<Vec<_>>()
                .join(", ");
            // The label name is shown in code so it cannot format, mention or link.
            let text = format!(
                "There is no workflow template for the label `{WORKFLOW_PREFIX}{}`, so nothing changed. Known: {known}.",
                choice.replace('`', "'")
            );
            return self.comment_once(pr.number, &format!("unknown:{choice}"), &text).await;
        }
        let (store, mac, wf, who) = (
            self.proposer.store().clone(),
            machine.mac,
            choice.to_string(),
            actor.to_string(),
        );
        self.blocking(move || store.set_workflow(mac, &wf, &who, Utc::now()))
            .await?;
        self.proposer.wake();
        Ok(())
    }

    async fn comment_once(&self, number: u64, what: &str, text: &str) -> Result<(), ProposeError> {
        let (store, key) = (
            self.proposer.store().clone(),
            format!("comment:{}#{number}:{what}", self.forge.full_name()),
        );
        if self.blocking(move || store.remember_once(&key, Utc::now())).await? {
            self.forge
                .comment(number, text)
                .await
                .map_err(|e| ProposeError::Forge(e.into()))?;
        }
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ProposeError> {
        Ok(tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ProposeError::Join(e.to_string()))??)
    }

    /// Never rely on webhooks alone: read Registrar's open and recently closed pull requests
    /// and apply each, so a lost delivery is caught up.
    pub async fn reconcile(&self) -> Result<usize, ProposeError> {
        let prs = self
            .forge
            .list_recent()
            .await
            .map_err(|e| ProposeError::Forge(e.into()))?;
        for pr in &prs {
            if let Err(e) = self.apply(pr, "github:reconcile", None).await {
                tracing::warn!(number = pr.number, error = %e, "reconcile of pull request failed");
            }
        }
        let open: Vec<u64> = prs.iter().filter(|p| p.open).map(|p| p.number).collect();
        self.catch_up_on_comments(&open).await?;
        Ok(prs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_test_vector() {
        let secret = SecretString::from("It's a Secret to Everybody");
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_ok(&secret, Some(good), b"Hello, World!"));
        assert!(!signature_ok(&secret, Some(good), b"Hello, World?"));
        assert!(!signature_ok(&secret, None, b"Hello, World!"));
        assert!(!signature_ok(
            &secret,
            Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d"),
            b"Hello, World!"
        ));
        assert!(!signature_ok(&secret, Some("sha256=zz"), b"Hello, World!"));
        assert!(!signature_ok(&secret, Some(&good[..40]), b"Hello, World!"));
        assert!(!signature_ok(
            &SecretString::from("old secret"),
            Some(good),
            b"Hello, World!"
        ));
    }
}
