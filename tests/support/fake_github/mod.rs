//! A stateful fake GitHub: pull requests, labels and comments behind the REST paths
//! Registrar calls, branches in real bare repositories served over smart HTTP, webhook
//! deliveries signed exactly as GitHub signs them, and faults injected on demand. Tests
//! drive it like a person on github.com: merge, close, reopen, label.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

mod api;
mod graphql;
pub mod shapes;

use api::*;

pub const OWNER: &str = "acme";
pub const REPO: &str = "gitops";
pub const TOKEN: &str = "ghs_fake_installation_token_0123456789";
pub const SECRET: &str = "webhook-secret-for-tests";

#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub open: bool,
    pub merged: bool,
    pub merged_by: Option<String>,
    pub labels: Vec<String>,
    /// Where the head branch lives: `None` is this repository; `Some("mallory/gitops")` a
    /// fork, whose branch may carry any name, `registrar/<mac>` included.
    pub fork: Option<String>,
    /// Auto-merge is enabled: GitHub merges it once the required checks pass.
    pub auto_merge: bool,
}

impl Pull {
    /// A pull request just opened from `head` into main.
    pub fn opened(number: u64, head: &str, title: &str, fork: Option<String>) -> Pull {
        Pull {
            number,
            title: title.into(),
            body: String::new(),
            head: head.into(),
            base: "main".into(),
            open: true,
            merged: false,
            merged_by: None,
            labels: vec![],
            fork,
            auto_merge: false,
        }
    }
}

/// An issue that is not a pull request (the dashboard).
#[derive(Debug, Clone)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub open: bool,
    /// How many times its body was written after it was opened.
    pub edits: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer this share of requests with 502 — for creates, after carrying them out.
    pub server_errors: f64,
    /// Answer this share of mutations with a secondary-rate-limit 403 and `Retry-After: 1`.
    pub secondary_limits: f64,
    /// Hold this share of requests longer than the client waits.
    pub timeouts: f64,
    pub timeout_for: Duration,
    /// Enforce GitHub's secondary limits on mutations: (per minute, minute, per hour, hour).
    pub secondary_budget: Option<(usize, Duration, usize, Duration)>,
    /// Carry out merges, then answer 502: the merge happened, the answer was lost.
    pub merge_answer_lost: bool,
    /// Which requests fail is a function of this seed and the request (its method, path
    /// and how many times it was sent before), not of a random stream shared by every
    /// task: a model run's seed replays the same faults whatever order its requests race in.
    pub seed: u64,
}

impl Faults {
    /// A number in [0, 1) for the `nth` sending of `method path`, one per kind of fault.
    pub fn roll(&self, fault: &str, method: &str, path: &str, nth: usize) -> f64 {
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() has fixed keys: the same inputs give the same roll in every run.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.seed, fault, method, path, nth).hash(&mut h);
        (h.finish() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Default)]
pub struct GhState {
    pub pulls: Vec<Pull>,
    pub issues: Vec<Issue>,
    pub labels: BTreeMap<String, (String, String)>,
    pub comments: BTreeMap<u64, Vec<String>>,
    /// Every REST request: (method, path).
    pub requests: Vec<(String, String)>,
    /// How many times each (method, path) was sent: which fault a request meets depends on it.
    pub times_sent: std::collections::HashMap<(String, String), usize>,
    pub faults: Faults,
    /// Branch protection on the base: merges through the API are refused (405).
    pub protected: bool,
    pub secondary_limit_hits: u64,
    /// When mutations arrived, for the enforced budget.
    pub mutation_times: Vec<std::time::Instant>,
    /// A GitHub App: its id and public key (PEM); installation tokens it has issued.
    pub app: Option<(u64, Vec<u8>)>,
    pub installation_tokens: Vec<String>,
    /// Deliver `pull_request` `synchronize` when a push moves an open pull request's head,
    /// as GitHub does — before the pusher has even read the push's answer.
    pub push_webhooks: bool,
    /// Requests whose path ends with one of these wait, unanswered, until released: a call
    /// that GitHub is slow to answer (a rate limit, a long merge).
    pub held: Vec<String>,
    /// Refuse to open pull requests (403), as GitHub does for a token that lost its
    /// pull-requests permission.
    pub refuse_creates: bool,
    /// Conditional GETs answered 304 (free of GitHub's rate limit).
    pub not_modified: u64,
    /// Merges asked for without the `sha` that pins them to the reviewed head.
    pub unpinned_merges: u64,
    /// The base branch requires status checks: auto-merge waits for them. Without, GitHub
    /// refuses to enable auto-merge on a pull request that can be merged now.
    pub required_checks: bool,
    /// Each account's role on the repository (`admin`, `maintain`, `write`, `triage`,
    /// `read`); anyone else reads.
    pub roles: std::collections::HashMap<String, String>,
    /// Who wrote a comment (by its id), where a person did; the rest are Registrar's.
    pub comment_authors: std::collections::HashMap<u64, String>,
}

impl GhState {
    /// Issues and pull requests share one sequence of numbers, as on GitHub.
    pub fn next_number(&self) -> u64 {
        let pulls = self.pulls.iter().map(|p| p.number);
        pulls.chain(self.issues.iter().map(|i| i.number)).max().unwrap_or(0) + 1
    }
}

#[derive(Clone)]
pub struct FakeGithub {
    pub url: String,
    pub root: PathBuf,
    pub state: Arc<Mutex<GhState>>,
    /// Where deliveries go (Registrar's webhook URL), once known.
    pub hook_url: Arc<Mutex<Option<String>>>,
    client: reqwest::Client,
    _dir: Arc<tempfile::TempDir>,
}

impl FakeGithub {
    pub async fn start() -> Self {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    /// Serves on `listener` (a port chosen before GitHub "came up", say).
    pub async fn start_on(listener: tokio::net::TcpListener) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        registrar::propose::git::init_local_remote(&root.join(OWNER).join(format!("{REPO}.git")), "main").unwrap();
        let state = Arc::new(Mutex::new(GhState::default()));
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeGithub {
            url,
            root,
            state,
            hook_url: Arc::new(Mutex::new(None)),
            client: reqwest::Client::new(),
            _dir: Arc::new(dir),
        };
        let app = Router::new().fallback(route).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn git_url(&self) -> String {
        format!("{}/{OWNER}/{REPO}.git", self.url)
    }

    /// The commit `branch` points at in the repository ("" when there is no such branch).
    pub fn head_of(&self, branch: &str) -> String {
        head_sha(&self.repo().path, branch)
    }

    pub fn repo(&self) -> super::Repo {
        super::Repo::at(&self.root.join(OWNER).join(format!("{REPO}.git")))
    }

    pub fn pulls(&self) -> Vec<Pull> {
        self.state.lock().unwrap().pulls.clone()
    }

    pub fn pull(&self, number: u64) -> Pull {
        self.pulls().into_iter().find(|p| p.number == number).unwrap()
    }

    pub fn issues(&self) -> Vec<Issue> {
        self.state.lock().unwrap().issues.clone()
    }

    pub fn comments(&self, number: u64) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .comments
            .get(&number)
            .cloned()
            .unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Holds every request whose path ends with `suffix` until `release`.
    pub fn hold(&self, suffix: &str) {
        self.state.lock().unwrap().held.push(suffix.to_string());
    }

    pub fn release(&self) {
        self.state.lock().unwrap().held.clear();
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    // --- what people do on github.com; each sends the webhook GitHub would ---

    pub async fn merge(&self, number: u64, by: &str) -> reqwest::Response {
        self.merge_quietly(number, by);
        self.deliver_pr("closed", number, by, None).await
    }

    /// Merges without delivering the webhook (a lost delivery).
    pub fn merge_quietly(&self, number: u64, by: &str) {
        let pull = self.pull(number);
        merge_in_repo(
            &self.repo().path,
            &pull.head,
            &pull.base,
            &format!("Merge pull request #{number}"),
        );
        let mut st = self.state.lock().unwrap();
        let p = st.pulls.iter_mut().find(|p| p.number == number).unwrap();
        p.open = false;
        p.merged = true;
        p.merged_by = Some(by.into());
    }

    pub async fn close(&self, number: u64, by: &str) -> reqwest::Response {
        self.state
            .lock()
            .unwrap()
            .pulls
            .iter_mut()
            .find(|p| p.number == number)
            .unwrap()
            .open = false;
        self.deliver_pr("closed", number, by, None).await
    }

    pub async fn reopen(&self, number: u64, by: &str) -> reqwest::Response {
        self.reopen_quietly(number);
        self.deliver_pr("reopened", number, by, None).await
    }

    /// Reopens without delivering the webhook (a lost delivery).
    pub fn reopen_quietly(&self, number: u64) {
        self.state
            .lock()
            .unwrap()
            .pulls
            .iter_mut()
            .find(|p| p.number == number)
            .unwrap()
            .open = true;
    }

    /// The required checks pass on pull request `number`: with auto-merge enabled, GitHub
    /// merges it (as whoever enabled it) and delivers the webhook. Whether it merged.
    pub async fn checks_pass(&self, number: u64) -> bool {
        let pull = self.pull(number);
        if !(pull.open && pull.auto_merge) {
            return false;
        }
        self.merge_quietly(number, "registrar[bot]");
        let resp = self.deliver_pr("closed", number, "registrar[bot]", None).await;
        assert!(resp.status().is_success(), "closed delivery: {}", resp.status());
        true
    }

    pub async fn label(&self, number: u64, label: &str, by: &str) -> reqwest::Response {
        {
            let mut st = self.state.lock().unwrap();
            st.labels
                .entry(label.into())
                .or_insert(("ededed".into(), String::new()));
            let p = st.pulls.iter_mut().find(|p| p.number == number).unwrap();
            if !p.labels.iter().any(|l| l == label) {
                p.labels.push(label.into());
            }
        }
        self.deliver_pr("labeled", number, by, Some(label)).await
    }

    /// Gives `login` a role on the repository (`write`, `read`…).
    pub fn grant(&self, login: &str, role: &str) {
        self.state.lock().unwrap().roles.insert(login.into(), role.into());
    }

    /// A person comments on pull request (or issue) `number`; GitHub delivers
    /// `issue_comment`.
    pub async fn comment_as(&self, number: u64, by: &str, text: &str) -> reqwest::Response {
        let id = self.comment_quietly(number, by, text);
        let payload = shapes::comment_delivery(number, shapes::comment_by(id, text, by, "User"), by);
        self.deliver_signed("issue_comment", &payload).await
    }

    /// A person comments, and the delivery is lost: the comment's id.
    pub fn comment_quietly(&self, number: u64, by: &str, text: &str) -> u64 {
        let mut st = self.state.lock().unwrap();
        let comments = st.comments.entry(number).or_default();
        comments.push(text.to_string());
        let id = number * 10_000 + comments.len() as u64;
        st.comment_authors.insert(id, by.to_string());
        id
    }

    /// A person edits pull request `number`'s description; GitHub delivers `edited`.
    pub async fn edit_body(&self, number: u64, body: &str, by: &str) -> reqwest::Response {
        self.state
            .lock()
            .unwrap()
            .pulls
            .iter_mut()
            .find(|p| p.number == number)
            .unwrap()
            .body = body.to_string();
        self.deliver_pr("edited", number, by, None).await
    }

    /// A person opens a pull request from `branch` of this repository.
    pub async fn open_pull(&self, branch: &str, title: &str, by: &str) -> u64 {
        let number = {
            let mut st = self.state.lock().unwrap();
            let number = st.next_number();
            st.pulls.push(Pull::opened(number, branch, title, None));
            number
        };
        set_pull_ref(&self.repo().path, number, branch);
        let resp = self.deliver_pr("opened", number, by, None).await;
        assert!(resp.status().is_success(), "opened delivery: {}", resp.status());
        number
    }

    /// A person pushes a commit that writes `path` to pull request `number`'s branch.
    pub async fn push_to_pull(&self, number: u64, path: &str, content: &str, by: &str) {
        let branch = self.pull(number).head;
        self.repo().push_on_top(&branch, path, content);
        set_pull_ref(&self.repo().path, number, &branch);
        let resp = self.deliver_pr("synchronize", number, by, None).await;
        assert!(resp.status().is_success(), "synchronize delivery: {}", resp.status());
    }

    /// Someone opens a pull request from their fork, from a branch of any name.
    pub fn open_fork_pull(&self, fork: &str, branch: &str) -> u64 {
        let mut st = self.state.lock().unwrap();
        let number = st.next_number();
        st.pulls
            .push(Pull::opened(number, branch, "Add my machine", Some(fork.into())));
        number
    }

    /// The fork a pull request came from is deleted (its head repository becomes null).
    pub fn delete_fork(&self, number: u64) {
        let mut st = self.state.lock().unwrap();
        let p = st.pulls.iter_mut().find(|p| p.number == number).unwrap();
        p.fork = Some(String::new());
    }

    pub fn payload(&self, action: &str, number: u64, by: &str, label: Option<&str>) -> Value {
        let pr = pull_json(&self.pull(number), &self.repo().path);
        shapes::pull_request_delivery(action, pr, by, label)
    }

    async fn deliver_pr(&self, action: &str, number: u64, by: &str, label: Option<&str>) -> reqwest::Response {
        let payload = self.payload(action, number, by, label);
        self.deliver_signed("pull_request", &payload).await
    }

    /// Delivers `payload` as GitHub would: a new delivery id, signed with the secret.
    async fn deliver_signed(&self, event: &str, payload: &Value) -> reqwest::Response {
        self.deliver(event, &uuid(), serde_json::to_vec(payload).unwrap(), Some(SECRET))
            .await
    }

    /// Posts a delivery to Registrar, signed with `secret` (None: unsigned).
    pub async fn deliver(&self, event: &str, delivery: &str, body: Vec<u8>, secret: Option<&str>) -> reqwest::Response {
        let url = self.hook_url.lock().unwrap().clone().expect("hook_url");
        let mut req = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/fake")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-github-hook-id", "1");
        if let Some(s) = secret {
            req = req.header("x-hub-signature-256", sign(s, &body));
        }
        req.body(body).send().await.unwrap()
    }
}

/// Points a Registrar configuration at this fake: the github forge with a token, no
/// pacing (tests that measure pacing set their own), and the repository over smart HTTP.
pub fn configure(c: &mut registrar::config::Config, api_url: &str, git_url: &str) {
    c.forge.kind = "github".into();
    c.forge.github.api_url = api_url.into();
    c.forge.github.owner = OWNER.into();
    c.forge.github.repo = REPO.into();
    c.forge.github.token = Some(TOKEN.to_string().into());
    c.forge.github.webhook_secret = Some(SECRET.to_string().into());
    c.forge.github.mutation_interval_ms = 0;
    c.forge.github.max_mutations_per_minute = 0; // 0: no budget
    c.forge.github.max_mutations_per_hour = 0;
    c.forge.github.retry_base_ms = 5;
    // Tests of approving in the console and API; the default (off) has its own test.
    c.forge.github.approve_in_registrar = true;
    c.gitops.remote = git_url.into();
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
