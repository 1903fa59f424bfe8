//! A pull request that edits the rules or templates kept in the GitOps repository
//! (`gitops.templates_path`) gets one comment, kept current: which recorded machines the
//! edit would render differently, with the diff per machine. The delivery only says where
//! to look: the pull request, its head and the base are read from GitHub and git, both
//! template sets are loaded from git, and every machine in scope is rendered under both
//! (`propose::impact`). Nothing is proposed; a head already commented on is not done again.

use serde_json::{Value, json};

use super::client::Kind;
use super::events::GithubHooks;
use super::{GhError, GithubForge};
use crate::propose::ProposeError;
use crate::propose::impact::{Impact, compare_store};
use crate::render::{Renderer, markdown};

/// The directory's tree on the base branch and at the pull request's head (None: absent).
type Trees = (Option<git2::Oid>, Option<git2::Oid>);

/// Marks Registrar's comment, and the head it speaks of.
const MARKER: &str = "<!-- registrar:impact";
/// GitHub refuses comments over 65,536 characters.
const MAX_COMMENT: usize = 60_000;
/// Machines listed with their diff; the rest are counted.
const MAX_LISTED: usize = 50;

impl GithubForge {
    /// The pull request's comments: (id, body).
    async fn comments(&self, number: u64) -> Result<Vec<(u64, String)>, GhError> {
        let mut out = Vec::new();
        for page in 1..=10 {
            let reply = self
                .client
                .get(&self.path(&format!("/issues/{number}/comments?per_page=100&page={page}")))
                .await?;
            let items: Vec<Value> = reply.parse()?;
            let full = items.len() == 100;
            out.extend(
                items
                    .into_iter()
                    .filter_map(|c| Some((c["id"].as_u64()?, c["body"].as_str().unwrap_or_default().to_string()))),
            );
            if !full {
                break;
            }
        }
        Ok(out)
    }

    async fn edit_comment(&self, id: u64, body: &str) -> Result<(), GhError> {
        self.client
            .call(
                reqwest::Method::PATCH,
                &self.path(&format!("/issues/comments/{id}")),
                Some(&json!({"body": body})),
                Kind::Idempotent,
            )
            .await?;
        Ok(())
    }
}

impl GithubHooks {
    /// The first line of the comment on pull request `number` at `head`: the head it speaks
    /// of, signed with the webhook secret.
    fn impact_marker(&self, number: u64, head: &str) -> String {
        format!("{MARKER} head={head} sig={} -->", self.impact_signature(number, head))
    }

    fn impact_signature(&self, number: u64, head: &str) -> String {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret().as_bytes()).expect("HMAC takes any key");
        mac.update(format!("impact:{}:{number}:{head}", crate::domain::branch_prefix()).as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The head a comment of ours speaks of, if it is ours.
    fn signed_head(&self, number: u64, body: &str) -> Option<String> {
        let line = body.lines().next()?.strip_prefix(MARKER)?.strip_suffix("-->")?;
        let mut head = None;
        let mut sig = None;
        for part in line.split_whitespace() {
            if let Some(h) = part.strip_prefix("head=") {
                head = Some(h);
            } else if let Some(s) = part.strip_prefix("sig=") {
                sig = Some(s);
            }
        }
        let head = head?;
        let expected = self.impact_signature(number, head);
        // Both are hex of a fixed length; compared in constant time all the same.
        use subtle::ConstantTimeEq as _;
        (sig?.as_bytes().ct_eq(expected.as_bytes()).unwrap_u8() == 1).then(|| head.to_string())
    }

    /// Comments on pull request `number` what its edit of the rules and templates would
    /// change, if it edits them.
    pub async fn review_rules_change(&self, number: u64) -> Result<(), ProposeError> {
        let Some(dir) = self.templates_path.clone() else {
            return Ok(());
        };
        // One at a time: two deliveries of one push must not post two comments.
        let _one = self.rules_reviews.lock().await;
        let forge_err = |e: GhError| ProposeError::Forge(e.into());
        let pr = self.forge.get(number).await.map_err(forge_err)?;
        let git = self.proposer.git().clone();
        if !pr.open || pr.base_ref != git.base() {
            return Ok(());
        }
        // The cheap question first, in git: does this head change the directory at all?
        // (Most deliveries are about other pull requests' labels and pushes.)
        let trees = {
            let (git, dir) = (git.clone(), dir.clone());
            tokio::task::spawn_blocking(move || -> Result<Option<Trees>, ProposeError> {
                git.fetch()?;
                let head = git.fetch_pull_head(number);
                let trees = head.and_then(|head| Ok((git.tree_at(git.base_head()?, &dir)?, git.tree_at(head, &dir)?)));
                // Its objects stay until the next gc; only the ref goes.
                git.forget_pull_head(number)?;
                let (before, after) = trees?;
                Ok((before != after).then_some((before, after)))
            })
            .await
            .map_err(|e| ProposeError::Join(e.to_string()))??
        };
        let Some((before, after)) = trees else { return Ok(()) };
        let existing = self.forge.comments(number).await.map_err(forge_err)?;
        // Ours is the comment whose marker carries our signature: anyone can write the
        // marker, nobody else can sign it (nor can another site sharing the repository).
        let ours = existing
            .iter()
            .find(|(_, body)| self.signed_head(number, body).is_some());
        let head_mark = self.impact_marker(number, &pr.head_sha);
        if ours.is_some_and(|(_, body)| self.signed_head(number, body).as_deref() == Some(pr.head_sha.as_str())) {
            return Ok(());
        }
        let proposer = self.proposer.clone();
        let text = tokio::task::spawn_blocking(move || -> Result<String, ProposeError> {
            let namespace = proposer.renderer().namespace().to_string();
            let load = |tree: Option<git2::Oid>| -> Result<Result<Renderer, String>, ProposeError> {
                let Some(tree) = tree else {
                    return Ok(Err(format!("{dir} is not in this commit")));
                };
                let into = tempfile::tempdir().map_err(|e| ProposeError::Conflict(e.to_string()))?;
                let mut budget = crate::propose::git::Budget::TEMPLATES;
                git.write_dir(tree, into.path(), &mut budget)?;
                Ok(Renderer::load(into.path(), &namespace).map_err(|e| format!("{e:#}")))
            };
            Ok(match (load(before)?, load(after)?) {
                (_, Err(e)) => refusal(&dir, &e),
                (Err(e), Ok(_)) => format!(
                    "The base branch's rules and templates in {} do not load, so there is nothing to compare with: {}",
                    markdown::code(&dir),
                    markdown::code(&e)
                ),
                (Ok(before), Ok(after)) => {
                    let impact = compare_store(&before, &after, proposer.store().as_ref(), &proposer.pools())?;
                    summary(&dir, &impact)
                }
            })
        })
        .await
        .map_err(|e| ProposeError::Join(e.to_string()))??;
        let body = format!("{head_mark}\n{text}");
        match ours {
            Some((id, _)) => self.forge.edit_comment(*id, &body).await,
            None => self.forge.comment(number, &body).await,
        }
        .map_err(forge_err)?;
        tracing::info!(number, "commented what a rules change would render differently");
        Ok(())
    }
}

fn refusal(dir: &str, error: &str) -> String {
    format!(
        "### Registrar: these rules and templates do not load\n\nOnce deployed, Registrar would refuse to start with {}:\n\n{}",
        markdown::code(dir),
        markdown::fenced(error, "text")
    )
}

/// The comment: how many machines change, then each with its diff, within GitHub's size.
fn summary(dir: &str, impact: &Impact) -> String {
    let mut text = format!(
        "### Registrar: what this edit of {} would render differently\n\n**{} of {} recorded machines** (under review or in git) would render differently, each from its recorded facts, address and workflow. Nothing is proposed by this pull request: once these templates are deployed, machines under review are rendered with them, and machines in git change only through their own pull requests.\n",
        markdown::code(dir),
        impact.changed.len(),
        impact.compared
    );
    let mut listed = 0;
    for change in impact.changed.iter().take(MAX_LISTED) {
        let name = change.name.as_deref().unwrap_or("-");
        let entry = format!(
            "\n<details><summary>{} ({}, {})</summary>\n\n{}\n</details>\n",
            // A MAC and a state are Registrar's own words; a name comes from facts.
            markdown::escape(name),
            change.mac,
            change.state,
            markdown::fenced(&change.diff, "diff")
        );
        if text.len() + entry.len() > MAX_COMMENT {
            break;
        }
        text.push_str(&entry);
        listed += 1;
    }
    if listed < impact.changed.len() {
        text.push_str(&format!(
            "\n…and {} more: `registrar check --impact` lists them all.\n",
            impact.changed.len() - listed
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::impact::Change;

    #[test]
    fn a_fact_in_a_name_or_diff_stays_text_and_the_comment_stays_under_githubs_limit() {
        let change = |i: usize| Change {
            mac: format!("00:00:00:00:00:{i:02x}"),
            name: Some("<img src=x onerror=alert(1)> @admin".into()),
            state: "proposed".into(),
            diff: format!("-a\n+```\n+{}\n", "x".repeat(3000)),
        };
        let impact = Impact {
            compared: 400,
            changed: (0..200).map(change).collect(),
        };
        let text = summary("registrar/hardware-templates", &impact);
        assert!(text.len() <= MAX_COMMENT, "{}", text.len());
        assert!(!text.contains("<img"), "markup escaped");
        assert!(!text.contains("@admin"), "no mention");
        assert!(text.contains("**200 of 400 recorded machines**"));
        assert!(text.contains("more: `registrar check --impact`"));
    }
}
