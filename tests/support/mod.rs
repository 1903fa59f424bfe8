//! Test support: a real Registrar on loopback over a real bare GitOps repository, and
//! helpers that read the repository the way a reviewer would.
#![allow(dead_code)]

pub mod fake_github;
pub mod fake_kube;
pub mod git_http;

use std::path::{Path, PathBuf};
use std::time::Duration;

use registrar::app::App;
use registrar::config::Config;
use serde_json::Value;
use tempfile::TempDir;

pub const REPORT_TOKEN: &str = "report-token-for-tests-0123456789";
pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789";

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shared() -> PathBuf {
    manifest_dir().join("../shared")
}

pub fn lshw(name: &str) -> Value {
    let path = shared().join("fixtures/lshw").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The configuration of the embedded default, in a fresh temporary state directory.
pub fn local_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.state_dir = dir.join("state");
    c.templates_dir = manifest_dir().join("hardware-templates");
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.auth.report_token = Some(REPORT_TOKEN.to_string().into());
    c.auth.operator_token = Some(OPERATOR_TOKEN.to_string().into());
    c
}

pub struct Registrar {
    pub url: String,
    pub dir: TempDir,
    pub remote: Repo,
    pub client: reqwest::Client,
    trigger: Option<registrar::shutdown::Trigger>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Registrar {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = local_config(dir.path());
        edit(&mut config);
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: TempDir, config: Config) -> Self {
        Self::start_app(dir, config, |app| app).await
    }

    /// Starts with a hook to adjust the built `App` (e.g. hand it a DHCP socket).
    pub async fn start_app(dir: TempDir, config: Config, customize: impl FnOnce(App) -> App + Send + 'static) -> Self {
        let remote_path = if config.gitops.remote.is_empty() {
            config.state_dir.join("gitops.git")
        } else {
            PathBuf::from(config.gitops.remote.trim_start_matches("file://"))
        };
        let app = customize(
            tokio::task::spawn_blocking(move || App::build(config))
                .await
                .unwrap()
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (trigger, shutdown) = registrar::shutdown::channel();
        let task = tokio::spawn(app.serve(listener, shutdown));
        Registrar {
            url,
            dir,
            remote: Repo::at(&remote_path),
            client: reqwest::Client::new(),
            trigger: Some(trigger),
            task: Some(task),
        }
    }

    /// Stops the server and waits for it, as SIGTERM would.
    pub async fn stop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn report(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/reports", self.url))
            .bearer_auth(REPORT_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn machine(&self, mac: &str) -> Option<Value> {
        let resp = self
            .client
            .get(format!("{}/api/v1/machines/{mac}", self.url))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            return None;
        }
        Some(resp.json().await.unwrap())
    }

    /// Waits until the machine is in `state` with nothing left to sync.
    pub async fn wait_for_state(&self, mac: &str, state: &str) -> Value {
        wait_for_state(&self.client, &self.url, mac, state).await
    }

    pub async fn machine_count(&self) -> usize {
        self.get("/api/v1/machines").await["machines"].as_array().unwrap().len()
    }
}

pub async fn wait_for_state(client: &reqwest::Client, url: &str, mac: &str, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let resp = client
            .get(format!("{url}/api/v1/machines/{mac}"))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await;
        if let Ok(resp) = resp {
            if resp.status().is_success() {
                last = resp.json().await.unwrap();
                if last["machine"]["state"] == state && last["machine"]["pending"] == false {
                    return last;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{mac} never reached {state}: {last:#}");
}

impl Drop for Registrar {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
    }
}

/// A report as the simplest discovery script sends it.
pub fn report_body(mac: &str, specs: Value) -> Value {
    serde_json::json!({"mac": mac, "specs": specs, "timestamp": "2026-11-25T10:00:00+00:00"})
}

/// A bare git repository, read through git2 as a reviewer would read it.
pub struct Repo {
    pub path: PathBuf,
}

impl Repo {
    pub fn at(path: &Path) -> Self {
        Repo {
            path: path.to_path_buf(),
        }
    }

    fn open(&self) -> git2::Repository {
        git2::Repository::open_bare(&self.path).unwrap()
    }

    pub fn branches(&self) -> Vec<String> {
        let repo = self.open();
        let mut out: Vec<String> = repo
            .branches(Some(git2::BranchType::Local))
            .unwrap()
            .map(|b| b.unwrap().0.name().unwrap().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    pub fn head(&self, branch: &str) -> Option<git2::Oid> {
        self.open()
            .find_branch(branch, git2::BranchType::Local)
            .ok()
            .and_then(|b| b.get().target())
    }

    pub fn read(&self, branch: &str, path: &str) -> Option<String> {
        let repo = self.open();
        let head = self.head(branch)?;
        let tree = repo.find_commit(head).unwrap().tree().unwrap();
        let entry = tree.get_path(Path::new(path)).ok()?;
        Some(String::from_utf8(repo.find_blob(entry.id()).unwrap().content().to_vec()).unwrap())
    }

    /// Paths of all files on `branch`.
    pub fn files(&self, branch: &str) -> Vec<String> {
        let repo = self.open();
        let tree = repo.find_commit(self.head(branch).unwrap()).unwrap().tree().unwrap();
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            if e.kind() == Some(git2::ObjectType::Blob) {
                out.push(format!("{dir}{}", e.name().unwrap()));
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
        out
    }

    /// Commits on `branch` that `base` does not have.
    pub fn commits_ahead(&self, base: &str, branch: &str) -> usize {
        let repo = self.open();
        let (ahead, _) = repo
            .graph_ahead_behind(self.head(branch).unwrap(), self.head(base).unwrap())
            .unwrap();
        ahead
    }

    pub fn message(&self, branch: &str) -> String {
        let repo = self.open();
        repo.find_commit(self.head(branch).unwrap())
            .unwrap()
            .message()
            .unwrap()
            .to_string()
    }

    pub fn parent_count(&self, branch: &str) -> usize {
        self.open()
            .find_commit(self.head(branch).unwrap())
            .unwrap()
            .parent_count()
    }
}

/// Validates objects against the upstream CRDs in `../shared/crds/`, made strict as an
/// apiserver is (unknown fields rejected). Independent of Registrar's embedded copy.
pub struct UpstreamSchema(jsonschema::Validator);

impl UpstreamSchema {
    pub fn load(file: &str) -> Self {
        let text = std::fs::read_to_string(shared().join("crds/tinkerbell/v1alpha1").join(file)).unwrap();
        let crd: Value = yaml_serde::from_str(&text).unwrap();
        let mut schema = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1alpha1")
            .unwrap()["schema"]["openAPIV3Schema"]
            .clone();
        fn strict(v: &mut Value) {
            if let Value::Object(m) = v {
                if m.contains_key("properties")
                    && m.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
                {
                    m.entry("additionalProperties").or_insert(Value::Bool(false));
                }
                m.values_mut().for_each(strict);
            } else if let Value::Array(a) = v {
                a.iter_mut().for_each(strict);
            }
        }
        strict(&mut schema);
        UpstreamSchema(jsonschema::validator_for(&schema).unwrap())
    }

    pub fn errors(&self, object: &Value) -> Vec<String> {
        self.0
            .iter_errors(object)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }
}

/// Splits a multi-document YAML file into JSON values.
pub fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| yaml_serde::from_str::<Value>(d).unwrap())
        .collect()
}
