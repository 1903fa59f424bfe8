//! Objects shaped as GitHub shapes them. Each starts from the example GitHub's own OpenAPI
//! description gives (`../shared/fixtures/github/openapi.api.github.com.json`), with the
//! fake's values put in: Registrar reads pull requests, labels and deliveries with
//! octocrab's typed models, and a reduced object would pass where GitHub's would not (or
//! fail where GitHub's would pass).

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::{Issue, OWNER, Pull, REPO};

struct Examples {
    pull: Value,
    label: Value,
    comment: Value,
    issue: Value,
}

fn examples() -> &'static Examples {
    static EXAMPLES: OnceLock<Examples> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let path = crate::support::shared_path(
            "fixtures/github/openapi.api.github.com.json",
            "GitHub's OpenAPI description, whose examples give the fake's objects their shape",
        );
        let api: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let example = |name: &str| {
            let v = api["components"]["examples"][name]["value"].clone();
            assert!(v.is_object(), "{} has no example {name}", path.display());
            v
        };
        Examples {
            pull: example("pull-request"),
            label: example("label"),
            comment: example("issue-comment"),
            issue: example("issue"),
        }
    })
}

/// A small stable number for a name, as GitHub gives every object an id.
fn id_of(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish() % 1_000_000_000 + 1
}

/// An account: `kind` is "User" or "Bot".
pub fn user(login: &str, kind: &str) -> Value {
    let mut u = examples().pull["user"].clone();
    u["login"] = json!(login);
    u["id"] = json!(id_of(login));
    u["type"] = json!(kind);
    u["html_url"] = json!(format!("https://github.example/{login}"));
    u
}

/// A repository named `full_name` (`owner/name`).
pub fn repository(full_name: &str) -> Value {
    let mut r = examples().pull["head"]["repo"].clone();
    let (owner, name) = full_name.split_once('/').unwrap_or((OWNER, full_name));
    r["id"] = json!(id_of(full_name));
    r["name"] = json!(name);
    r["full_name"] = json!(full_name);
    r["owner"] = user(owner, "Organization");
    r["html_url"] = json!(format!("https://github.example/{full_name}"));
    r["url"] = json!(format!("https://api.example/repos/{full_name}"));
    r
}

pub fn label(name: &str) -> Value {
    let mut l = examples().label.clone();
    l["id"] = json!(id_of(name));
    l["name"] = json!(name);
    l["url"] = json!(format!(
        "https://api.example/repos/{OWNER}/{REPO}/labels/{}",
        name.replace('/', "%2F")
    ));
    l["default"] = json!(false);
    l
}

/// A label with the colour and description it was created with.
pub fn label_with(name: &str, color: &str, description: &str) -> Value {
    let mut l = label(name);
    l["color"] = json!(color);
    l["description"] = json!(description);
    l
}

pub fn comment(id: u64, body: &str, by: &str) -> Value {
    comment_by(id, body, by, "Bot")
}

/// A comment written by `by`, a "User" or a "Bot".
pub fn comment_by(id: u64, body: &str, by: &str, kind: &str) -> Value {
    let mut c = examples().comment.clone();
    c["id"] = json!(id);
    c["body"] = json!(body);
    c["user"] = user(by, kind);
    c
}

/// An `issue_comment` `created` delivery's body for `comment` on pull request `number`,
/// shaped as the recorded one in `../shared/fixtures/github/webhooks/`.
pub fn comment_delivery(number: u64, comment: Value, by: &str) -> Value {
    let path = crate::support::shared_path(
        "fixtures/github/webhooks/issue_comment.created.1.json",
        "GitHub's issue_comment delivery",
    );
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["action"] = json!("created");
    v["issue"]["number"] = json!(number);
    v["issue"]["pull_request"] = json!({
        "url": format!("https://api.example/repos/{OWNER}/{REPO}/pulls/{number}"),
        "html_url": format!("https://github.example/{OWNER}/{REPO}/pull/{number}"),
    });
    v["comment"] = comment;
    v["repository"] = repository(&format!("{OWNER}/{REPO}"));
    v["sender"] = user(by, "User");
    v
}

/// A pull request as `GET /pulls/{n}` answers; `head_sha` is its head branch's commit.
pub fn pull(p: &Pull, head_sha: &str) -> Value {
    let ours = format!("{OWNER}/{REPO}");
    let mut v = examples().pull.clone();
    let n = p.number;
    v["id"] = json!(id_of(&format!("{ours}#{n}")));
    v["node_id"] = json!(node_id(n));
    v["url"] = json!(format!("https://api.example/repos/{ours}/pulls/{n}"));
    v["html_url"] = json!(format!("https://github.example/{ours}/pull/{n}"));
    v["number"] = json!(n);
    v["state"] = json!(if p.open { "open" } else { "closed" });
    v["title"] = json!(p.title);
    v["body"] = json!(p.body);
    v["user"] = user("registrar[bot]", "Bot");
    v["merged"] = json!(p.merged);
    v["merged_at"] = if p.merged {
        json!("2026-11-25T12:00:00Z")
    } else {
        Value::Null
    };
    v["closed_at"] = if p.open {
        Value::Null
    } else {
        json!("2026-11-25T12:00:00Z")
    };
    v["merged_by"] = p.merged_by.as_deref().map(|l| user(l, "User")).unwrap_or(Value::Null);
    v["auto_merge"] = if p.auto_merge {
        json!({"enabled_by": user("registrar[bot]", "Bot"), "merge_method": "merge", "commit_title": null, "commit_message": null})
    } else {
        Value::Null
    };
    v["labels"] = p.labels.iter().map(|l| label(l)).collect();
    let (head_owner, head_repo, sha) = match &p.fork {
        None => (OWNER.to_string(), repository(&ours), head_sha.to_string()),
        // A deleted fork: GitHub sends no head repository at all.
        Some(fork) if fork.is_empty() => ("ghost".into(), Value::Null, "f0".repeat(20)),
        Some(fork) => (
            fork.split('/').next().unwrap_or(fork).to_string(),
            repository(fork),
            "f0".repeat(20),
        ),
    };
    v["head"]["ref"] = json!(p.head);
    v["head"]["label"] = json!(format!("{head_owner}:{}", p.head));
    v["head"]["sha"] = json!(sha);
    v["head"]["user"] = user(&head_owner, "User");
    v["head"]["repo"] = head_repo;
    v["base"]["ref"] = json!(p.base);
    v["base"]["label"] = json!(format!("{OWNER}:{}", p.base));
    v["base"]["user"] = user(OWNER, "Organization");
    v["base"]["repo"] = repository(&ours);
    v
}

/// A pull request's GraphQL id.
pub fn node_id(number: u64) -> String {
    format!("PR_kwDOfake{number:06}")
}

/// A `pull_request` delivery's body.
pub fn pull_request_delivery(action: &str, pull: Value, by: &str, label_name: Option<&str>) -> Value {
    let mut v = json!({
        "action": action,
        "number": pull["number"],
        "pull_request": pull,
        "repository": repository(&format!("{OWNER}/{REPO}")),
        "sender": user(by, "User"),
        "installation": {"id": 42, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNDI="},
    });
    if let Some(l) = label_name {
        v["label"] = label(l);
    }
    v
}

/// A `push` delivery's body for a push of `after` to `branch`, shaped as the recorded
/// delivery in `../shared/fixtures/github/webhooks/push.event.1.json`.
pub fn push_delivery(branch: &str, after: &str, by: &str) -> Value {
    let path = crate::support::shared_path("fixtures/github/webhooks/push.event.1.json", "GitHub's push delivery");
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["ref"] = json!(format!("refs/heads/{branch}"));
    v["after"] = json!(after);
    v["compare"] = json!(format!("https://github.example/{OWNER}/{REPO}/compare/{after}"));
    v["repository"] = repository(&format!("{OWNER}/{REPO}"));
    v["sender"] = user(by, "User");
    v
}

/// An issue as `GET /issues/{n}` answers (not a pull request: no `pull_request` key).
pub fn issue(i: &Issue) -> Value {
    let mut v = examples().issue.clone();
    v["number"] = json!(i.number);
    v["id"] = json!(i.number + 5_000_000);
    v["title"] = json!(i.title);
    v["body"] = json!(i.body);
    v["state"] = json!(if i.open { "open" } else { "closed" });
    v["labels"] = Value::Array(i.labels.iter().map(|l| label(l)).collect());
    v["html_url"] = json!(format!("https://github.example/{OWNER}/{REPO}/issues/{}", i.number));
    if let Value::Object(m) = &mut v {
        m.remove("pull_request");
    }
    v
}
