//! The GitOps remote over smart HTTP with credentials, as a real git host serves it.

mod support;

use serde_json::json;
use support::git_http::GitHttpServer;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn proposals_and_approvals_over_smart_http() {
    let hosting = tempfile::tempdir().unwrap();
    registrar::propose::git::init_local_remote(&hosting.path().join("hw.git"), "main").unwrap();
    let server = GitHttpServer::start(hosting.path().to_path_buf(), "registrar", "s3cret-password").await;
    let url = server.url("hw.git");
    let r = Registrar::start_with(|c| {
        c.gitops.remote = url.clone();
        c.gitops.username = Some("registrar".into());
        c.gitops.password = Some("s3cret-password".to_string().into());
    })
    .await;
    let remote = Repo::at(&hosting.path().join("hw.git"));
    let mac = "b4:96:91:70:26:c8";
    r.report(&report_body(mac, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json"))).await;
    r.wait_for_state(mac, "proposed").await;
    assert!(remote.read("registrar/b4-96-91-70-26-c8", "hardware/d5s0r8000105.yaml").is_some());
    let resp = r.post(&format!("/api/v1/machines/{mac}/approve"), json!({})).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(remote.read("main", "hardware/d5s0r8000105.yaml").is_some());
    assert_eq!(remote.branches(), vec!["main".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_leave_the_report_queued_with_a_readable_error() {
    let hosting = tempfile::tempdir().unwrap();
    registrar::propose::git::init_local_remote(&hosting.path().join("hw.git"), "main").unwrap();
    let server = GitHttpServer::start(hosting.path().to_path_buf(), "registrar", "right-password").await;
    let url = server.url("hw.git");
    let r = Registrar::start_with(|c| {
        c.gitops.remote = url.clone();
        c.gitops.username = Some("registrar".into());
        c.gitops.password = Some("wrong-password".to_string().into());
    })
    .await;
    let mac = "b4:96:91:70:26:c8";
    assert_eq!(r.report(&report_body(mac, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json"))).await.status(), 202);
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = r.machine(mac).await.unwrap();
        if last["machine"]["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let error = last["machine"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("credentials"), "{last:#}");
    assert!(!error.contains("wrong-password"), "a secret leaked into an error");
    assert_eq!(last["machine"]["pending"], true, "the work stays queued for a retry");
    assert_eq!(last["machine"]["state"], "reported");
    // What an operator checks when "nothing happens".
    let status = r.get("/api/v1/status").await;
    assert_eq!(status["queue"]["length"], 1);
    assert!(status["queue"]["oldest_since"].is_string());
}
