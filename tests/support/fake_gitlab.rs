//! A stateful fake of GitLab: the REST API Registrar uses (`/api/v4/projects/<id>`: merge
//! requests listed by source and target branch, created with labels, edited with
//! `add_labels`/`remove_labels`, closed by `state_event`, merged at a pinned `sha`;
//! branches deleted), with the repository a real bare one served over smart HTTP
//! (`git http-backend`) on the same port, and the webhooks a person's actions send, carrying
//! the secret token as GitLab does (`X-Gitlab-Token`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::review_forge::{ReviewForge, Reviewed};

/// The project's full path, a subgroup and all, as GitLab names it.
pub const PROJECT: &str = "dc1/infra/gitops";
pub const TOKEN: &str = "glpat-test-token-0123456789";
pub const SECRET: &str = "gitlab-webhook-secret-0123456789";

#[derive(Clone, Debug)]
pub struct GitlabMergeRequest {
    pub iid: u64,
    pub title: String,
    pub description: String,
    pub source_branch: String,
    /// `opened`, `closed` or `merged`.
    pub state: String,
    pub labels: Vec<String>,
    pub remove_source_branch: bool,
    /// From a fork's branch of the same name (another project).
    pub fork: bool,
    /// Reads (and merges refused) before GitLab has checked it after a push.
    pub checking: u32,
}

#[derive(Default)]
pub struct GitlabState {
    pub merge_requests: Vec<GitlabMergeRequest>,
    pub requests: Vec<(String, String)>,
    /// Each merge asked through the API: the merge request and the sha it was pinned to.
    pub merges: Vec<(u64, Option<String>)>,
    /// (merge request, body), oldest first.
    pub notes: Vec<(u64, String)>,
}

impl GitlabState {
    fn by_iid(&mut self, iid: &str) -> Option<&mut GitlabMergeRequest> {
        let n = iid.parse::<u64>().ok()?;
        self.merge_requests.iter_mut().find(|m| m.iid == n)
    }
}

#[derive(Clone)]
pub struct FakeGitlab {
    pub url: String,
    root: PathBuf,
    pub state: Arc<Mutex<GitlabState>>,
    /// Where deliveries go (Registrar's webhook URL), once known.
    pub hook_url: Arc<Mutex<Option<String>>>,
    _dir: Arc<tempfile::TempDir>,
}

impl FakeGitlab {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        registrar::propose::git::init_local_remote(&root.join(format!("{PROJECT}.git")), "main").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeGitlab {
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

    pub fn merge_request(&self, iid: u64) -> GitlabMergeRequest {
        let st = self.state.lock().unwrap();
        st.merge_requests.iter().find(|m| m.iid == iid).unwrap().clone()
    }

    fn with_merge_request(&self, iid: u64, change: impl FnOnce(&mut GitlabMergeRequest)) {
        let mut st = self.state.lock().unwrap();
        change(st.merge_requests.iter_mut().find(|m| m.iid == iid).unwrap());
    }

    pub fn payload(&self, action: &str, iid: u64) -> Value {
        let m = self.merge_request(iid);
        json!({
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": {"username": "ops-lead"},
            "project": {"path_with_namespace": PROJECT, "web_url": format!("{}/{PROJECT}", self.url)},
            "object_attributes": {
                "iid": iid, "action": action, "state": m.state, "title": m.title,
                "source_branch": m.source_branch, "target_branch": "main",
            },
            "labels": m.labels.iter().map(|l| json!({"title": l})).collect::<Vec<_>>(),
        })
    }

    async fn deliver_merge_request(&self, action: &str, iid: u64) -> reqwest::Response {
        let body = serde_json::to_vec(&self.payload(action, iid)).unwrap();
        self.deliver("Merge Request Hook", body, Some(SECRET)).await
    }

    /// Sends a delivery as GitLab does, with `secret` as its token (none with None).
    pub async fn deliver(&self, event: &str, body: Vec<u8>, secret: Option<&str>) -> reqwest::Response {
        let url = self.hook_url.lock().unwrap().clone().expect("the webhook URL is set");
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("x-gitlab-event", event)
            .header("x-gitlab-event-uuid", super::fake_github::uuid());
        if let Some(secret) = secret {
            request = request.header("x-gitlab-token", secret);
        }
        request.body(body).send().await.unwrap()
    }
}

impl ReviewForge for FakeGitlab {
    fn kind(&self) -> &'static str {
        "gitlab"
    }

    fn point_at(&self, config: &mut Value, dir: &std::path::Path) {
        use super::binary::set;
        set(config, "forge.gitlab.url", json!(self.url));
        set(config, "forge.gitlab.project", json!(PROJECT));
        std::fs::write(dir.join("gitlab-token"), TOKEN).unwrap();
        std::fs::write(dir.join("gitlab-webhook-secret"), SECRET).unwrap();
        let file = |name: &str| json!(dir.join(name).display().to_string());
        set(config, "forge.gitlab.token_file", file("gitlab-token"));
        set(
            config,
            "forge.gitlab.webhook_secret_file",
            file("gitlab-webhook-secret"),
        );
    }

    fn send_hooks_to(&self, url: &str) {
        *self.hook_url.lock().unwrap() = Some(url.to_string());
    }

    fn repo(&self) -> super::Repo {
        super::Repo::at(&self.root.join(format!("{PROJECT}.git")))
    }

    fn reviews(&self) -> Vec<Reviewed> {
        let st = self.state.lock().unwrap();
        st.merge_requests
            .iter()
            .map(|m| Reviewed {
                number: m.iid,
                title: m.title.clone(),
                head: m.source_branch.clone(),
                open: m.state == "opened",
                merged: m.state == "merged",
            })
            .collect()
    }

    fn labels_of(&self, number: u64) -> Vec<String> {
        self.merge_request(number).labels
    }

    fn merges(&self) -> Vec<(u64, Option<String>)> {
        self.state.lock().unwrap().merges.clone()
    }

    async fn label(&self, number: u64, name: &str) -> reqwest::Response {
        self.with_merge_request(number, |m| m.labels.push(name.to_string()));
        self.deliver_merge_request("update", number).await
    }

    fn merge_quietly(&self, number: u64) {
        let head = self.merge_request(number).source_branch;
        self.repo()
            .merge(&head, "main", &format!("Merge branch '{head}' into 'main'"), "GitLab");
        self.with_merge_request(number, |m| m.state = "merged".into());
    }

    async fn merge(&self, number: u64) -> reqwest::Response {
        self.merge_quietly(number);
        self.deliver_merge_request("merge", number).await
    }

    fn open_fork_request(&self, branch: &str, title: &str) -> u64 {
        let mut st = self.state.lock().unwrap();
        let iid = st.merge_requests.len() as u64 + 1;
        st.merge_requests.push(GitlabMergeRequest {
            iid,
            title: title.to_string(),
            description: String::new(),
            source_branch: branch.to_string(),
            state: "opened".into(),
            labels: vec![],
            remove_source_branch: false,
            fork: true,
            checking: 0,
        });
        iid
    }

    fn close_quietly(&self, number: u64) {
        self.with_merge_request(number, |m| m.state = "closed".into());
    }

    async fn close(&self, number: u64) -> reqwest::Response {
        self.close_quietly(number);
        self.deliver_merge_request("close", number).await
    }

    fn comments(&self, number: u64) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.notes
            .iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn description(&self, number: u64) -> String {
        self.merge_request(number).description
    }

    async fn edit_description(&self, number: u64, description: &str) -> reqwest::Response {
        self.with_merge_request(number, |m| m.description = description.to_string());
        self.deliver_merge_request("update", number).await
    }

    async fn deliver_change(&self, number: u64, secret: Option<&str>, repository: &str) -> reqwest::Response {
        let mut payload = self.payload("update", number);
        payload["project"]["path_with_namespace"] = json!(repository);
        self.deliver("Merge Request Hook", serde_json::to_vec(&payload).unwrap(), secret)
            .await
    }

    fn repository(&self) -> &'static str {
        PROJECT
    }
}

fn merge_request_json(m: &GitlabMergeRequest, url: &str, sha: &str) -> Value {
    json!({
        "iid": m.iid,
        "id": 1000 + m.iid,
        "web_url": format!("{url}/{PROJECT}/-/merge_requests/{}", m.iid),
        "state": m.state,
        "title": m.title,
        "description": m.description,
        "source_branch": m.source_branch,
        "target_branch": "main",
        "sha": sha,
        "labels": m.labels,
        "source_project_id": if m.fork { 2 } else { 1 },
        "target_project_id": 1,
        "detailed_merge_status": if m.checking > 0 { "checking" } else { "mergeable" },
    })
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

fn not_found() -> Response {
    reply(StatusCode::NOT_FOUND, json!({"message": "404 Not found"}))
}

/// One percent-encoded path segment or query value, decoded.
fn decoded(text: &str) -> String {
    form_urlencoded::parse(format!("v={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A comma-separated label list (GitLab's form for `labels`, `add_labels`, `remove_labels`).
fn label_list(input: &Value, field: &str) -> Vec<String> {
    input[field]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

async fn route(State(g): State<FakeGitlab>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    g.state
        .lock()
        .unwrap()
        .requests
        .push((method.to_string(), path.clone()));
    if path.contains(".git/") {
        return super::git_http::serve(&g.root, "oauth2", TOKEN, method, uri, headers, body).await;
    }
    if headers.get("private-token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
        return reply(StatusCode::UNAUTHORIZED, json!({"message": "401 Unauthorized"}));
    }
    // The project's id is its path, URL-encoded into one segment.
    let encoded_project: String = form_urlencoded::byte_serialize(PROJECT.as_bytes()).collect();
    let Some(rest) = path.strip_prefix(&format!("/api/v4/projects/{encoded_project}/")) else {
        return not_found();
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let repo = g.repo();
    let sha = |branch: &str| repo.head(branch).map(|o| o.to_string()).unwrap_or_default();
    let mut st = g.state.lock().unwrap();
    match (method, segs.as_slice()) {
        (Method::GET, ["merge_requests"]) => {
            let state = param("state").unwrap_or_else(|| "all".into());
            let found: Vec<Value> = st
                .merge_requests
                .iter()
                .rev()
                .filter(|m| param("source_branch").is_none_or(|b| b == m.source_branch))
                .filter(|_| param("target_branch").is_none_or(|b| b == "main"))
                .filter(|m| state == "all" || state == m.state)
                .take(param("per_page").and_then(|n| n.parse().ok()).unwrap_or(20))
                .map(|m| merge_request_json(m, &g.url, &sha(&m.source_branch)))
                .collect();
            reply(StatusCode::OK, json!(found))
        }
        (Method::POST, ["merge_requests"]) => {
            let source = input["source_branch"].as_str().unwrap_or_default().to_string();
            if repo.head(&source).is_none() {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"message": ["Source branch does not exist"]}),
                );
            }
            if let Some(m) = st
                .merge_requests
                .iter()
                .find(|m| m.state == "opened" && !m.fork && m.source_branch == source)
            {
                let message = format!(
                    "Another open merge request already exists for this source branch: !{}",
                    m.iid
                );
                return reply(StatusCode::CONFLICT, json!({"message": [message]}));
            }
            let m = GitlabMergeRequest {
                iid: st.merge_requests.len() as u64 + 1,
                title: input["title"].as_str().unwrap_or_default().into(),
                description: input["description"].as_str().unwrap_or_default().into(),
                source_branch: source,
                state: "opened".into(),
                labels: label_list(&input, "labels"),
                remove_source_branch: input["remove_source_branch"] == true,
                fork: false,
                checking: 2,
            };
            st.merge_requests.push(m.clone());
            reply(
                StatusCode::CREATED,
                merge_request_json(&m, &g.url, &sha(&m.source_branch)),
            )
        }
        (Method::POST, ["merge_requests", iid, "notes"]) => {
            let Some(number) = st.by_iid(iid).map(|m| m.iid) else {
                return not_found();
            };
            let body = input["body"].as_str().unwrap_or_default().to_string();
            st.notes.push((number, body.clone()));
            reply(StatusCode::CREATED, json!({"id": st.notes.len(), "body": body}))
        }
        (method, ["merge_requests", iid, tail @ ..]) => {
            let Some(m) = st.by_iid(iid) else {
                return not_found();
            };
            match (method, tail) {
                (Method::GET, []) => {
                    let answer = merge_request_json(m, &g.url, &sha(&m.source_branch));
                    m.checking = m.checking.saturating_sub(1);
                    reply(StatusCode::OK, answer)
                }
                (Method::PUT, []) => {
                    if let Some(t) = input["title"].as_str() {
                        m.title = t.into();
                    }
                    if let Some(d) = input["description"].as_str() {
                        m.description = d.into();
                    }
                    let removed = label_list(&input, "remove_labels");
                    m.labels.retain(|l| !removed.contains(l));
                    for added in label_list(&input, "add_labels") {
                        if !m.labels.contains(&added) {
                            m.labels.push(added);
                        }
                    }
                    if input["state_event"] == "close" && m.state == "opened" {
                        m.state = "closed".into();
                    }
                    reply(StatusCode::OK, merge_request_json(m, &g.url, &sha(&m.source_branch)))
                }
                (Method::PUT, ["merge"]) => {
                    if m.state != "opened" {
                        return reply(
                            StatusCode::METHOD_NOT_ALLOWED,
                            json!({"message": "405 Method Not Allowed"}),
                        );
                    }
                    if m.checking > 0 {
                        m.checking -= 1;
                        return reply(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            json!({"message": "Branch cannot be merged"}),
                        );
                    }
                    let head = sha(&m.source_branch);
                    if input["sha"].as_str().is_some_and(|want| want != head) {
                        return reply(
                            StatusCode::CONFLICT,
                            json!({"message": "SHA does not match HEAD of source branch"}),
                        );
                    }
                    let branch = m.source_branch.clone();
                    repo.merge(
                        &branch,
                        "main",
                        &format!("Merge branch '{branch}' into 'main'"),
                        "GitLab",
                    );
                    m.state = "merged".into();
                    if input["should_remove_source_branch"] == true || m.remove_source_branch {
                        repo.delete_branch(&branch);
                    }
                    let (answer, number) = (merge_request_json(m, &g.url, &head), m.iid);
                    st.merges.push((number, input["sha"].as_str().map(str::to_string)));
                    reply(StatusCode::OK, answer)
                }
                _ => not_found(),
            }
        }
        (Method::DELETE, ["repository", "branches", branch]) => {
            let branch = decoded(branch);
            if repo.head(&branch).is_none() {
                return reply(StatusCode::NOT_FOUND, json!({"message": "404 Branch Not Found"}));
            }
            repo.delete_branch(&branch);
            reply(StatusCode::NO_CONTENT, Value::Null)
        }
        _ => not_found(),
    }
}
