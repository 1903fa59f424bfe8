//! The discovery action (`deploy/discovery/registrar-discover.sh`), run for real with a
//! recorded `lshw` output, against a real Registrar: it reports, retries while the server is
//! down, gives up on a refusal, and waits for the review to reboot or power off.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

/// A directory with an `lshw` that prints a recorded server's output.
fn stub_lshw(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fixture = shared().join("fixtures/lshw/supermicro-ssg-6029p-x11dph-t.json");
    let script = bin.join("lshw");
    std::fs::write(&script, format!("#!/bin/sh\ncat '{}'\n", fixture.display())).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn script(dir: &Path, url: &str, token: &str, mac: &str) -> Command {
    let bin = stub_lshw(dir);
    let mut cmd = Command::new("sh");
    cmd.arg(manifest_dir().join("deploy/discovery/registrar-discover.sh"))
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("REGISTRAR_URL", url)
        .env("REPORT_TOKEN", token)
        .env("MAC", mac)
        .env("POLL_SECONDS", "1")
        .env("MAX_WAIT_SECONDS", "60")
        .env("REBOOT_CMD", format!("echo rebooted > '{}'", dir.join("outcome").display()))
        .env("POWEROFF_CMD", format!("echo powered-off > '{}'", dir.join("outcome").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

async fn finish(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_then_reboots_when_approved_or_powers_off_when_rejected() {
    let r = Registrar::start().await;
    for (mac, verdict, expected) in [("ac:1f:6b:dc:19:c2", "approve", "rebooted"), ("ac:1f:6b:dc:19:c3", "reject", "powered-off")] {
        let dir = tempfile::tempdir().unwrap();
        let child = script(dir.path(), &r.url, REPORT_TOKEN, mac).spawn().unwrap();
        r.wait_for_state(mac, "proposed").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!dir.path().join("outcome").exists(), "it waits for the review");
        let resp = r.post(&format!("/api/v1/machines/{mac}/{verdict}"), json!({})).await;
        assert_eq!(resp.status(), 200);
        let out = finish(child).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read_to_string(dir.path().join("outcome")).unwrap().trim(), expected);
        let m = r.machine(mac).await.unwrap();
        assert_eq!(m["machine"]["facts"]["serial"], "A401031X0502795", "the recorded lshw went through");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_while_registrar_is_down_and_gives_up_on_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let child = script(dir.path(), &url, REPORT_TOKEN, "ac:1f:6b:dc:19:c2").env("RETRIES", "6").spawn().unwrap();
    // Registrar comes up a moment later (the real binary, on that port).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut server = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .arg("serve")
        .env("REGISTRAR_STATE_DIR", dir.path().join("state"))
        .env("REGISTRAR_TEMPLATES_DIR", manifest_dir().join("hardware-templates"))
        .env("REGISTRAR_LISTEN", format!("127.0.0.1:{port}"))
        .env("REGISTRAR_REPORT_TOKEN", REPORT_TOKEN)
        .env("REGISTRAR_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env_remove("REGISTRAR_CRASH_AT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_for_state(&client, &url, "ac:1f:6b:dc:19:c2", "proposed").await;
    client.post(format!("{url}/api/v1/machines/ac:1f:6b:dc:19:c2/approve")).bearer_auth(OPERATOR_TOKEN).json(&json!({})).send().await.unwrap();
    let out = finish(child).await;
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("retrying"), "{log}");
    assert_eq!(std::fs::read_to_string(dir.path().join("outcome")).unwrap().trim(), "rebooted");

    // A wrong token is a permanent failure: exit 2 at once, no retries.
    let other = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = finish(script(other.path(), &url, "not-the-token-000000000", "ac:1f:6b:dc:19:c4").spawn().unwrap()).await;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(5));
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn the_discovery_template_is_a_valid_tinkerbell_template() {
    let text = std::fs::read_to_string(manifest_dir().join("deploy/discovery/template.yaml")).unwrap();
    let obj: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    let errors = UpstreamSchema::load("tinkerbell.org_templates.yaml").errors(&obj);
    assert!(errors.is_empty(), "{errors:?}");
    // Its body is a Tinkerbell workflow definition whose worker is the agent ID.
    let data: serde_json::Value = yaml_serde::from_str(obj["spec"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["tasks"][0]["worker"], "{{.device_1}}");
    assert_eq!(data["tasks"][0]["actions"][0]["environment"]["REPORT_TOKEN"], "{{.report_token}}");
}
