//! The shipped binary's life as an operator runs it: as an unprivileged user whose only
//! writable directory is its state directory; SIGTERM in the middle of a burst of reports
//! loses none of them; a second instance on the same state directory refuses to start; an
//! online backup restores.
//!
//! The binary is `REGISTRAR_TEST_BINARY` when set (`.ci/run` builds the release binary and
//! points it there), else the one `cargo test` built. Running as another user needs root;
//! without it that part runs as the current user and says so.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const REPORT_TOKEN: &str = "lifecycle-report-token-0123456789";
const OPERATOR_TOKEN: &str = "lifecycle-operator-token-0123456789";
const NOBODY: u32 = 65534;

fn binary() -> PathBuf {
    match std::env::var_os("REGISTRAR_TEST_BINARY") {
        Some(p) => PathBuf::from(p),
        None => {
            eprintln!(
                "note: REGISTRAR_TEST_BINARY is unset; testing the debug binary cargo built (.ci/run tests the release one)"
            );
            PathBuf::from(env!("CARGO_BIN_EXE_registrar"))
        }
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    url: String,
}

/// A config file and a state directory; with root, the state directory belongs to nobody
/// and everything else stays root's and read-only to it.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    if is_root() {
        nix::unistd::chown(&state, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware-templates");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ntemplates_dir: {}\nserver:\n  listen: 127.0.0.1:{port}\n  shutdown_grace_seconds: 10\n",
            state.display(),
            templates.display()
        ),
    )
    .unwrap();
    Setup {
        dir,
        config,
        state,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn start(s: &Setup, log: &str) -> Child {
    let log = std::fs::File::create(s.dir.path().join(log)).unwrap();
    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--config"])
        .arg(&s.config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("REGISTRAR_REPORT_TOKEN", REPORT_TOKEN)
        .env("REGISTRAR_OPERATOR_TOKEN", OPERATOR_TOKEN)
        // The working directory is not writable to it: nothing may be written there.
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(log);
    if is_root() {
        // std drops root's supplementary groups when it changes the uid.
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd.spawn().expect("the binary starts")
}

async fn wait_healthy(url: &str, child: &mut Child, log: &Path) {
    for _ in 0..300 {
        if reqwest::get(format!("{url}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "registrar exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "registrar did not become healthy: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn terminate(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < within, "still running {within:?} after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mac(i: usize) -> String {
    format!("02:17:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)
}

fn report(i: usize) -> Value {
    json!({"mac": mac(i), "specs": {"class": "system", "vendor": "Lifecycle", "product": "Burst", "serial": format!("LC{i:05}"), "children": []}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unprivileged_sigterm_in_a_burst_loses_no_report_and_a_second_instance_is_refused() {
    if !is_root() {
        assert!(
            std::env::var_os("REGISTRAR_CI").is_none(),
            "CI runs as root, so the unprivileged run is tested there"
        );
        eprintln!("note: not root, so Registrar runs as the current user, not as nobody (CI runs as root)");
    }
    let s = setup();
    let mut first = start(&s, "first.log");
    wait_healthy(&s.url, &mut first, &s.dir.path().join("first.log")).await;

    // A second instance on the same state directory refuses, naming the first.
    let mut second = start(&s, "second.log");
    let status = wait_exit(&mut second, Duration::from_secs(20));
    assert!(!status.success());
    let why = std::fs::read_to_string(s.dir.path().join("second.log")).unwrap();
    assert!(
        why.contains("another Registrar is running against state directory"),
        "{why}"
    );
    assert!(why.contains(&format!("pid {}", first.id())), "{why}");

    // A burst of reports, and SIGTERM while it is going on.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..400 {
        let (client, url) = (client.clone(), s.url.clone());
        burst.spawn(async move {
            tokio::time::sleep(Duration::from_millis((i / 20) as u64 * 10)).await;
            let r = client
                .post(format!("{url}/api/v1/reports"))
                .bearer_auth(REPORT_TOKEN)
                .json(&report(i))
                .send()
                .await;
            (i, r.map(|r| r.status().is_success()).unwrap_or(false))
        });
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    let signalled = Instant::now();
    terminate(&first);
    let mut accepted = Vec::new();
    while let Some(r) = burst.join_next().await {
        let (i, ok) = r.unwrap();
        if ok {
            accepted.push(i);
        }
    }
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut first, Duration::from_secs(25)))
        .await
        .unwrap();
    assert!(status.success(), "a clean exit on SIGTERM: {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(25),
        "within the pod's grace period"
    );
    assert!(!accepted.is_empty(), "some reports were accepted before the stop");
    assert!(accepted.len() < 400, "the stop came in the middle of the burst");
    eprintln!("{} of 400 reports accepted before the stop", accepted.len());

    // Only the state directory was written to.
    let mut top: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, vec!["config.yaml", "first.log", "second.log", "state"]);
    if is_root() {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(s.state.join("registrar.db")).unwrap().uid(),
            NOBODY,
            "it ran as nobody"
        );
    }

    // After a restart every accepted report is proposed.
    let mut again = start(&s, "again.log");
    wait_healthy(&s.url, &mut again, &s.dir.path().join("again.log")).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = client
            .get(format!("{}/api/v1/machines?state=proposed&limit=1000", s.url))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let proposed: std::collections::HashSet<String> = v["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mac"].as_str().unwrap().to_string())
            .collect();
        let missing: Vec<String> = accepted
            .iter()
            .map(|&i| mac(i))
            .filter(|m| !proposed.contains(m))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} accepted reports not proposed after the restart, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    terminate(&again);
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut again, Duration::from_secs(25)))
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_the_store() {
    let s = setup();
    let mut server = start(&s, "server.log");
    wait_healthy(&s.url, &mut server, &s.dir.path().join("server.log")).await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        assert!(
            client
                .post(format!("{}/api/v1/reports", s.url))
                .bearer_auth(REPORT_TOKEN)
                .json(&report(1000 + i))
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
    }

    // While it runs.
    let backup = tempfile::tempdir().unwrap();
    let file = backup.path().join("registrar-backup.db");
    let out = Command::new(binary())
        .args(["backup", "--config"])
        .arg(&s.config)
        .arg(&file)
        .env("REGISTRAR_REPORT_TOKEN", REPORT_TOKEN)
        .env("REGISTRAR_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("(5 machines"), "{said}");
    // Refuses to overwrite.
    let out = Command::new(binary())
        .args(["backup", "--config"])
        .arg(&s.config)
        .arg(&file)
        .env("REGISTRAR_REPORT_TOKEN", REPORT_TOKEN)
        .env("REGISTRAR_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Lose the store, restore the backup, start again: the machines are back.
    terminate(&server);
    assert!(
        tokio::task::spawn_blocking(move || wait_exit(&mut server, Duration::from_secs(25)))
            .await
            .unwrap()
            .success()
    );
    for f in ["registrar.db", "registrar.db-wal", "registrar.db-shm"] {
        let _ = std::fs::remove_file(s.state.join(f));
    }
    std::fs::copy(&file, s.state.join("registrar.db")).unwrap();
    if is_root() {
        nix::unistd::chown(&s.state.join("registrar.db"), Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    }
    let mut restored = start(&s, "restored.log");
    wait_healthy(&s.url, &mut restored, &s.dir.path().join("restored.log")).await;
    let v: Value = client
        .get(format!("{}/api/v1/machines", s.url))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 5);
    terminate(&restored);
    let mut log = String::new();
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut restored, Duration::from_secs(25)))
        .await
        .unwrap();
    std::fs::File::open(s.dir.path().join("restored.log"))
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{log}");
}
