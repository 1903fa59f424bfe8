//! The shipped binary, run as a user runs it: `registrar serve --config FILE`, with a config
//! file made from one of `examples/` (only what must differ on a test machine is changed:
//! ports, directories, the URLs of the fakes), secrets in files and the environment, and
//! nothing shared with the test process but HTTP, git and the files it writes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test: `REGISTRAR_TEST_BINARY` (`.ci/run` builds the release binary and
/// points it there), else the one `cargo test` built.
pub fn binary() -> PathBuf {
    match std::env::var_os("REGISTRAR_TEST_BINARY").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_registrar")),
    }
}

/// Chooses the port the server will listen on before it starts, so its URL can go into the
/// config (a report URL) or a fake (GitHub's webhook URL).
pub fn listen_on(config: &mut Value) -> String {
    let port = free_port();
    set(config, "server.listen", json!(format!("127.0.0.1:{port}")));
    format!("http://127.0.0.1:{port}")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An example configuration from `examples/`, as YAML parsed to JSON for editing.
pub fn example(name: &str) -> Value {
    let path = super::manifest_dir().join("examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Sets `value` at a dotted path (`cluster.discovery.max_machines`), creating maps on the way.
pub fn set(config: &mut Value, path: &str, value: Value) {
    let mut at = config;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        if !at.is_object() {
            *at = json!({});
        }
        if keys.peek().is_none() {
            at[key] = value;
            return;
        }
        at = at.as_object_mut().unwrap().entry(key).or_insert(json!({}));
    }
}

/// A running `registrar serve`, killed on drop; its log is kept in its directory.
pub struct Process {
    pub url: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
    /// `serve`, or `snoop`.
    command: &'static str,
}

impl Process {
    /// Writes `config` to `dir/config.yaml` (with its own state directory, the repository's
    /// templates unless `templates_dir` is inside `dir`, and a free loopback port) and
    /// starts the binary on it.
    pub fn start(dir: &Path, mut config: Value, env: &[(&str, &str)]) -> Process {
        // A test that must know the URL first (a report URL, a webhook) chose the port with
        // `listen_on`; the examples' own ports (8080) would clash between tests.
        let listen = match config["server"]["listen"].as_str() {
            Some(l) if l.starts_with("127.0.0.1:") && !l.ends_with(":8080") => l.to_string(),
            _ => format!("127.0.0.1:{}", free_port()),
        };
        set(&mut config, "server.listen", json!(listen));
        set(&mut config, "state_dir", json!(dir.join("state").display().to_string()));
        // The repository's templates, unless the test brought its own (in its directory).
        if config["templates_dir"]
            .as_str()
            .is_none_or(|t| !Path::new(t).starts_with(dir))
        {
            let templates = super::manifest_dir().join("hardware-templates");
            set(&mut config, "templates_dir", json!(templates.display().to_string()));
        }
        let path = dir.join("config.yaml");
        std::fs::write(&path, yaml_serde::to_string(&config).unwrap()).unwrap();
        let mut p = Process {
            url: format!("http://{listen}"),
            dir: dir.to_path_buf(),
            config: path,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
            log: dir.join("registrar.log"),
            starts: 0,
            command: "serve",
        };
        p.spawn();
        p
    }

    /// `registrar snoop --config dir/snoop.yaml`: no HTTP server of its own (`url` is empty),
    /// its log in `dir/snoop.log`.
    pub fn start_snoop(dir: &Path, config: Value, env: &[(&str, &str)]) -> Process {
        let path = dir.join("snoop.yaml");
        std::fs::write(&path, yaml_serde::to_string(&config).unwrap()).unwrap();
        let mut p = Process {
            url: String::new(),
            dir: dir.to_path_buf(),
            config: path,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
            log: dir.join("snoop.log"),
            starts: 0,
            command: "snoop",
        };
        p.spawn();
        p
    }

    /// The process id of the running binary.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(binary());
        cmd.args([self.command, "--config"])
            .arg(&self.config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("REGISTRAR_LOG", "info,registrar=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", binary().display())),
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// Waits until `/readyz` answers 200 and returns its body; panics with the log if the
    /// process exits or never gets ready.
    pub async fn wait_ready(&mut self) -> Value {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                panic!(
                    "registrar exited with {status} before it was ready; its log:\n{}",
                    self.log()
                );
            }
            if let Ok(resp) = client.get(format!("{}/readyz", self.url)).send().await {
                let ok = resp.status() == 200;
                last = resp.json().await.unwrap_or(Value::Null);
                if ok {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "registrar never got ready; last /readyz: {last:#}\nits log:\n{}",
            self.log()
        );
    }

    /// SIGTERM, as Kubernetes stops a pod; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "registrar did not stop within 30 s of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets (or with `None` removes) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Starts again after the process exited (by itself, or `stop`), on the same state.
    pub async fn start_again(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.wait().unwrap();
        }
        self.spawn();
        self.wait_ready().await;
    }

    /// SIGKILL at whatever point it is (a node failure, the OOM killer), then starts again on
    /// the same configuration and state.
    pub async fn crash_and_restart(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        self.spawn();
        self.wait_ready().await;
    }

    /// Stops and starts again on the same configuration and state (a pod restart).
    pub async fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "registrar exited with {status} on SIGTERM; its log:\n{}",
            self.log()
        );
        self.spawn();
        self.wait_ready().await;
    }

    /// A metric's value on `/metrics`: `series` is its name and labels as printed, with the
    /// space that ends them.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::Client::new()
            .get(format!("{}/metrics", self.url))
            .bearer_auth(super::OPERATOR_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    }

    /// Runs a CLI command of the same binary against this server (`--url`).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(binary());
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .arg("--url")
            .arg(&self.url)
            .env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- registrar's log ({}) ---\n{}", self.log.display(), self.log());
        }
    }
}

/// A kubeconfig that points at the fake API server, as `KUBECONFIG` names it.
pub fn kubeconfig(dir: &Path, api_url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {api_url}\nusers:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: tinkerbell\ncurrent-context: fake\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds; panics with `what`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator and report tokens, from the environment as deploy/ passes them.
pub fn token_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("REGISTRAR_REPORT_TOKEN", super::REPORT_TOKEN),
        ("REGISTRAR_OPERATOR_TOKEN", super::OPERATOR_TOKEN),
    ]
}

/// Points a GitHub configuration at the fake: its API and git URLs, and the secrets in
/// files (a token, or the App's key when the example uses an App).
pub fn point_at_github(config: &mut Value, dir: &Path, gh: &super::fake_github::FakeGithub) {
    set(config, "forge.github.api_url", json!(gh.url));
    set(config, "forge.github.owner", json!(super::fake_github::OWNER));
    set(config, "forge.github.repo", json!(super::fake_github::REPO));
    set(config, "gitops.remote", json!(gh.git_url()));
    let github = config["forge"]["github"].as_object_mut().unwrap();
    github.remove("token");
    github.remove("webhook_secret");
    github.remove("webhook_previous_secret_file");
    if let Some(app_id) = config["forge"]["github"]["app_id"].as_u64() {
        let fixtures = super::manifest_dir().join("tests/fixtures");
        gh.state.lock().unwrap().app = Some((
            app_id,
            std::fs::read(fixtures.join("github-app-test-key.pub.pem")).unwrap(),
        ));
        let key = fixtures.join("github-app-test-key.pem");
        set(
            config,
            "forge.github.app_private_key_file",
            json!(key.display().to_string()),
        );
    } else {
        std::fs::write(dir.join("github-token"), super::fake_github::TOKEN).unwrap();
        set(
            config,
            "forge.github.token_file",
            json!(dir.join("github-token").display().to_string()),
        );
    }
    std::fs::write(dir.join("webhook-secret"), super::fake_github::SECRET).unwrap();
    set(
        config,
        "forge.github.webhook_secret_file",
        json!(dir.join("webhook-secret").display().to_string()),
    );
}

/// The binary on examples/github.yaml, pointed at the fake GitHub with its webhooks
/// delivered and no pause between mutations; `edit` adjusts the config.
pub async fn start_on_github(
    dir: &Path,
    gh: &super::fake_github::FakeGithub,
    edit: impl FnOnce(&mut Value),
) -> Process {
    let mut config = example("github.yaml");
    point_at_github(&mut config, dir, gh);
    set(&mut config, "forge.github.mutation_interval_ms", json!(0));
    let url = listen_on(&mut config);
    edit(&mut config);
    *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    let mut p = Process::start(dir, config, &token_env());
    p.wait_ready().await;
    p
}
