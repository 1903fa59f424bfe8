//! A real process, killed between "stored" and "pushed" (and between "pushed" and
//! "recorded"), restarted on the same state: the proposal is finished, never doubled.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(state: &std::path::Path, port: u16, crash_at: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registrar"));
    cmd.arg("serve")
        .env("REGISTRAR_STATE_DIR", state)
        .env("REGISTRAR_TEMPLATES_DIR", manifest_dir().join("hardware-templates"))
        .env("REGISTRAR_LISTEN", format!("127.0.0.1:{port}"))
        .env("REGISTRAR_REPORT_TOKEN", REPORT_TOKEN)
        .env("REGISTRAR_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env_remove("REGISTRAR_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match crash_at {
        Some(point) => cmd.env("REGISTRAR_CRASH_AT", point),
        None => cmd.env_remove("REGISTRAR_CRASH_AT"),
    };
    cmd.spawn().unwrap()
}

async fn wait_healthy(client: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {url} never became healthy");
}

/// The discovery action's report; stored (202) before any side effect.
async fn report(url: &str, mac: &str) {
    let resp = support::journey::post_report(url, mac, "supermicro-ssg-6029p-x11dph-t.json").await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}

async fn crash_then_restart(point: &str) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mac = "ac:1f:6b:dc:19:c2";
    let branch = "registrar/ac-1f-6b-dc-19-c2";

    let mut child = spawn(&state, port, Some(point));
    wait_healthy(&client, &url).await;
    report(&url, mac).await;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the crash hook must have killed the server");

    let remote = Repo::at(&state.join("gitops.git"));
    let pushed_before = remote.head(branch);
    match point {
        "before-push" => assert_eq!(pushed_before, None),
        _ => assert!(pushed_before.is_some()),
    }

    let mut child = spawn(&state, port, None);
    wait_healthy(&client, &url).await;
    let m = wait_for_state(&client, &url, mac, "proposed").await;
    let head = remote.head(branch).expect("the restart finished the push");
    if let Some(before) = pushed_before {
        assert_eq!(head, before, "the restart must not push a second commit");
    }
    assert_eq!(remote.commits_ahead("main", branch), 1);
    assert_eq!(m["proposal"]["head"], head.to_string());
    let proposals: serde_json::Value = client
        .get(format!("{url}/api/v1/proposals"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(proposals["proposals"].as_array().unwrap().len(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_storing_before_pushing() {
    crash_then_restart("before-push").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_pushing_before_recording() {
    crash_then_restart("after-push").await;
}

/// SIGKILL between git's `<ref>.lock` and its rename leaves the lock behind in the embedded
/// default's repository; the restart clears it instead of failing that branch for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_git_lock_left_by_a_kill_is_cleared_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mac = "ac:1f:6b:dc:19:c2";
    let branch = "registrar/ac-1f-6b-dc-19-c2";

    let mut child = spawn(&state, port, None);
    wait_healthy(&client, &url).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let heads = state.join("gitops.git/refs/heads/registrar");
    std::fs::create_dir_all(&heads).unwrap();
    std::fs::write(heads.join("ac-1f-6b-dc-19-c2.lock"), "").unwrap();

    let mut child = spawn(&state, port, None);
    wait_healthy(&client, &url).await;
    report(&url, mac).await;
    let m = wait_for_state(&client, &url, mac, "proposed").await;
    let remote = Repo::at(&state.join("gitops.git"));
    assert_eq!(
        m["proposal"]["head"],
        remote.head(branch).expect("the branch was pushed").to_string()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
