//! Test support: a real Registrar on loopback over a real bare GitOps repository, and
//! helpers that read the repository the way a reviewer would.
#![allow(dead_code)]

pub mod binary;
pub mod console;
pub mod dhcp;
pub mod fake_gitea;
pub mod fake_github;
pub mod fake_gitlab;
pub mod fake_kube;
pub mod fake_oidc;
pub mod git_http;
pub mod journey;
pub mod netns;
pub mod postgres;
mod repo;
pub mod review_forge;

pub use repo::Repo;

use std::path::{Path, PathBuf};
use std::time::Duration;

use registrar::app::App;
use registrar::config::Config;
use serde_json::{Value, json};
use tempfile::TempDir;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use console::{console_forget, console_get, console_page, console_session, csrf_token, session_cookie};

pub const REPORT_TOKEN: &str = "report-token-for-tests-0123456789";
pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789";

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sibling `../shared` directory: the upstream Tinkerbell CRDs in `crds/` and the
/// recorded fixtures in `fixtures/`. Panics, saying what is missing, when a clone lacks it.
pub fn shared() -> PathBuf {
    let root = manifest_dir().join("../shared");
    for (dir, what) in SHARED_CONTENTS {
        if !root.join(dir).is_dir() {
            panic!("{}", shared_missing(&root, dir, what));
        }
    }
    root
}

pub fn lshw(name: &str) -> Value {
    let path = shared().join("fixtures/lshw").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The configuration of the embedded default, in a fresh temporary state directory.
pub fn local_config(dir: &Path) -> Config {
    let mut c = Config {
        state_dir: dir.join("state"),
        templates_dir: manifest_dir().join("hardware-templates"),
        ..Config::default()
    };
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
    // Up to 30 s: on CI's two cores under the fault tests' retries, 10 s was seen to be short.
    for _ in 0..600 {
        let resp = client
            .get(format!("{url}/api/v1/machines/{mac}"))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await;
        if let Ok(resp) = resp
            && resp.status().is_success()
        {
            last = resp.json().await.unwrap();
            if last["machine"]["state"] == state && last["machine"]["pending"] == false {
                return last;
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

/// The Supermicro fixture's inventory with one more NVMe namespace (a disk added in the
/// field): `/dev/nvme2n1`, 3.84 TB, serial `serial`.
pub fn with_new_disk(mut specs: Value, serial: &str) -> Value {
    fn add(node: &mut Value, serial: &str) -> bool {
        let Some(children) = node["children"].as_array_mut() else {
            return false;
        };
        if let Some(mut disk) = children.iter().find(|c| c["logicalname"] == "/dev/nvme1n1").cloned() {
            disk["logicalname"] = json!("/dev/nvme2n1");
            disk["size"] = json!(3_840_000_000_000u64);
            disk["serial"] = json!(serial);
            children.push(disk);
            return true;
        }
        children.iter_mut().any(|c| add(c, serial))
    }
    assert!(add(&mut specs, serial), "the fixture has /dev/nvme1n1");
    specs
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

/// A path inside `../shared` that must exist, with a clear panic when it does not.
pub fn shared_path(rel: &str, what: &str) -> PathBuf {
    let root = shared();
    let path = root.join(rel);
    if !path.exists() {
        panic!("{}", shared_missing(&root, rel, what));
    }
    path
}

/// Whether a test that needs something this machine lacks (root, a tool) should return
/// early: it says why and skips, except under `REGISTRAR_CI` (set by .ci/run, which provides
/// everything), where a missing prerequisite is a failure, not a silent pass.
pub fn skip_unless_ci(test: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else { return false };
    let ci = std::env::var("REGISTRAR_CI").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !ci,
        "{test}: {why} (REGISTRAR_CI is set, so this fails instead of skipping)"
    );
    eprintln!("SKIPPED {test}: {why} (with REGISTRAR_CI=1 this fails)");
    true
}

/// Registrar's Prometheus metrics, as an operator's scraper reads them.
pub async fn metrics_text(r: &Registrar) -> String {
    let resp = r
        .client
        .get(format!("{}/metrics", r.url))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "GET /metrics: {}", resp.status());
    resp.text().await.unwrap()
}

/// The value of one series in `text`, e.g. `registrar_reports_total{result="accepted"}`;
/// 0 when the series is absent (a labelled counter that never moved).
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .map(|(_, v)| v.parse().unwrap_or_else(|e| panic!("{series}: {v:?}: {e}")))
        .unwrap_or(0.0)
}

pub async fn metric(r: &Registrar, series: &str) -> f64 {
    metric_in(&metrics_text(r).await, series)
}

/// Waits until `series` reaches at least `at_least`, and returns its value.
pub async fn wait_metric(r: &Registrar, series: &str, at_least: f64) -> f64 {
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics_text(r).await;
        let v = metric_in(&text, series);
        if v >= at_least {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never reached {at_least}:\n{text}");
}

/// Waits until every webhook delivery Registrar accepted (answered 202 and handed to the
/// background) has been handled to the end, and returns how many that is. A delivery
/// accepted before this call is counted in `accepted` before its 202 is sent.
pub async fn wait_webhooks_handled(r: &Registrar) -> f64 {
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics_text(r).await;
        let accepted = metric_in(&text, WEBHOOKS_ACCEPTED);
        let handled = metric_in(&text, r#"registrar_webhook_handled_total{result="ok"}"#)
            + metric_in(&text, r#"registrar_webhook_handled_total{result="error"}"#);
        if handled >= accepted {
            return handled;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("accepted webhook deliveries were never all handled:\n{text}");
}

/// Proof that the proposal worker has run a pass since everything the test did before:
/// reports a machine of its own (`mac`, unused elsewhere) and waits until it is proposed.
/// A pass syncs whatever is pending, oldest first, so anything queued before the probe was
/// synced (or failed) before the probe was; a test can then assert that something did *not*
/// happen without sleeping. The probe leaves its own branch and proposal behind.
pub async fn probe_worker_pass(r: &Registrar, mac: &str) -> Value {
    let specs = serde_json::json!({"class": "system", "vendor": "Probe", "product": "Worker pass",
                                   "serial": format!("PROBE-{}", mac.replace(':', "")), "children": []});
    let resp = r.report(&report_body(mac, specs)).await;
    assert_eq!(resp.status(), 202, "the probe report");
    r.wait_for_state(mac, "proposed").await
}

/// What the tests read from `../shared`, and what each holds.
const SHARED_CONTENTS: &[(&str, &str)] = &[
    (
        "crds/tinkerbell/v1alpha1",
        "the upstream Tinkerbell CRDs (tinkerbell.org_hardware.yaml, tinkerbell.org_workflows.yaml, …)",
    ),
    (
        "fixtures/lshw",
        "recorded `lshw -json` outputs of real machines (supermicro-ssg-6029p-x11dph-t.json, …)",
    ),
];

fn shared_missing(root: &Path, dir: &str, what: &str) -> String {
    // `/x/main/../shared` reads better as `/x/shared`.
    let root_shown = root
        .canonicalize()
        .ok()
        .or_else(|| manifest_dir().parent().map(|p| p.join("shared")))
        .unwrap_or_else(|| root.to_path_buf());
    if root.is_dir() {
        format!(
            "{} is missing: the tests need {what} there (in {}, the directory beside this repository)",
            root_shown.join(dir).display(),
            root_shown.display()
        )
    } else {
        format!(
            "the tests need a `shared` directory beside this repository ({}), which is missing. It holds \
             crds/tinkerbell/v1alpha1 (the upstream Tinkerbell CRDs) and fixtures/ (lshw/: recorded \
             `lshw -json` outputs; github/webhooks/: recorded GitHub deliveries); check it out or copy it there",
            root_shown.display()
        )
    }
}

/// Metric series the tests wait on (names as GET /metrics prints them).
pub const WEBHOOKS_ACCEPTED: &str = r#"registrar_webhook_deliveries_total{result="accepted"}"#;
pub const WEBHOOKS_DUPLICATE: &str = r#"registrar_webhook_deliveries_total{result="duplicate"}"#;
pub const WEBHOOKS_BAD_SIGNATURE: &str = r#"registrar_webhook_deliveries_total{result="bad_signature"}"#;
pub const SYNCS_PUSHED: &str = r#"registrar_proposal_syncs_total{result="pushed"}"#;
pub const SYNCS_ERROR: &str = r#"registrar_proposal_syncs_total{result="error"}"#;
pub const ADOPTION_SCANS: &str = "registrar_adoption_scans_total";
pub const DHCP_REPEAT: &str = r#"registrar_dhcp_dropped_total{reason="repeat"}"#;
pub const DHCP_KNOWN: &str = r#"registrar_dhcp_dropped_total{reason="known"}"#;

/// A Registrar on the fake GitHub (token, no pacing, webhooks delivered to it), with `edit`
/// applied to its configuration.
pub async fn start_on_github(edit: impl FnOnce(&mut Config) + Send + 'static) -> (fake_github::FakeGithub, Registrar) {
    let gh = fake_github::FakeGithub::start().await;
    let (api, git) = (gh.url.clone(), gh.git_url());
    let r = Registrar::start_with(move |c| {
        fake_github::configure(c, &api, &git);
        c.forge.github.reconcile_seconds = 3600;
        edit(c);
    })
    .await;
    *gh.hook_url.lock().unwrap() = Some(format!("{}/webhooks/github", r.url));
    (gh, r)
}

/// `mac` reports the recorded Packet c3.small's facts and is proposed: its pull request's
/// number (the fake GitHub holds that one pull request alone).
pub async fn propose_on_github(gh: &fake_github::FakeGithub, r: &Registrar, mac: &str) -> u64 {
    r.report(&report_body(mac, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")))
        .await;
    let m = r.wait_for_state(mac, "proposed").await;
    assert_eq!(gh.pulls().len(), 1);
    m["proposal"]["number"].as_u64().unwrap()
}

/// Copies a directory tree (the shipped templates, to change one file of them).
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A copy of hardware-templates in `dir` whose rules.yaml names machines by `pattern`.
pub fn templates_named(dir: &Path, pattern: &str) -> PathBuf {
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    copy_dir(&manifest_dir().join("hardware-templates"), &templates);
    let rules = templates.join("rules.yaml");
    let text = std::fs::read_to_string(&rules).unwrap();
    let shipped = r#"name: "{{ facts.serial | lower }}""#;
    assert!(text.contains(shipped), "rules.yaml's name pattern moved");
    std::fs::write(&rules, text.replace(shipped, &format!("name: {pattern:?}"))).unwrap();
    templates
}
