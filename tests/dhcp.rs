//! DHCP snooping end to end over loopback: datagrams in, machines detected once, registered
//! MACs ignored, and what DHCP revealed flowing into the proposal.

mod support;

use std::time::Duration;

use serde_json::json;
use support::dhcp::request as discover;
use support::*;

async fn start_with_dhcp(edit: impl FnOnce(&mut registrar::config::Config)) -> (Registrar, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.dhcp.listen = "127.0.0.1:0".parse().unwrap();
    config.dhcp.enabled = true;
    edit(&mut config);
    // Bind here to learn the port, then hand the socket over.
    let socket = registrar::sources::dhcp::listener::bind(config.dhcp.listen, None).unwrap();
    let addr = socket.local_addr().unwrap();
    config.dhcp.enabled = false;
    let r = Registrar::start_app(dir, config, move |app| app.with_dhcp_socket(socket)).await;
    (r, addr)
}

async fn wait_for<F: Fn(&serde_json::Value) -> bool>(r: &Registrar, what: &str, f: F) -> serde_json::Value {
    for _ in 0..100 {
        let v = r.get("/api/v1/machines").await;
        if f(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:#}", r.get("/api/v1/machines").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_booting_machine_is_detected_once_and_its_firmware_shapes_the_proposal() {
    let (r, addr) = start_with_dhcp(|_| {}).await;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mac = [0x3c, 0xec, 0xef, 0x4c, 0x4f, 0x54];
    // A machine retries DISCOVER many times while booting.
    for _ in 0..25 {
        sender
            .send_to(
                &discover(
                    mac,
                    b"PXEClient:Arch:00007:UNDI:003016",
                    Some(([10, 0, 0, 1], b"Ethernet1/12")),
                ),
                addr,
            )
            .unwrap();
    }
    let list = wait_for(&r, "detected", |v| {
        v["machines"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    let m = &list["machines"][0];
    assert_eq!(m["mac"], "3c:ec:ef:4c:4f:54");
    assert_eq!(m["state"], "detected");
    assert_eq!(m["source"], "dhcp");
    assert_eq!(m["seen_count"], 1, "debounced to one sighting");
    assert_eq!(m["sighting"]["uefi"], true);
    assert_eq!(m["sighting"]["relay"]["circuit_id"], "Ethernet1/12");

    // Its report arrives (lshw knows nothing of firmware): the Hardware says UEFI, as DHCP did,
    // and the proposal says where it is cabled.
    let mut body = report_body("3c:ec:ef:4c:4f:54", json!({"class": "system", "serial": "NODE1"}));
    body["arch"] = json!("x86_64");
    r.report(&body).await;
    let m = r.wait_for_state("3c:ec:ef:4c:4f:54", "proposed").await;
    let yaml = r
        .remote
        .read("registrar/3c-ec-ef-4c-4f-54", "hardware/node1.yaml")
        .unwrap();
    assert_eq!(documents(&yaml)[0]["spec"]["interfaces"][0]["dhcp"]["uefi"], true);
    let summary = m["proposal"]["summary"].as_str().unwrap();
    assert!(summary.contains("relay 10\\.0\\.0\\.1, port Ethernet1/12"), "{summary}");

    let metrics = metrics_text(&r).await;
    assert!(metrics.contains("registrar_dhcp_packets_total 25"), "{metrics}");
    assert!(metrics.contains("registrar_dhcp_new_macs_total 1"), "{metrics}");
    assert!(
        metrics.contains("registrar_dhcp_dropped_total{reason=\"repeat\"} 24"),
        "{metrics}"
    );
    assert!(metrics.contains("registrar_dhcp_listener_up 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_and_filtered_macs_are_ignored_and_garbage_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A machine registered on the base branch long ago, before Registrar ran.
    let remote = dir.path().join("state/gitops.git");
    registrar::propose::git::init_local_remote(&remote, "main").unwrap();
    {
        let repo = git2::Repository::open_bare(&remote).unwrap();
        let main = repo
            .find_branch("main", git2::BranchType::Local)
            .unwrap()
            .get()
            .peel_to_commit()
            .unwrap();
        let blob = repo.blob(b"apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: old, namespace: tinkerbell}\nspec:\n  interfaces:\n    - dhcp: {mac: \"02:00:00:00:00:01\"}\n").unwrap();
        let tree = git2::build::TreeUpdateBuilder::new()
            .upsert("hardware/old.yaml", blob, git2::FileMode::Blob)
            .create_updated(&repo, &main.tree().unwrap())
            .unwrap();
        let sig = git2::Signature::now("human", "human@example.org").unwrap();
        repo.commit(
            Some("refs/heads/main"),
            &sig,
            &sig,
            "old machine",
            &repo.find_tree(tree).unwrap(),
            &[&main],
        )
        .unwrap();
    }
    let mut config = local_config(dir.path());
    config.dhcp.only_netboot = true;
    let socket = registrar::sources::dhcp::listener::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let addr = socket.local_addr().unwrap();
    let r = Registrar::start_app(dir, config, move |app| app.with_dhcp_socket(socket)).await;
    let metrics = || metrics_text(&r);
    for _ in 0..100 {
        if metrics().await.contains("registrar_known_macs 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics().await.contains("registrar_known_macs 1"),
        "the base branch was never indexed"
    );

    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender
        .send_to(
            &discover([2, 0, 0, 0, 0, 1], b"PXEClient:Arch:00000:UNDI:002001", None),
            addr,
        )
        .unwrap(); // registered
    sender
        .send_to(&discover([2, 0, 0, 0, 0, 2], b"udhcp 1.35.0", None), addr)
        .unwrap(); // an OS, not netbooting
    sender.send_to(&[1, 2, 3], addr).unwrap();
    sender
        .send_to(
            &discover([2, 0, 0, 0, 0, 3], b"PXEClient:Arch:00011:UNDI:003000", None),
            addr,
        )
        .unwrap();
    let list = wait_for(&r, "the ARM machine", |v| {
        v["machines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mac"] == "02:00:00:00:00:03")
    })
    .await;
    let macs: Vec<&str> = list["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mac"].as_str().unwrap())
        .collect();
    assert_eq!(
        macs,
        ["02:00:00:00:00:03"],
        "registered and non-netbooting MACs are not noticed"
    );
    assert_eq!(list["machines"][0]["sighting"]["arch"], "aarch64");
    let text = metrics().await;
    assert!(
        text.contains("registrar_dhcp_dropped_total{reason=\"known\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("registrar_dhcp_dropped_total{reason=\"truncated\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("registrar_dhcp_dropped_total{reason=\"not_netboot\"} 1"),
        "{text}"
    );
}
