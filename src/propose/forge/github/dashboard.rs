//! The dashboard issue (`forge.github.dashboard`): one issue in the GitOps repository, kept
//! current like Renovate's Dependency Dashboard, that says what waits — pull requests open
//! for review, machines waiting for a review slot, the queue, failed provisioning — with
//! links. Its text is rebuilt from the store when the store changes and written only when
//! it differs from what was written last, so at rest it costs no request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::Kind;
use super::{GhError, GithubForge};
use crate::domain::{ProposalState, State};
use crate::render::markdown;
use crate::shutdown::Shutdown;
use crate::store::{MachineQuery, Store};
use crate::supervisor::Readiness;

/// The label that finds the dashboard again after a restart (or a lost store): under the
/// branch prefix, so that sites sharing a repository each keep their own.
pub fn dashboard_label() -> String {
    format!("{}dashboard", crate::domain::branch_prefix())
}
/// A line of the dashboard names a machine's last error up to this many characters.
const MAX_REASON: usize = 200;
/// GitHub refuses issue bodies over 65,536 characters.
const MAX_BODY: usize = 60_000;
const MARKER: &str = "<!-- registrar:dashboard -->";
/// Items listed per section; the rest are counted.
const LISTED: usize = 50;
/// Writes are at least this far apart: a burst of changes is one edit.
const SETTLE: Duration = Duration::from_secs(5);

pub struct Dashboard {
    forge: Arc<GithubForge>,
    store: Arc<dyn Store>,
    title: String,
    /// `discovery.max_open_proposals`, said in the slot section.
    max_open: u64,
    /// The issue's number and the text last written to it.
    written: tokio::sync::Mutex<(Option<u64>, String)>,
}

impl Dashboard {
    pub fn new(forge: Arc<GithubForge>, store: Arc<dyn Store>, title: String, max_open: u64) -> Self {
        Dashboard {
            forge,
            store,
            title,
            max_open,
            written: Default::default(),
        }
    }

    pub async fn run(self: Arc<Self>, readiness: Arc<Readiness>, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut changes = self.store.changes();
        loop {
            // Not a readiness matter: a dashboard GitHub refuses leaves every proposal working.
            match self.refresh().await {
                Ok(Some(n)) => readiness.ready("dashboard", format!("issue #{n}")),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not update the dashboard issue; retrying");
                    readiness.ready("dashboard", format!("last update failed: {e:#}"));
                }
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                _ = shutdown.wait() => return Ok(()),
            }
            tokio::select! {
                _ = tokio::time::sleep(SETTLE) => {}
                _ = shutdown.wait() => return Ok(()),
            }
        }
    }

    /// Writes the dashboard if its text changed; the issue's number once written.
    pub async fn refresh(&self) -> anyhow::Result<Option<u64>> {
        let store = self.store.clone();
        let max_open = self.max_open;
        let text = tokio::task::spawn_blocking(move || text(store.as_ref(), max_open)).await??;
        let mut written = self.written.lock().await;
        if written.0.is_some() && written.1 == text {
            return Ok(written.0);
        }
        let number = match written.0 {
            Some(n) => n,
            None => match self.forge.find_dashboard().await? {
                Some(n) => n,
                None => self.forge.create_issue(&self.title, &text).await?,
            },
        };
        let number = match self.forge.edit_issue(number, &text).await {
            Ok(()) => number,
            // Deleted or transferred: a new one.
            Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(404 | 410)) => {
                self.forge.create_issue(&self.title, &text).await?
            }
            Err(e) => return Err(e.into()),
        };
        *written = (Some(number), text);
        Ok(Some(number))
    }
}

impl GithubForge {
    /// The open dashboard issue, found by its label (the lowest number if there are several).
    async fn find_dashboard(&self) -> Result<Option<u64>, GhError> {
        let label = super::client::segment(&dashboard_label());
        let reply = self
            .client
            .get(&self.path(&format!("/issues?labels={label}&state=open&per_page=100")))
            .await?;
        let items: Vec<Value> = reply.parse()?;
        Ok(items
            .iter()
            .filter(|i| i.get("pull_request").is_none_or(Value::is_null))
            .filter_map(|i| i["number"].as_u64())
            .min())
    }

    async fn create_issue(&self, title: &str, body: &str) -> Result<u64, GhError> {
        let reply = self
            .client
            .call(
                reqwest::Method::POST,
                &self.path("/issues"),
                Some(&json!({"title": title, "body": body, "labels": [dashboard_label()]})),
                Kind::Create,
            )
            .await?;
        let issue: Value = reply.parse()?;
        issue["number"].as_u64().ok_or_else(|| GhError::Unreadable {
            method: reqwest::Method::POST,
            path: self.path("/issues"),
            detail: "an issue without a number".into(),
        })
    }

    async fn edit_issue(&self, number: u64, body: &str) -> Result<(), GhError> {
        self.client
            .call(
                reqwest::Method::PATCH,
                &self.path(&format!("/issues/{number}")),
                Some(&json!({"body": body})),
                Kind::Idempotent,
            )
            .await?;
        Ok(())
    }
}

/// The dashboard's text, from the store alone. Nothing in it changes with the clock, so the
/// same store gives the same text.
fn text(store: &dyn Store, max_open: u64) -> Result<String, crate::store::StoreError> {
    let mut out = format!(
        "{MARKER}\nWhat waits in this repository, kept current by Registrar. Merging a pull request approves its machine; closing it rejects the machine.\n"
    );
    let mut open = store.proposals(Some(ProposalState::Open))?;
    open.extend(store.proposals(Some(ProposalState::Approving))?);
    out.push_str(&format!("\n## Open for review ({})\n\n", open.len()));
    for p in open.iter().take(LISTED) {
        let link = match (&p.url, p.number) {
            (Some(url), Some(n)) => format!("[#{n}]({url})"),
            (None, Some(n)) => format!("#{n}"),
            _ => "(being opened)".into(),
        };
        out.push_str(&format!(
            "- {link} {} — {} {}, since {}\n",
            markdown::code(&p.name),
            p.kind.as_str(),
            markdown::code(&p.mac.to_string()),
            p.created_at.format("%Y-%m-%d"),
        ));
    }
    more(&mut out, open.len());
    if max_open > 0 {
        let queue = store.slot_queue(LISTED as u32)?;
        let (count, waiting) = (queue.count, queue.oldest);
        out.push_str(&format!(
            "\n## Waiting for a review slot ({count})\n\nAt most {max_open} pull requests are open at once (`discovery.max_open_proposals`); these machines are proposed, oldest first, as open ones are merged or closed.\n\n"
        ));
        for (mac, since) in &waiting {
            out.push_str(&format!(
                "- {} since {}\n",
                markdown::code(&mac.to_string()),
                since.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        more(&mut out, count as usize);
    }
    let (queued, oldest) = store.queue_summary()?;
    out.push_str(&format!("\n## Queued ({queued})\n\n"));
    match oldest {
        Some(since) if queued > 0 => out.push_str(&format!(
            "{queued} change(s) wait for Registrar's queue, the oldest since {}.\n",
            since.format("%Y-%m-%d %H:%M UTC")
        )),
        _ => out.push_str("Nothing waits for Registrar's queue.\n"),
    }
    let failed_query = MachineQuery {
        state: Some(State::Failed),
        limit: LISTED as u32,
        ..Default::default()
    };
    let failed_count = store.count_machines(&failed_query)?;
    out.push_str(&format!("\n## Failed provisioning ({failed_count})\n\n"));
    for m in store.machines(&failed_query)? {
        let why: String = m
            .last_error
            .as_deref()
            .unwrap_or("see its timeline")
            .chars()
            .take(MAX_REASON)
            .collect();
        out.push_str(&format!(
            "- {} {}: {}\n",
            markdown::code(m.name.as_deref().unwrap_or("-")),
            markdown::code(&m.mac.to_string()),
            markdown::code(&why)
        ));
    }
    more(&mut out, failed_count as usize);
    if out.len() > MAX_BODY {
        let mut cut = MAX_BODY;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("\n\n…(cut: the console lists everything)\n");
    }
    Ok(out)
}

fn more(out: &mut String, total: usize) {
    if total > LISTED {
        out.push_str(&format!("- …and {} more\n", total - LISTED));
    }
}
