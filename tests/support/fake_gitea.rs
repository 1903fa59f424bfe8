//! A stateful fake of Forgejo/Gitea: the REST API Registrar uses (`/api/v1`: pull requests
//! found by base and head, created with labels, edited, closed, merged at a pinned head;
//! labels; branches deleted), with the repository a real bare one served over smart HTTP
//! (`git http-backend`) on the same port, and the webhooks a person's actions send, signed
//! as Gitea signs them (`X-Gitea-Signature`: hex HMAC-SHA256 of the body).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::review_forge::{ReviewForge, Reviewed};

pub const OWNER: &str = "infra";
pub const REPO: &str = "gitops";
pub const TOKEN: &str = "gitea-test-token-0123456789";
pub const SECRET: &str = "gitea-webhook-secret-0123456789";

#[derive(Clone, Debug)]
pub struct GiteaPull {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub open: bool,
    pub merged: bool,
    pub labels: Vec<u64>,
    /// From a fork's branch of the same name (someone else's repository).
    pub fork: bool,
    /// Merges refused ("try again later") before the forge has checked it after a push.
    pub checking: u32,
}

#[derive(Default)]
pub struct GiteaState {
    pub pulls: Vec<GiteaPull>,
    /// (id, name)
    pub labels: Vec<(u64, String)>,
    pub requests: Vec<(String, String)>,
    /// Each merge asked through the API: the pull request and the head it was pinned to.
    pub merges: Vec<(u64, Option<String>)>,
    /// (pull request, body), oldest first.
    pub comments: Vec<(u64, String)>,
}

impl GiteaState {
    /// The pull request a path's `{index}` names, if any.
    fn pull_mut(&mut self, index: &str) -> Option<&mut GiteaPull> {
        let n = index.parse::<u64>().ok()?;
        self.pulls.iter_mut().find(|p| p.number == n)
    }
}

#[derive(Clone)]
pub struct FakeGitea {
    pub url: String,
    root: PathBuf,
    pub state: Arc<Mutex<GiteaState>>,
    /// Where deliveries go (Registrar's webhook URL), once known.
    pub hook_url: Arc<Mutex<Option<String>>>,
    _dir: Arc<tempfile::TempDir>,
}

impl FakeGitea {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        registrar::propose::git::init_local_remote(&root.join(OWNER).join(format!("{REPO}.git")), "main").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeGitea {
            url: format!("http://{}", listener.local_addr().unwrap()),
            root,
            state: Arc::default(),
            hook_url: Arc::default(),
            _dir: Arc::new(dir),
        };
        let app = Router::new().fallback(route).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn pulls(&self) -> Vec<GiteaPull> {
        self.state.lock().unwrap().pulls.clone()
    }

    pub fn pull(&self, number: u64) -> GiteaPull {
        self.pulls().into_iter().find(|p| p.number == number).unwrap()
    }

    fn with_pull(&self, number: u64, f: impl FnOnce(&mut GiteaPull)) {
        let mut st = self.state.lock().unwrap();
        f(st.pulls.iter_mut().find(|p| p.number == number).unwrap());
    }

    pub fn payload(&self, action: &str, number: u64) -> Value {
        let p = self.pull(number);
        json!({
            "action": action,
            "number": number,
            "pull_request": pull_json(&p, &self.url, "", &self.state.lock().unwrap().labels),
            "repository": {"full_name": format!("{OWNER}/{REPO}")},
            "sender": {"login": "ops-lead"},
        })
    }

    async fn deliver_pull(&self, action: &str, number: u64) -> reqwest::Response {
        let body = serde_json::to_vec(&self.payload(action, number)).unwrap();
        self.deliver("pull_request", body, Some(SECRET)).await
    }

    /// Sends a delivery as Gitea does, signed with `secret` (unsigned with None).
    pub async fn deliver(&self, event: &str, body: Vec<u8>, secret: Option<&str>) -> reqwest::Response {
        let url = self.hook_url.lock().unwrap().clone().expect("the webhook URL is set");
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("x-gitea-event", event)
            .header("x-gitea-delivery", super::fake_github::uuid());
        if let Some(secret) = secret {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(&body);
            request = request.header("x-gitea-signature", hex::encode(mac.finalize().into_bytes()));
        }
        request.body(body).send().await.unwrap()
    }
}

impl ReviewForge for FakeGitea {
    fn kind(&self) -> &'static str {
        "gitea"
    }

    fn point_at(&self, config: &mut Value, dir: &std::path::Path) {
        use super::binary::set;
        set(config, "forge.gitea.url", json!(self.url));
        set(config, "forge.gitea.owner", json!(OWNER));
        set(config, "forge.gitea.repo", json!(REPO));
        std::fs::write(dir.join("gitea-token"), TOKEN).unwrap();
        std::fs::write(dir.join("gitea-webhook-secret"), SECRET).unwrap();
        let file = |name: &str| json!(dir.join(name).display().to_string());
        set(config, "forge.gitea.token_file", file("gitea-token"));
        set(config, "forge.gitea.webhook_secret_file", file("gitea-webhook-secret"));
    }

    fn send_hooks_to(&self, url: &str) {
        *self.hook_url.lock().unwrap() = Some(url.to_string());
    }

    fn repository(&self) -> &'static str {
        "infra/gitops"
    }

    fn repo(&self) -> super::Repo {
        super::Repo::at(&self.root.join(OWNER).join(format!("{REPO}.git")))
    }

    fn reviews(&self) -> Vec<Reviewed> {
        self.pulls()
            .into_iter()
            .map(|p| Reviewed {
                number: p.number,
                title: p.title,
                head: p.head,
                open: p.open,
                merged: p.merged,
            })
            .collect()
    }

    fn labels_of(&self, number: u64) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let pull = st.pulls.iter().find(|p| p.number == number).unwrap();
        pull.labels
            .iter()
            .filter_map(|id| st.labels.iter().find(|(l, _)| l == id).map(|(_, n)| n.clone()))
            .collect()
    }

    fn merges(&self) -> Vec<(u64, Option<String>)> {
        self.state.lock().unwrap().merges.clone()
    }

    async fn label(&self, number: u64, name: &str) -> reqwest::Response {
        {
            let mut st = self.state.lock().unwrap();
            let id = match st.labels.iter().find(|(_, n)| n == name) {
                Some((id, _)) => *id,
                None => {
                    let id = st.labels.len() as u64 + 1;
                    st.labels.push((id, name.to_string()));
                    id
                }
            };
            st.pull_mut(&number.to_string()).unwrap().labels.push(id);
        }
        self.deliver_pull("label_updated", number).await
    }

    fn merge_quietly(&self, number: u64) {
        let head = self.pull(number).head;
        self.repo()
            .merge(&head, "main", &format!("Merge pull request '#{number}'"), "Gitea");
        self.with_pull(number, |p| {
            p.open = false;
            p.merged = true;
        });
    }

    async fn merge(&self, number: u64) -> reqwest::Response {
        self.merge_quietly(number);
        self.deliver_pull("closed", number).await
    }

    fn open_fork_request(&self, branch: &str, title: &str) -> u64 {
        let mut st = self.state.lock().unwrap();
        let number = st.pulls.len() as u64 + 1;
        st.pulls.push(GiteaPull {
            number,
            title: title.to_string(),
            body: String::new(),
            head: branch.to_string(),
            open: true,
            merged: false,
            labels: vec![],
            fork: true,
            checking: 0,
        });
        number
    }

    fn close_quietly(&self, number: u64) {
        self.with_pull(number, |p| p.open = false);
    }

    async fn close(&self, number: u64) -> reqwest::Response {
        self.close_quietly(number);
        self.deliver_pull("closed", number).await
    }

    fn comments(&self, number: u64) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.comments
            .iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn description(&self, number: u64) -> String {
        self.pull(number).body
    }

    async fn edit_description(&self, number: u64, description: &str) -> reqwest::Response {
        self.with_pull(number, |p| p.body = description.to_string());
        self.deliver_pull("edited", number).await
    }

    async fn deliver_change(&self, number: u64, secret: Option<&str>, repository: &str) -> reqwest::Response {
        let mut payload = self.payload("closed", number);
        payload["repository"]["full_name"] = json!(repository);
        self.deliver("pull_request", serde_json::to_vec(&payload).unwrap(), secret)
            .await
    }
}

/// A pull request as the API shows it; `names` are the repository's labels (id, name).
fn pull_json(p: &GiteaPull, url: &str, sha: &str, names: &[(u64, String)]) -> Value {
    json!({
        "number": p.number,
        "html_url": format!("{url}/{OWNER}/{REPO}/pulls/{}", p.number),
        "state": if p.open { "open" } else { "closed" },
        "merged": p.merged,
        "title": p.title,
        "body": p.body,
        "head": {"ref": p.head, "sha": sha, "repo_id": if p.fork { 2 } else { 1 }},
        "base": {"ref": "main", "repo_id": 1},
        "labels": p.labels.iter().map(|id| {
            let name = names.iter().find(|(l, _)| l == id).map(|(_, n)| n.clone()).unwrap_or_default();
            json!({"id": id, "name": name})
        }).collect::<Vec<_>>(),
    })
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

fn not_found() -> Response {
    reply(StatusCode::NOT_FOUND, json!({"message": "not found"}))
}

async fn route(State(g): State<FakeGitea>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    g.state
        .lock()
        .unwrap()
        .requests
        .push((method.to_string(), path.clone()));
    if path.contains(".git/") {
        return super::git_http::serve(&g.root, "registrar", TOKEN, method, uri, headers, body).await;
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("token {TOKEN}")) {
        return reply(StatusCode::UNAUTHORIZED, json!({"message": "token is required"}));
    }
    let Some(rest) = path.strip_prefix(&format!("/api/v1/repos/{OWNER}/{REPO}/")) else {
        return not_found();
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let repo = g.repo();
    let sha = |branch: &str| repo.head(branch).map(|o| o.to_string()).unwrap_or_default();
    let mut st = g.state.lock().unwrap();
    let names = st.labels.clone();
    match (method, segs.as_slice()) {
        (Method::GET, ["pulls"]) => {
            // One page holds every open pull request the tests make.
            let open: Vec<Value> = st
                .pulls
                .iter()
                .filter(|p| p.open)
                .map(|p| pull_json(p, &g.url, &sha(&p.head), &names))
                .collect();
            let page = uri.query().unwrap_or_default().contains("page=1");
            reply(StatusCode::OK, json!(if page { open } else { vec![] }))
        }
        (Method::POST, ["issues", n, "labels"]) => {
            let Some(pull) = st.pull_mut(n) else {
                return not_found();
            };
            for id in labels_in(&input) {
                if !pull.labels.contains(&id) {
                    pull.labels.push(id);
                }
            }
            reply(StatusCode::OK, json!(pull.labels))
        }
        (Method::POST, ["issues", n, "comments"]) => {
            let Some(number) = st.pull_mut(n).map(|p| p.number) else {
                return not_found();
            };
            let body = input["body"].as_str().unwrap_or_default().to_string();
            st.comments.push((number, body.clone()));
            reply(StatusCode::CREATED, json!({"id": st.comments.len(), "body": body}))
        }
        (Method::DELETE, ["issues", n, "labels", id]) => {
            let Some(pull) = st.pull_mut(n) else {
                return not_found();
            };
            pull.labels.retain(|l| id.parse::<u64>().ok() != Some(*l));
            reply(StatusCode::NO_CONTENT, Value::Null)
        }
        (Method::GET, ["labels"]) => {
            let labels: Vec<Value> = st.labels.iter().map(|(id, n)| json!({"id": id, "name": n})).collect();
            reply(StatusCode::OK, json!(labels))
        }
        (Method::POST, ["labels"]) => {
            let id = st.labels.len() as u64 + 1;
            let name = input["name"].as_str().unwrap_or_default().to_string();
            st.labels.push((id, name.clone()));
            reply(StatusCode::CREATED, json!({"id": id, "name": name}))
        }
        (Method::POST, ["pulls"]) => {
            let head = input["head"].as_str().unwrap_or_default().to_string();
            if repo.head(&head).is_none() {
                return reply(StatusCode::NOT_FOUND, json!({"message": "head branch does not exist"}));
            }
            if st.pulls.iter().any(|p| p.open && !p.fork && p.head == head) {
                return reply(
                    StatusCode::CONFLICT,
                    json!({"message": "pull request already exists for these targets"}),
                );
            }
            let pull = GiteaPull {
                number: st.pulls.len() as u64 + 1,
                title: input["title"].as_str().unwrap_or_default().into(),
                body: input["body"].as_str().unwrap_or_default().into(),
                head,
                open: true,
                fork: false,
                checking: 1,
                merged: false,
                labels: labels_in(&input),
            };
            st.pulls.push(pull.clone());
            reply(StatusCode::CREATED, pull_json(&pull, &g.url, &sha(&pull.head), &names))
        }
        // Gitea's route takes the head branch as the rest of the path, slashes and all.
        (Method::GET, ["pulls", base, head @ ..]) if !head.is_empty() && base.parse::<u64>().is_err() => {
            let head = head.join("/");
            if *base != "main" {
                return not_found();
            }
            match st.pulls.iter().rev().find(|p| p.head == head) {
                Some(p) => reply(StatusCode::OK, pull_json(p, &g.url, &sha(&p.head), &names)),
                None => not_found(),
            }
        }
        (method, ["pulls", n, tail @ ..]) => {
            let Some(pull) = st.pull_mut(n) else {
                return not_found();
            };
            match (method, tail) {
                (Method::GET, []) => reply(StatusCode::OK, pull_json(pull, &g.url, &sha(&pull.head), &names)),
                (Method::PATCH, []) => {
                    if let Some(t) = input["title"].as_str() {
                        pull.title = t.into();
                    }
                    if let Some(b) = input["body"].as_str() {
                        pull.body = b.into();
                    }
                    if input.get("labels").is_some() {
                        pull.labels = labels_in(&input);
                    }
                    if input["state"] == "closed" && !pull.merged {
                        pull.open = false;
                    }
                    reply(StatusCode::CREATED, pull_json(pull, &g.url, &sha(&pull.head), &names))
                }
                (Method::POST, ["merge"]) => {
                    if !pull.open {
                        return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"message": "not mergeable"}));
                    }
                    if pull.checking > 0 {
                        pull.checking -= 1;
                        return reply(
                            StatusCode::METHOD_NOT_ALLOWED,
                            json!({"message": "Please try again later"}),
                        );
                    }
                    let head = sha(&pull.head);
                    if input["head_commit_id"].as_str().is_some_and(|want| want != head) {
                        return reply(StatusCode::CONFLICT, json!({"message": "head out of date"}));
                    }
                    repo.merge(
                        &pull.head,
                        "main",
                        &format!("Merge pull request '#{}'", pull.number),
                        "Gitea",
                    );
                    pull.open = false;
                    pull.merged = true;
                    let (number, branch) = (pull.number, pull.head.clone());
                    if input["delete_branch_after_merge"] == true {
                        repo.delete_branch(&branch);
                    }
                    let pinned = input["head_commit_id"].as_str().map(str::to_string);
                    st.merges.push((number, pinned));
                    reply(StatusCode::OK, Value::Null)
                }
                _ => not_found(),
            }
        }
        (Method::DELETE, ["branches", branch @ ..]) => {
            let branch = branch.join("/");
            if repo.head(&branch).is_none() {
                return not_found();
            }
            repo.delete_branch(&branch);
            reply(StatusCode::NO_CONTENT, Value::Null)
        }
        _ => not_found(),
    }
}

fn labels_in(input: &Value) -> Vec<u64> {
    input["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect()
}
