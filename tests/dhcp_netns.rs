//! A real DHCP client in one network namespace, Registrar's listener in another, joined by
//! a veth pair: the client's MAC is detected exactly once. Needs root and `ip` (iproute2)
//! and busybox (udhcpc), and ISC dhclient for the second client; CI runs as root and installs
//! them. Without them a test says why and skips, except under REGISTRAR_CI=1 (.ci/run), where
//! it fails: there a skipped test would be a silent pass.

mod support;

use std::process::Command;
use std::time::Duration;

use support::netns::{Netns, installed};
use support::*;

/// What is missing for the namespace tests (root, iproute2, busybox with udhcpc), if anything.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root to create network namespaces".into());
    }
    let mut missing = Vec::new();
    for (tool, package) in [("ip", "iproute2"), ("busybox", "busybox")] {
        if !installed(tool) {
            missing.push(format!("`{tool}` (apt-get install {package})"));
        }
    }
    if installed("busybox")
        && !Command::new("busybox")
            .arg("--list")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "udhcpc"))
    {
        missing.push("busybox's `udhcpc` applet (this busybox was built without it)".into());
    }
    (!missing.is_empty()).then(|| format!("needs {}", missing.join(" and ")))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_dhcp_client_is_detected_exactly_once() {
    if skip_unless_ci("a_real_dhcp_client_is_detected_exactly_once", missing_prerequisite()) {
        return;
    }
    let net = Netns::create();
    let socket = net.bind_in_server();
    let dir = tempfile::tempdir().unwrap();
    let config = local_config(dir.path());
    let r = Registrar::start_app(dir, config, move |app| app.with_dhcp_socket(socket)).await;
    let mac = net.client_mac();

    // busybox udhcpc: three DISCOVERs, no server answers, it gives up.
    let iface = net.client_if();
    let client = net.client.clone();
    let udhcpc = tokio::task::spawn_blocking(move || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &client,
                "busybox",
                "udhcpc",
                "-i",
                &iface,
                "-n",
                "-q",
                "-t",
                "3",
                "-T",
                "1",
                "-s",
                "/bin/true",
            ])
            .output()
            .unwrap()
    });
    udhcpc.await.unwrap();
    // Then ISC dhclient, where installed (CI installs it): the same MAC, so still one machine.
    let has_dhclient = !skip_unless_ci(
        "a_real_dhcp_client_is_detected_exactly_once, its dhclient half",
        (!installed("dhclient")).then(|| "needs `dhclient` (apt-get install isc-dhcp-client)".to_string()),
    );
    let dhclient = has_dhclient.then(|| {
        let (client, iface, leases) = (
            net.client.clone(),
            net.client_if(),
            dir_path(&r).join("dhclient.leases"),
        );
        tokio::task::spawn_blocking(move || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &client,
                    "timeout",
                    "4",
                    "dhclient",
                    "-1",
                    "-d",
                    "-lf",
                    leases.to_str().unwrap(),
                    "-pf",
                    "/dev/null",
                    "-sf",
                    "/bin/true",
                    &iface,
                ])
                .output()
                .unwrap()
        })
    });
    if let Some(d) = dhclient {
        d.await.unwrap();
    }

    let mut machines = serde_json::Value::Null;
    for _ in 0..100 {
        machines = r.get("/api/v1/machines").await["machines"].clone();
        if !machines.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = machines.as_array().unwrap();
    assert_eq!(list.len(), 1, "{machines:#}");
    assert_eq!(list[0]["mac"], mac);
    assert_eq!(list[0]["source"], "dhcp");
    assert_eq!(list[0]["state"], "detected");
    assert_eq!(list[0]["sighting"]["vendor_class"], "udhcp 1.35.0");
    let metrics = metrics_text(&r).await;
    assert!(metrics.contains("registrar_dhcp_new_macs_total 1"), "{metrics}");
    let packets: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("registrar_dhcp_packets_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(packets >= 3, "the client's retries all arrived: {packets}");
}

/// Capture mode sees what a bound socket cannot: a request relayed (unicast) to a DHCP
/// server address where nothing listens on port 67.
#[tokio::test(flavor = "multi_thread")]
async fn a_capture_sees_broadcast_and_relayed_unicast_requests() {
    if skip_unless_ci(
        "a_capture_sees_broadcast_and_relayed_unicast_requests",
        missing_prerequisite(),
    ) {
        return;
    }
    let net = Netns::create();
    net.run(&[
        "-n",
        &net.server,
        "addr",
        "add",
        "10.99.0.1/24",
        "dev",
        &net.server_if(),
    ]);
    net.run(&[
        "-n",
        &net.client,
        "addr",
        "add",
        "10.99.0.2/24",
        "dev",
        &net.client_if(),
    ]);
    let ifname = net.server_if();
    let capture = Netns::inside(&net.server, move || {
        registrar::sources::dhcp::listener::capture(Some(&ifname)).unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = local_config(dir.path());
    let r = Registrar::start_app(dir, config, move |app| {
        app.with_dhcp_input(registrar::sources::dhcp::listener::Input::Capture(capture))
    })
    .await;

    // A relay agent forwards a PXE request, unicast, to 10.99.0.1:67.
    let mut relayed = vec![0u8; 236];
    relayed[0] = 1;
    relayed[1] = 1;
    relayed[2] = 6;
    relayed[24..28].copy_from_slice(&[10, 99, 0, 2]);
    relayed[28..34].copy_from_slice(&[0x02, 0, 0, 0, 0x99, 0x01]);
    relayed.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 93, 2, 0, 7, 82, 8, 1, 6]);
    relayed.extend_from_slice(b"swp7/1");
    relayed.push(255);
    Netns::inside(&net.client, move || {
        let s = std::net::UdpSocket::bind("10.99.0.2:0").unwrap();
        for _ in 0..3 {
            s.send_to(&relayed, "10.99.0.1:67").unwrap();
        }
    });
    // And a broadcast DISCOVER from a real client.
    let (client, iface) = (net.client.clone(), net.client_if());
    tokio::task::spawn_blocking(move || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &client,
                "busybox",
                "udhcpc",
                "-i",
                &iface,
                "-n",
                "-q",
                "-t",
                "2",
                "-T",
                "1",
                "-s",
                "/bin/true",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    let mut machines = serde_json::Value::Null;
    for _ in 0..100 {
        machines = r.get("/api/v1/machines").await["machines"].clone();
        if machines.as_array().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = machines.as_array().unwrap();
    assert_eq!(list.len(), 2, "{machines:#}");
    let relayed = list
        .iter()
        .find(|m| m["mac"] == "02:00:00:00:99:01")
        .expect("the relayed request");
    assert_eq!(relayed["sighting"]["relay"]["address"], "10.99.0.2");
    assert_eq!(relayed["sighting"]["relay"]["circuit_id"], "swp7/1");
    assert_eq!(relayed["sighting"]["uefi"], true);
    assert!(
        list.iter().any(|m| m["mac"] == net.client_mac()),
        "the broadcast DISCOVER"
    );
}

fn dir_path(r: &Registrar) -> std::path::PathBuf {
    r.dir.path().to_path_buf()
}
