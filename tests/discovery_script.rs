//! The discovery action (`deploy/discovery/registrar-discover.sh`), run for real with a
//! recorded `lshw` output, against a real Registrar: it reports, retries while the server is
//! down, gives up on a refusal, and waits for the review to reboot or power off. It also
//! reports `ip -j link`, `dmidecode` and `lldpctl` where they exist (faked here with
//! recorded outputs), and Registrar stores what they say.
//!
//! The script runs with a PATH of only the tools it needs (and the fakes), so a tool the
//! test machine happens to have (its own `ip`) never leaks into a report.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// What the script runs besides the faked tools; linked into the test's own bin directory.
const BASE_TOOLS: &[&str] = &[
    "sh", "curl", "date", "mktemp", "rm", "cat", "sed", "tr", "sleep", "awk", "touch",
];

fn executable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A `bin` directory with the base tools and (unless faked already) an `lshw` that prints a
/// recorded server's output.
fn bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let search = std::env::var("PATH").unwrap_or_default();
    for tool in BASE_TOOLS {
        let found = std::env::split_paths(&search)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        let link = bin.join(tool);
        if !link.exists() {
            std::os::unix::fs::symlink(found, link).unwrap();
        }
    }
    if !bin.join("lshw").exists() {
        let fixture = shared().join("fixtures/lshw/supermicro-ssg-6029p-x11dph-t.json");
        fake(&bin, "lshw", &format!("cat '{}'", fixture.display()));
    }
    bin
}

/// A fake tool: a shell script with this body.
fn fake(bin: &Path, name: &str, body: &str) {
    let path = bin.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    executable(&path);
}

fn script(dir: &Path, url: &str, token: &str, mac: &str) -> Command {
    let bin = bin_dir(dir);
    let mut cmd = Command::new(bin.join("sh"));
    cmd.arg(manifest_dir().join("deploy/discovery/registrar-discover.sh"))
        .env("PATH", &bin)
        .env("REGISTRAR_URL", url)
        .env("REPORT_TOKEN", token)
        .env("MAC", mac)
        .env("POLL_SECONDS", "1")
        .env("MAX_WAIT_SECONDS", "60")
        .env(
            "REBOOT_CMD",
            format!("echo rebooted > '{}'", dir.join("outcome").display()),
        )
        .env(
            "POWEROFF_CMD",
            format!("echo powered-off > '{}'", dir.join("outcome").display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

async fn finish(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_then_reboots_when_approved_or_powers_off_when_rejected() {
    let r = Registrar::start().await;
    for (mac, verdict, expected) in [
        ("ac:1f:6b:dc:19:c2", "approve", "rebooted"),
        ("ac:1f:6b:dc:19:c3", "reject", "powered-off"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let child = script(dir.path(), &r.url, REPORT_TOKEN, mac).spawn().unwrap();
        r.wait_for_state(mac, "proposed").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!dir.path().join("outcome").exists(), "it waits for the review");
        let resp = r.post(&format!("/api/v1/machines/{mac}/{verdict}"), json!({})).await;
        assert_eq!(resp.status(), 200);
        let out = finish(child).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("outcome")).unwrap().trim(),
            expected
        );
        let m = r.machine(mac).await.unwrap();
        assert_eq!(
            m["machine"]["facts"]["serial"], "A401031X0502795",
            "the recorded lshw went through"
        );
        // No ip, dmidecode, lldpctl or ipmitool here: lshw's facts alone.
        assert!(m["machine"]["facts"].get("lldp").is_none());
        assert_eq!(m["machine"]["facts"]["nics"].as_array().unwrap().len(), 4);
    }
}

/// The recorded server with a placeholder serial, and fakes of `ip`, `dmidecode` and
/// `lldpctl` printing what such a server prints. The serial dmidecode gives has a quote, a
/// backslash, a tab, a control character and a second line (a second baseboard).
fn fake_probes(dir: &Path) -> PathBuf {
    let bin = bin_dir(dir);
    let mut lshw = lshw("supermicro-ssg-6029p-x11dph-t.json");
    lshw["serial"] = json!("To Be Filled By O.E.M.");
    let lshw_path = dir.join("lshw.json");
    std::fs::write(&lshw_path, lshw.to_string()).unwrap();
    fake(&bin, "lshw", &format!("cat '{}'", lshw_path.display()));
    let fixtures = manifest_dir().join("tests/fixtures/discovery");
    fake(
        &bin,
        "ip",
        &format!(
            "case \"$*\" in\n  '-j -d link show') cat '{}' ;;\n  *) exit 1 ;;\nesac",
            fixtures.join("ip-j-d-link.json").display()
        ),
    );
    fake(
        &bin,
        "dmidecode",
        r#"echo '# SMBIOS implementations newer than version 3.2.0 are not'
echo '# fully supported by this version of dmidecode.'
case "$2" in
  system-manufacturer) echo 'Supermicro' ;;
  system-product-name) echo 'To be filled by O.E.M.' ;;
  system-serial-number) printf 'S4"01\\X\t\001Y\nsecond-line\n' ;;
  system-uuid) echo '969EBC00-FC71-11E9-8000-AC1F6BDC19C2' ;;
  chassis-serial-number) echo 'C8160KL12A34567' ;;
  baseboard-*) printf 'VM194S600123\nVM194S600124\n' ;;
  *) echo "Invalid string keyword: $2" >&2; exit 2 ;;
esac"#,
    );
    fake(
        &bin,
        "lldpctl",
        &format!(
            "[ \"$*\" = '-f json' ] || exit 1\ncat '{}'",
            fixtures.join("lldpctl-f-json.json").display()
        ),
    );
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_link_state_dmi_identity_and_lldp_neighbors_from_the_tools_it_finds() {
    let r = Registrar::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake_probes(dir.path());
    let mac = "ac:1f:6b:dc:19:c2";
    let child = script(dir.path(), &r.url, REPORT_TOKEN, mac).spawn().unwrap();
    let m = r.wait_for_state(mac, "proposed").await;
    let facts = &m["machine"]["facts"];

    // dmidecode: the serial lshw only had a placeholder for, first line, escaped on the way.
    assert_eq!(facts["serial"], "S4\"01\\X Y", "{facts:#}");
    assert_eq!(facts["vendor"], "Supermicro");
    assert_eq!(facts["uuid"], "969ebc00-fc71-11e9-8000-ac1f6bdc19c2", "lshw's own UUID");

    // ip -j -d link: live link state, the USB NIC lshw missed, nothing virtual.
    let nics: Vec<(String, String, Value)> = facts["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["mac"].as_str().unwrap().to_string(),
                n["link"].clone(),
            )
        })
        .collect();
    let link = |name: &str| {
        nics.iter()
            .find(|n| n.0 == name)
            .unwrap_or_else(|| panic!("{name} in {nics:?}"))
            .2
            .clone()
    };
    assert_eq!(link("eno1"), json!(true), "lshw said no link; ip says UP");
    assert_eq!(link("eno2"), json!(false));
    assert_eq!(link("enp216s0f0"), json!(true));
    assert_eq!(
        link("enp216s0f1"),
        json!(false),
        "the backup member, matched by name (its own MAC is only in permaddr)"
    );
    assert_eq!(link("enx00e04c680001"), json!(true));
    assert_eq!(nics.len(), 5, "no lo, bond0, docker0 or veth: {nics:?}");

    // lldpctl: where it is cabled.
    assert_eq!(
        facts["lldp"],
        json!([
            {"interface": "eno1", "switch": "leaf-01.dc1", "port": "Ethernet12"},
            {"interface": "enp216s0f0", "switch": "44:4c:a8:12:00:02", "port": "Ethernet49/1"}
        ])
    );
    // And the proposal says so, escaped like every fact.
    let summary = m["proposal"]["summary"].as_str().unwrap();
    assert!(summary.contains("**Cabled to:** leaf\\-01\\.dc1 port Ethernet12 (eno1); 44\\:4c\\:a8\\:12\\:00\\:02 port Ethernet49/1 (enp216s0f0)"), "{summary}");

    assert_eq!(
        r.post(&format!("/api/v1/machines/{mac}/approve"), json!({}))
            .await
            .status(),
        200
    );
    let out = finish(child).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_printing_garbage_never_costs_the_report() {
    let r = Registrar::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_probes(dir.path());
    // lldpctl dies half-way through its JSON: Registrar refuses the body as malformed, and
    // the script sends lshw's facts alone.
    fake(
        &bin,
        "lldpctl",
        r#"printf '{"lldp": {"interface": {"eno1": {"chassis": '"#,
    );
    let mac = "ac:1f:6b:dc:19:c2";
    let child = script(dir.path(), &r.url, REPORT_TOKEN, mac).spawn().unwrap();
    let m = r.wait_for_state(mac, "proposed").await;
    assert!(m["machine"]["facts"].get("lldp").is_none());
    assert!(
        m["machine"]["facts"]["serial"].is_null(),
        "lshw's placeholder, and no dmidecode: {:#}",
        m["machine"]["facts"]
    );
    assert_eq!(
        r.post(&format!("/api/v1/machines/{mac}/reject"), json!({}))
            .await
            .status(),
        200
    );
    let out = finish(child).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("report refused (400)") && log.contains("sending lshw's facts alone"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_lldpd_for_a_while_when_none_runs() {
    let r = Registrar::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_probes(dir.path());
    // lldpctl answers only while an lldpd runs; the fake lldpd runs until it is stopped.
    let running = dir.path().join("lldpd.running");
    let stopped = dir.path().join("lldpd.stopped");
    fake(
        &bin,
        "lldpctl",
        &format!(
            "[ -e '{}' ] || {{ echo 'unable to connect to socket' >&2; exit 1; }}\ncat '{}'",
            running.display(),
            manifest_dir()
                .join("tests/fixtures/discovery/lldpctl-f-json.json")
                .display()
        ),
    );
    fake(
        &bin,
        "lldpd",
        &format!(
            "[ \"$*\" = '-d' ] || exit 1\ntrap 'touch \"{}\"; exit 0' TERM\ntouch '{}'\nwhile :; do sleep 0.1; done",
            stopped.display(),
            running.display()
        ),
    );
    let mac = "ac:1f:6b:dc:19:c2";
    let child = script(dir.path(), &r.url, REPORT_TOKEN, mac)
        .env("LLDP_WAIT_SECONDS", "1")
        .spawn()
        .unwrap();
    let m = r.wait_for_state(mac, "proposed").await;
    assert_eq!(m["machine"]["facts"]["lldp"][0]["switch"], "leaf-01.dc1");
    assert!(stopped.exists(), "lldpd was stopped after listening");
    assert_eq!(
        r.post(&format!("/api/v1/machines/{mac}/approve"), json!({}))
            .await
            .status(),
        200
    );
    let out = finish(child).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && log.contains("starting lldpd for 1s"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_while_registrar_is_down_and_gives_up_on_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let child = script(dir.path(), &url, REPORT_TOKEN, "ac:1f:6b:dc:19:c2")
        .env("RETRIES", "6")
        .spawn()
        .unwrap();
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
    client
        .post(format!("{url}/api/v1/machines/ac:1f:6b:dc:19:c2/approve"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let out = finish(child).await;
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("retrying"), "{log}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("outcome")).unwrap().trim(),
        "rebooted"
    );

    // A wrong token is a permanent failure: exit 2 at once, no retries.
    let other = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = finish(
        script(other.path(), &url, "not-the-token-000000000", "ac:1f:6b:dc:19:c4")
            .spawn()
            .unwrap(),
    )
    .await;
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
    assert_eq!(
        data["tasks"][0]["actions"][0]["environment"]["REPORT_TOKEN"],
        "{{.report_token}}"
    );
}

#[test]
fn the_reinventory_template_reports_without_rebooting_then_reboots_last() {
    let text = std::fs::read_to_string(manifest_dir().join("deploy/discovery/reinventory-template.yaml")).unwrap();
    let obj: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    let errors = UpstreamSchema::load("tinkerbell.org_templates.yaml").errors(&obj);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        obj["metadata"]["name"], "registrar-reinventory",
        "cluster.discovery.reinventory_template's default"
    );
    let data: serde_json::Value = yaml_serde::from_str(obj["spec"]["data"].as_str().unwrap()).unwrap();
    let actions = data["tasks"][0]["actions"].as_array().unwrap();
    // The discovery action exits on "reboot" so that the Workflow ends and netboot is
    // switched off before the last action reboots the machine.
    assert_eq!(actions[0]["environment"]["REBOOT_CMD"], "true");
    assert_eq!(actions[0]["environment"]["REPORT_TOKEN"], "{{.report_token}}");
    assert_eq!(actions.last().unwrap()["command"][0], "reboot");
}
