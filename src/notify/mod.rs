//! Telling people when machines need them (`notify.webhooks`): machines that wait for
//! review, were approved or failed, and a proposal queue that is stuck.
//!
//! The store's timeline is the source, read from a cursor per webhook that moves only once
//! the webhook took the message: a receiver that is down gets what it missed in the next
//! message (at least once: a crash between its answer and the cursor's write repeats one
//! message). At most one message per webhook per `interval_seconds`, so a burst of machines
//! is one message; a failing receiver is tried again, less often each time.

mod message;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::supervisor::Readiness;
pub use message::{Format, News};

/// Transitions read into one message at most (the rest go into the next).
const BATCH: u32 = 1000;

pub struct Webhook {
    url: SecretString,
    format: Format,
    /// The store cursor: what this webhook has been told up to.
    cursor: String,
    /// Said that the queue is stuck, and not yet that it moves again.
    said_stuck: bool,
    /// Intervals to skip after failures (doubling, capped).
    backoff: u32,
    skip: u32,
}

pub struct Notifier {
    store: Arc<dyn Store>,
    /// Each webhook's progress; the pipeline is restarted on an error, with it kept.
    webhooks: tokio::sync::Mutex<Vec<Webhook>>,
    interval: Duration,
    stuck_after: Option<chrono::Duration>,
    client: reqwest::Client,
}

impl Notifier {
    /// `None` when no webhook is configured.
    pub fn from_config(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<Option<Notifier>> {
        let n = &config.notify;
        if n.webhooks.is_empty() {
            return Ok(None);
        }
        let mut webhooks = Vec::new();
        for (i, hook) in n.webhooks.iter().enumerate() {
            let url = match (&hook.url, &hook.url_file) {
                (Some(url), _) => url.clone(),
                (None, Some(file)) => crate::config::secrets::read_secret(file)?,
                (None, None) => anyhow::bail!("notify.webhooks[{i}]: no url"),
            };
            // By the URL, not the list's order: reordering webhooks moves no cursor.
            let cursor = format!("notify:{}", &crate::server::digest_hex(url.expose_secret())[..16]);
            webhooks.push(Webhook {
                url,
                format: if hook.format == "slack" {
                    Format::Slack
                } else {
                    Format::Json
                },
                cursor,
                said_stuck: false,
                backoff: 0,
                skip: 0,
            });
        }
        Ok(Some(Notifier {
            store,
            webhooks: tokio::sync::Mutex::new(webhooks),
            interval: Duration::from_secs(n.interval_seconds.max(1)),
            stuck_after: (n.stuck_after_seconds > 0).then(|| chrono::Duration::seconds(n.stuck_after_seconds as i64)),
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        }))
    }

    pub async fn run(&self, readiness: Arc<Readiness>, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut webhooks = self.webhooks.lock().await;
        // A new webhook starts at the newest transition: history is not news.
        let store = self.store.clone();
        let cursors: Vec<String> = webhooks.iter().map(|w| w.cursor.clone()).collect();
        tokio::task::spawn_blocking(move || {
            let last = store.last_transition_id()?;
            for cursor in cursors {
                if store.cursor(&cursor)?.is_none() {
                    store.set_cursor(&cursor, last)?;
                }
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await??;
        let count = webhooks.len();
        readiness.ready("notify", format!("{count} webhook(s)"));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait() => return Ok(()),
            }
            let stuck = self.stuck().await;
            for (i, hook) in webhooks.iter_mut().enumerate() {
                if hook.skip > 0 {
                    hook.skip -= 1;
                    continue;
                }
                match self.tell(hook, stuck.as_deref()).await {
                    Ok(()) => hook.backoff = 0,
                    Err(e) => {
                        hook.backoff = (hook.backoff * 2).clamp(1, 16);
                        hook.skip = hook.backoff - 1;
                        tracing::warn!(webhook = i, error = %e, "notification not delivered; it is sent again with what follows");
                    }
                }
            }
        }
    }

    /// "The queue is stuck" while its oldest item has waited longer than `stuck_after`.
    async fn stuck(&self) -> Option<String> {
        let after = self.stuck_after?;
        let store = self.store.clone();
        let (queued, oldest) = tokio::task::spawn_blocking(move || store.queue_summary())
            .await
            .ok()?
            .ok()?;
        let waited = Utc::now() - oldest?;
        (waited > after).then(|| {
            format!(
                "the proposal queue is stuck: {queued} machine(s) waiting, the oldest for {} min",
                waited.num_minutes()
            )
        })
    }

    /// Sends webhook `i` what happened since its cursor (and whether the queue is stuck),
    /// if there is anything to say; moves the cursor once the receiver took it.
    async fn tell(&self, hook: &mut Webhook, stuck: Option<&str>) -> anyhow::Result<()> {
        let (store, cursor) = (self.store.clone(), hook.cursor.clone());
        let entries = tokio::task::spawn_blocking(move || {
            let at = store.cursor(&cursor)?.unwrap_or(0);
            store.transitions_after(at, BATCH)
        })
        .await??;
        let news = News::of(&entries);
        // Said once per episode: again only after the queue moved.
        let stuck_news = match (stuck, hook.said_stuck) {
            (Some(s), false) => Some(s),
            _ => None,
        };
        if !news.is_empty() || stuck_news.is_some() {
            let body = hook.format.body(&news, stuck_news);
            let resp = self
                .client
                .post(hook.url.expose_secret())
                .json(&body)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("posting: {}", e.without_url()))?;
            if !resp.status().is_success() {
                anyhow::bail!("the receiver answered {}", resp.status());
            }
        }
        hook.said_stuck = stuck.is_some();
        if let Some(last) = entries.last() {
            let (store, cursor, id) = (self.store.clone(), hook.cursor.clone(), last.id);
            tokio::task::spawn_blocking(move || store.set_cursor(&cursor, id)).await??;
        }
        Ok(())
    }
}
