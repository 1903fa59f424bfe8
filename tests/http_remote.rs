//! The GitOps remote over smart HTTP with credentials, as a real git host serves it.

mod support;

use serde_json::json;
use support::git_http::GitHttpServer;
use support::*;

/// A git host serving `hw.git` over smart HTTP that takes `registrar`:`server_password`,
/// and a Registrar pushing to it with `client_password`.
async fn hosted(server_password: &str, client_password: &str) -> (tempfile::TempDir, GitHttpServer, Registrar) {
    let hosting = tempfile::tempdir().unwrap();
    registrar::propose::git::init_local_remote(&hosting.path().join("hw.git"), "main").unwrap();
    let server = GitHttpServer::start(hosting.path().to_path_buf(), "registrar", server_password).await;
    let (url, password) = (server.url("hw.git"), client_password.to_string());
    let r = Registrar::start_with(move |c| {
        c.gitops.remote = url;
        c.gitops.username = Some("registrar".into());
        c.gitops.password = Some(password.into());
    })
    .await;
    (hosting, server, r)
}

#[tokio::test(flavor = "multi_thread")]
async fn proposals_and_approvals_over_smart_http() {
    let (hosting, _server, r) = hosted("s3cret-password", "s3cret-password").await;
    let remote = Repo::at(&hosting.path().join("hw.git"));
    let mac = "b4:96:91:70:26:c8";
    r.report(&report_body(mac, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")))
        .await;
    r.wait_for_state(mac, "proposed").await;
    assert!(
        remote
            .read("registrar/b4-96-91-70-26-c8", "hardware/d5s0r8000105.yaml")
            .is_some()
    );
    let resp = r.post(&format!("/api/v1/machines/{mac}/approve"), json!({})).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(remote.read("main", "hardware/d5s0r8000105.yaml").is_some());
    assert_eq!(remote.branches(), vec!["main".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_leave_the_report_queued_with_a_readable_error() {
    let (_hosting, _server, r) = hosted("right-password", "wrong-password").await;
    let mac = "b4:96:91:70:26:c8";
    assert_eq!(
        r.report(&report_body(mac, lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")))
            .await
            .status(),
        202
    );
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

/// Branch updates over HTTP are compare-and-swap: a person's push made after Registrar last
/// read the branch is refused, not overwritten, and Registrar sees it on its next fetch.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_made_since_registrar_looked_is_never_overwritten() {
    use registrar::propose::git::{GitError, GitRepo, GitSettings, Password};
    let hosting = tempfile::tempdir().unwrap();
    registrar::propose::git::init_local_remote(&hosting.path().join("hw.git"), "main").unwrap();
    let server = GitHttpServer::start(hosting.path().to_path_buf(), "registrar", "pw").await;
    let remote = Repo::at(&hosting.path().join("hw.git"));
    let (url, mirror) = (server.url("hw.git"), hosting.path().join("mirror.git"));
    let pusher = Repo::at(&remote.path);
    let outcome = tokio::task::spawn_blocking(move || {
        let git = GitRepo::open(
            &mirror,
            GitSettings {
                remote_url: url,
                base: "main".into(),
                author_name: "Registrar".into(),
                author_email: "registrar@example.com".into(),
                username: Some("registrar".into()),
                password: Password::fixed(Some("pw".to_string().into())),
                ssh: None,
            },
        )
        .unwrap();
        git.fetch().unwrap();
        let branch = "registrar/b4-96-91-70-26-c8";
        let base = git.base_head().unwrap();
        git.publish(
            branch,
            &[("hardware/a.yaml", Some(&b"first\n"[..]))],
            base,
            "first",
            |_| Ok(()),
        )
        .unwrap();
        // Someone pushes to the branch; Registrar has not fetched since.
        let theirs = pusher.push_on_top(branch, "THEIRS.md", "theirs\n");
        let second = git.publish(
            branch,
            &[("hardware/a.yaml", Some(&b"second\n"[..]))],
            base,
            "second",
            |_| Ok(()),
        );
        let deleted = git.delete_branch(branch);
        git.fetch().unwrap();
        (theirs, second, deleted, git.branch_head(branch))
    })
    .await
    .unwrap();
    let (theirs, second, deleted, seen) = outcome;
    for (what, result) in [("publish", second.map(|_| ())), ("delete", deleted)] {
        match result {
            Err(GitError::Refused { message, .. }) => {
                assert!(message.contains("changed since Registrar read it"), "{message}")
            }
            other => panic!("{what} over a newer push: {other:?}"),
        }
    }
    assert_eq!(
        remote.head("registrar/b4-96-91-70-26-c8"),
        Some(theirs),
        "the person's commit stays"
    );
    assert_eq!(
        remote.read("registrar/b4-96-91-70-26-c8", "hardware/a.yaml").as_deref(),
        Some("first\n")
    );
    assert_eq!(seen, Some(theirs), "the next fetch shows Registrar the change");
}
