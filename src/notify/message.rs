//! What a notification says, as Registrar's JSON or as chat text. Names come from facts a
//! machine reported, so in chat text they are escaped: a name cannot mention everyone,
//! link somewhere or format the message.

use serde_json::{Value, json};

use crate::domain::State;
use crate::store::TimelineEntry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"source", "text", "events": [...], "stuck"}`.
    Json,
    /// `{"text": …}`: Slack's incoming webhooks, Mattermost's and Rocket.Chat's.
    Slack,
}

/// The transitions worth telling people about.
#[derive(Debug, Default)]
pub struct News<'a> {
    pub waiting: Vec<&'a TimelineEntry>,
    pub approved: Vec<&'a TimelineEntry>,
    pub failed: Vec<&'a TimelineEntry>,
}

impl<'a> News<'a> {
    pub fn of(entries: &'a [TimelineEntry]) -> Self {
        let mut news = News::default();
        // A note, a workflow change or a re-import keeps the state: not news.
        for e in entries.iter().filter(|e| e.transition.from != Some(e.transition.to)) {
            match e.transition.to {
                State::Proposed => news.waiting.push(e),
                State::Approved => news.approved.push(e),
                State::Failed => news.failed.push(e),
                _ => {}
            }
        }
        news
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.approved.is_empty() && self.failed.is_empty()
    }
}

/// At most this many machines named per kind of news; the rest are counted.
const NAMED: usize = 20;

/// `&`, `<` and `>` escaped as Slack asks (Mattermost reads the same).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Text a machine or a workflow wrote, as a code span: no mention (`@channel`), link,
/// image or formatting takes effect inside one, in Slack, Mattermost or Rocket.Chat.
fn code(s: &str) -> String {
    let plain: String = s
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '`' { '\'' } else { c })
        .collect();
    format!("`{}`", escape(&plain))
}

fn machine(e: &TimelineEntry) -> String {
    match &e.name {
        Some(name) => format!("{} ({})", code(name), e.mac),
        None => e.mac.to_string(),
    }
}

fn sentence(what: &str, entries: &[&TimelineEntry], detail: impl Fn(&TimelineEntry) -> String) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    let mut named: Vec<String> = entries.iter().take(NAMED).map(|e| detail(e)).collect();
    if entries.len() > NAMED {
        named.push(format!("and {} more", entries.len() - NAMED));
    }
    Some(format!("{} {what}: {}.", entries.len(), named.join(", ")))
}

fn text(news: &News, stuck: Option<&str>) -> String {
    let parts = [
        sentence("wait for review", &news.waiting, machine),
        sentence("approved", &news.approved, |e| {
            format!("{} by {}", machine(e), code(&e.transition.actor))
        }),
        sentence("failed", &news.failed, |e| {
            format!("{} ({})", machine(e), code(&e.transition.cause))
        }),
        stuck.map(|s| format!("⚠ {}.", escape(s))),
    ];
    let said: Vec<String> = parts.into_iter().flatten().collect();
    format!("Registrar: {}", said.join(" "))
}

impl Format {
    pub fn body(&self, news: &News, stuck: Option<&str>) -> Value {
        let text = text(news, stuck);
        match self {
            Format::Slack => json!({ "text": text }),
            Format::Json => {
                let events: Vec<Value> = [&news.waiting, &news.approved, &news.failed]
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        json!({
                            "mac": e.mac.to_string(),
                            "name": e.name,
                            "state": e.transition.to.to_string(),
                            "cause": e.transition.cause,
                            "actor": e.transition.actor,
                            "at": e.transition.at,
                        })
                    })
                    .collect();
                json!({ "source": "registrar", "text": text, "events": events, "stuck": stuck })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Transition;

    fn entry(id: i64, name: &str, to: State, actor: &str) -> TimelineEntry {
        TimelineEntry {
            id,
            mac: format!("0c:c4:7a:00:00:{id:02x}").parse().unwrap(),
            name: Some(name.into()),
            transition: Transition {
                from: None,
                to,
                at: chrono::Utc::now(),
                cause: "because".into(),
                actor: actor.into(),
            },
        }
    }

    #[test]
    fn chat_text_escapes_what_machines_named_themselves() {
        let entries = [
            entry(1, "<!channel>", State::Proposed, "registrar"),
            entry(2, "db-1", State::Approved, "github:alice"),
            entry(3, "db-2", State::Reported, "registrar"),
        ];
        let news = News::of(&entries);
        let body = Format::Slack.body(&news, None);
        assert_eq!(
            body["text"],
            "Registrar: 1 wait for review: `&lt;!channel&gt;` (0c:c4:7a:00:00:01). 1 approved: `db-1` (0c:c4:7a:00:00:02) by `github:alice`."
        );
        let mut failed = entry(4, "db-3", State::Failed, "registrar");
        failed.transition.cause = "Workflow failed: @channel ![x](https://evil.example/a.png) `rm`".into();
        let text = Format::Slack.body(&News::of(std::slice::from_ref(&failed)), None)["text"].clone();
        assert_eq!(
            text,
            "Registrar: 1 failed: `db-3` (0c:c4:7a:00:00:04) (`Workflow failed: @channel ![x](https://evil.example/a.png) 'rm'`)."
        );
        // A note keeps the state: not news.
        let mut note = entry(5, "db-4", State::Approved, "ops");
        note.transition.from = Some(State::Approved);
        assert!(News::of(std::slice::from_ref(&note)).is_empty());
        let many: Vec<TimelineEntry> = (0..25).map(|i| entry(i, "n", State::Proposed, "r")).collect();
        let text = Format::Json.body(&News::of(&many), Some("stuck"))["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.contains("25 wait for review") && text.contains("and 5 more") && text.ends_with("⚠ stuck."),
            "{text}"
        );
    }
}
