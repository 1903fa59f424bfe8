//! Start-up of the shipped binary, in every configuration users copy: each file in
//! `examples/` and each `config.yaml` in `deploy/` starts and reaches `/readyz` with every
//! pipeline it enables named and ready, and stops cleanly on SIGTERM. A dependency that is
//! down or misconfigured gives one clear error and a non-zero exit, or a not-ready state that
//! recovers by itself — never a panic.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::binary::{Process, binary, eventually, free_port, kubeconfig, point_at_github, set, token_env};
use support::fake_github::{self, FakeGithub};
use support::fake_kube::FakeKube;
use support::review_forge::ReviewForge;
use support::*;

/// Every configuration a user copies for `registrar serve`: examples/*.yaml and
/// deploy/**/config.yaml. (examples/snoop.yaml is `registrar snoop`'s: tests/snoop.rs runs it.)
fn configurations() -> Vec<PathBuf> {
    let root = manifest_dir();
    let mut out: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("snoop.yaml"))
        .collect();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n == "config.yaml") {
                out.push(path);
            }
        }
    }
    walk(&root.join("deploy"), &mut out);
    out.sort();
    out
}

/// The pipelines a configuration enables, as `/readyz` must name them.
fn expected_pipelines(config: &Value) -> Vec<&'static str> {
    let mut out = vec!["store", "proposals", "gitops"];
    if config["forge"]["kind"] == "github" {
        out.push("forge");
    }
    if config["cluster"]["enabled"] == true {
        out.extend(["cluster", "cluster-bmcs", "handoff"]);
        if config["cluster"]["discovery"]["enabled"] == true {
            out.push("discovery");
        }
        if config["cluster"]["smee_logs"]["enabled"] == true {
            out.push("smee_logs");
        }
    }
    if config["dhcp"]["enabled"] == true {
        out.push("dhcp");
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_and_deploy_configuration_starts_and_is_ready() {
    let configurations = configurations();
    // The setups users copy, by name: the walk below must start each of them.
    for copied in [
        "examples/local.yaml",
        "examples/github.yaml",
        "examples/gitea.yaml",
        "examples/gitlab.yaml",
        "examples/cluster.yaml",
        "examples/dhcp.yaml",
        "examples/all.yaml",
        "deploy/base/config.yaml",
        "deploy/examples/github/config.yaml",
    ] {
        assert!(
            configurations.contains(&manifest_dir().join(copied)),
            "{copied} is not started: {configurations:?}"
        );
    }
    for file in configurations {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut config: Value = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let dir = tempfile::tempdir().unwrap();
        let gh = FakeGithub::start().await;
        let kube = FakeKube::start().await;
        kube.add_pod("tinkerbell", "tinkerbell-1", json!({"app": "tinkerbell"}));
        let mut env = token_env();
        let kubeconfig = kubeconfig(dir.path(), &kube.url);
        // Only what must differ on a test machine: the fakes' URLs, a loopback DHCP port.
        if config["forge"]["kind"] == "github" {
            point_at_github(&mut config, dir.path(), &gh);
        }
        let gitea = support::fake_gitea::FakeGitea::start().await;
        let gitlab = support::fake_gitlab::FakeGitlab::start().await;
        if config["forge"]["kind"] == "gitea" {
            gitea.point_at(&mut config, dir.path());
        }
        if config["forge"]["kind"] == "gitlab" {
            gitlab.point_at(&mut config, dir.path());
        }
        if config["cluster"]["enabled"] == true {
            env.push(("KUBECONFIG", kubeconfig.to_str().unwrap()));
        }
        let dhcp_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if config["dhcp"]["enabled"] == true {
            set(&mut config, "dhcp.listen", json!(format!("127.0.0.1:{dhcp_port}")));
            set(&mut config, "dhcp.capture", json!(false));
            set(&mut config, "dhcp.interface", Value::Null);
        }
        let expected = expected_pipelines(&config);
        let mut p = Process::start(dir.path(), config, &env);
        let ready = p.wait_ready().await;
        for pipeline in &expected {
            assert_eq!(
                ready["checks"][pipeline]["ready"],
                true,
                "{}: {pipeline}: {ready:#}",
                file.display()
            );
        }
        let named: Vec<&String> = ready["checks"].as_object().unwrap().keys().collect();
        assert_eq!(
            named.len(),
            expected.len(),
            "{}: /readyz names {named:?}, expected {expected:?}",
            file.display()
        );
        let status = p.stop();
        assert!(
            status.success(),
            "{}: exit {status} on SIGTERM:\n{}",
            file.display(),
            p.log()
        );
        assert!(!p.log().contains("panicked"), "{}:\n{}", file.display(), p.log());
    }
}

/// Runs `registrar serve` to its exit (it must exit by itself) and returns (status, stderr).
fn serve_until_exit(dir: &Path, config: Value, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut config = config;
    set(
        &mut config,
        "server.listen",
        json!(format!("127.0.0.1:{}", free_port())),
    );
    set(&mut config, "state_dir", json!(dir.join("state").display().to_string()));
    set(
        &mut config,
        "templates_dir",
        json!(manifest_dir().join("hardware-templates").display().to_string()),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml_serde::to_string(&config).unwrap()).unwrap();
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["serve", "--config"])
        .arg(&path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("registrar kept running with a configuration it cannot start with");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cluster_to_talk_to_is_one_clear_error_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::binary::example("local.yaml");
    set(&mut config, "cluster.enabled", json!(true));
    let missing = dir.path().join("no-such-kubeconfig");
    let mut env = token_env();
    env.push(("KUBECONFIG", missing.to_str().unwrap()));
    let (status, stderr) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            serve_until_exit(&dir, config, &env)
        }
    })
    .await
    .unwrap();
    assert!(!status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert!(error_line.contains("Kubernetes"), "{error_line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn github_down_at_start_is_not_ready_and_recovers_by_itself() {
    // The port GitHub will answer on, closed for now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::binary::example("github.yaml");
    let gh_url = format!("http://{addr}");
    set(&mut config, "forge.github.api_url", json!(gh_url));
    set(&mut config, "forge.github.owner", json!(fake_github::OWNER));
    set(&mut config, "forge.github.repo", json!(fake_github::REPO));
    set(&mut config, "forge.github.reconcile_seconds", json!(1));
    set(&mut config, "forge.github.retry_base_ms", json!(10));
    set(&mut config, "forge.github.request_timeout_ms", json!(2000));
    set(
        &mut config,
        "gitops.remote",
        json!(format!("{gh_url}/{}/{}.git", fake_github::OWNER, fake_github::REPO)),
    );
    config["forge"]["github"].as_object_mut().unwrap().remove("app_id");
    std::fs::write(dir.path().join("github-token"), fake_github::TOKEN).unwrap();
    std::fs::write(dir.path().join("webhook-secret"), fake_github::SECRET).unwrap();
    set(
        &mut config,
        "forge.github.token_file",
        json!(dir.path().join("github-token").display().to_string()),
    );
    set(
        &mut config,
        "forge.github.webhook_secret_file",
        json!(dir.path().join("webhook-secret").display().to_string()),
    );
    let mut p = Process::start(dir.path(), config, &token_env());

    let not_ready = eventually(60, "/readyz to say GitHub is unreachable", || async {
        let resp = reqwest::get(format!("{}/readyz", p.url)).await.ok()?;
        let status = resp.status();
        let body: Value = resp.json().await.ok()?;
        (status == 503 && body["checks"]["forge"]["ready"] == false && body["checks"]["forge"]["detail"] != "starting")
            .then_some(body)
    })
    .await;
    assert_eq!(not_ready["ready"], false);
    assert_eq!(not_ready["checks"]["store"]["ready"], true, "{not_ready:#}");

    // GitHub comes back on the same address: Registrar is ready without a restart.
    let gh = FakeGithub::start_on(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    let ready = p.wait_ready().await;
    assert_eq!(ready["checks"]["forge"]["ready"], true, "{ready:#}");
    assert!(
        gh.requests().iter().any(|(_, path)| path.contains("/labels")),
        "it talked to GitHub"
    );
    assert!(p.exited().is_none());
    assert!(!p.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_github_token_is_shown_not_ready_naming_the_cause() {
    let gh = FakeGithub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::binary::example("github.yaml");
    point_at_github(&mut config, dir.path(), &gh);
    config["forge"]["github"].as_object_mut().unwrap().remove("app_id");
    std::fs::write(dir.path().join("github-token"), "ghp_not_a_token_github_knows").unwrap();
    set(
        &mut config,
        "forge.github.token_file",
        json!(dir.path().join("github-token").display().to_string()),
    );
    let mut p = Process::start(dir.path(), config, &token_env());
    let body = eventually(60, "/readyz to name the bad credentials", || async {
        let resp = reqwest::get(format!("{}/readyz", p.url)).await.ok()?;
        let body: Value = resp.json().await.ok()?;
        body["checks"]["forge"]["detail"]
            .as_str()
            .filter(|d| d.contains("Bad credentials") || d.contains("401"))?;
        Some(body)
    })
    .await;
    assert_eq!(body["ready"], false, "{body:#}");
    assert!(p.exited().is_none(), "a bad token is a not-ready state, not a crash");
    assert!(!p.log().contains("panicked"));
}
