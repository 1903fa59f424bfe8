//! Issue 20 on the shipped binary: a GitOps repository reached over SSH with a deploy key,
//! as Flux bootstraps them, served by a real OpenSSH server (Debian's `sshd`) on loopback.
//! The server's host key is pinned by a known_hosts file: a proposal and its merge go over
//! SSH; with another key pinned, nothing is fetched or pushed, and readiness says why.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::json;
use support::binary::{Process, eventually, example, free_port, listen_on, set, token_env};
use support::journey::{post_report, state_reached};
use support::*;

const SSHD: &str = "/usr/sbin/sshd";
const MAC: &str = "0c:c4:7a:20:00:01";

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "registrar-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// An OpenSSH server on loopback that lets the current user in with `client_key` only.
struct Sshd {
    child: Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd(dir: &Path, client_key: &Path) -> Sshd {
    keygen(&dir.join("host_key"));
    std::fs::copy(client_key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
    let port = free_port();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    // OpenSSH's privilege separation directory, which Debian creates only for its service.
    let _ = std::fs::create_dir_all("/run/sshd");
    // Owned by `Sshd` at once, whose drop kills and reaps it on every path.
    let server = Sshd {
        child: Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sshd"),
        port,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("sshd did not listen on {port}");
}

/// known_hosts pinning `host_pub` (a `.pub` file) for the server on `port`.
fn known_hosts(path: &Path, port: u16, host_pub: &Path) {
    let key = std::fs::read_to_string(host_pub).unwrap();
    let mut fields = key.split_whitespace();
    let (kind, blob) = (fields.next().unwrap(), fields.next().unwrap());
    std::fs::write(
        path,
        format!("# pinned for the test\n[127.0.0.1]:{port} {kind} {blob}\n"),
    )
    .unwrap();
}

fn missing_tools() -> Option<String> {
    if !Path::new(SSHD).exists() {
        return Some("needs OpenSSH's sshd (apt-get install openssh-server)".into());
    }
    Command::new("ssh-keygen")
        .arg("-?")
        .stderr(Stdio::null())
        .status()
        .err()
        .map(|_| "needs ssh-keygen (apt-get install openssh-client)".into())
}

#[tokio::test(flavor = "multi_thread")]
async fn proposals_go_over_ssh_with_a_deploy_key_and_a_pinned_host_key() {
    if skip_unless_ci(
        "proposals_go_over_ssh_with_a_deploy_key_and_a_pinned_host_key",
        missing_tools(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let deploy_key = keys.join("deploy_key");
    keygen(&deploy_key);
    let server = sshd(&keys, &deploy_key);
    let bare = dir.path().join("srv/gitops.git");
    registrar::propose::git::init_local_remote(&bare, "main").unwrap();
    let pinned = keys.join("known_hosts");
    known_hosts(&pinned, server.port, &keys.join("host_key.pub"));

    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let mut config = example("local.yaml");
    let url = listen_on(&mut config);
    set(
        &mut config,
        "gitops.remote",
        json!(format!("ssh://{user}@127.0.0.1:{}{}", server.port, bare.display())),
    );
    set(
        &mut config,
        "gitops.ssh_key_file",
        json!(deploy_key.display().to_string()),
    );
    set(
        &mut config,
        "gitops.ssh_known_hosts_file",
        json!(pinned.display().to_string()),
    );
    let state = dir.path().join("registrar");
    std::fs::create_dir(&state).unwrap();
    let mut p = Process::start(&state, config.clone(), &token_env());
    p.wait_ready().await;

    // A proposal is pushed over SSH, and its approval merges over SSH.
    assert_eq!(
        post_report(&url, MAC, "supermicro-ssg-6029p-x11dph-t.json")
            .await
            .status(),
        202
    );
    let proposed = state_reached(&p, MAC, "proposed").await;
    let (branch, path) = (
        proposed["proposal"]["branch"].as_str().unwrap().to_string(),
        proposed["proposal"]["path"].as_str().unwrap().to_string(),
    );
    let remote = Repo::at(&bare);
    assert!(remote.read(&branch, &path).is_some(), "the branch is on the SSH server");
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/v1/machines/{MAC}/approve"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"actor": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(remote.read("main", &path).is_some(), "merged on the SSH server");
    assert!(p.stop().success());

    // Another host key pinned (a server that is not the one the operator trusts): refused.
    keygen(&keys.join("impostor"));
    known_hosts(&pinned, server.port, &keys.join("impostor.pub"));
    let head = remote.head("main");
    let mut p = Process::start(&state, config, &token_env());
    let why = eventually(60, "readiness to say the host key is refused", || async {
        let resp = reqwest::Client::new()
            .get(format!("{}/readyz", p.url))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.ok()?;
        let text = body.to_string();
        (status == 503 && text.contains("is not the one gitops.ssh_known_hosts_file pins")).then_some(text)
    })
    .await;
    assert!(why.contains("[127.0.0.1]"), "{why}");
    assert_eq!(remote.head("main"), head, "nothing was pushed");
    assert!(p.stop().success());
}
