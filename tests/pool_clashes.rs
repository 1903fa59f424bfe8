//! Pools that clash with the repository stop the start (issue 16, bad input), on the
//! shipped binary: a pool whose ranges would hand out an address that a Hardware on the
//! base branch — one Registrar did not render — already holds is a configuration error.
//! `registrar serve` exits naming the file, the key and the clash, and `registrar check`
//! says the same; excluded, it starts. A Hardware Registrar rendered (its
//! `registrar.dev/mac` label) holds its address by design and is no clash, even with the
//! store lost.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::binary::{Process, binary, example, point_at_github, set, token_env};
use support::fake_github::FakeGithub;

const HAND_MADE: &str = r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata:
  name: old-db
  namespace: tinkerbell
spec:
  interfaces:
    - dhcp:
        mac: 0c:c4:7a:00:01:01
        ip:
          address: 10.0.10.15
          netmask: 255.255.255.0
"#;

/// As Registrar rendered it once (its store since lost): labelled with its MAC.
const REGISTRARS: &str = r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata:
  name: node-7
  namespace: tinkerbell
  labels:
    registrar.dev/mac: 0c-c4-7a-00-01-02
spec:
  interfaces:
    - dhcp:
        mac: 0c:c4:7a:00:01:02
        ip:
          address: 10.0.10.16
          netmask: 255.255.255.0
"#;

#[tokio::test(flavor = "multi_thread")]
async fn pools_that_would_hand_out_a_held_address_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    gh.repo().push_on_top("main", "inventory/rack1/old-db.yaml", HAND_MADE);
    gh.repo().push_on_top("main", "hardware/node-7.yaml", REGISTRARS);
    let mut config = example("github.yaml");
    point_at_github(&mut config, dir.path(), &gh);
    set(
        &mut config,
        "ipam",
        json!({"pools": [{"name": "rack1", "cidr": "10.0.10.0/24", "ranges": ["10.0.10.11-10.0.10.20"], "gateway": "10.0.10.1"}]}),
    );
    *gh.hook_url.lock().unwrap() = Some("http://127.0.0.1:9/webhooks/github".into());
    let mut p = Process::start(dir.path(), config, &token_env());
    let mut status = None;
    for _ in 0..600 {
        status = p.exited();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.unwrap_or_else(|| panic!("it started despite the clash:\n{}", p.log()));
    assert!(!status.success());
    let clash = "10.0.10.15 is held by Hardware \"old-db\" in inventory/rack1/old-db.yaml on the base branch, and ipam.pools[0].ranges (pool \"rack1\") would hand it out: add it to ipam.pools[0].exclude";
    let log = p.log();
    assert!(log.contains(clash), "{log}");
    assert!(log.contains("nothing was started"), "{log}");
    assert!(
        !log.contains("10.0.10.16 is held"),
        "Registrar's own Hardware is no clash:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // `registrar check` says the same, from the copy the start fetched.
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&p.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(clash),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Excluded, it starts; and check agrees.
    let mut written: Value = yaml_serde::from_str(&std::fs::read_to_string(&p.config).unwrap()).unwrap();
    set(
        &mut written,
        "ipam.pools",
        json!([{"name": "rack1", "cidr": "10.0.10.0/24", "ranges": ["10.0.10.11-10.0.10.20"], "exclude": ["10.0.10.15"], "gateway": "10.0.10.1"}]),
    );
    std::fs::write(&p.config, yaml_serde::to_string(&written).unwrap()).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&p.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("clash with no Hardware"));
    p.start_again().await;
    assert!(p.stop().success());
}
