//! A flood of spoofed MACs on the provisioning network costs bounded rows: machines only ever
//! seen are kept up to `discovery.max_undiscovered` (oldest dropped first), and at most
//! `discovery.max_new_per_minute` new ones are recorded a minute; both are counted.

mod support;

use std::time::Duration;

use support::dhcp::{discover, mac_text, spoofed};
use support::*;

async fn start(edit: impl FnOnce(&mut registrar::config::Config)) -> (Registrar, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    edit(&mut config);
    let socket = registrar::sources::dhcp::listener::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let addr = socket.local_addr().unwrap();
    let r = Registrar::start_app(dir, config, move |app| app.with_dhcp_socket(socket)).await;
    (r, addr)
}

/// Sends `n` spoofed DISCOVERs at a pace the listener's backlog takes, and waits until
/// every one has been dealt with (recorded, refused or dropped), from the metrics.
async fn flood(r: &Registrar, addr: std::net::SocketAddr, n: u32) -> String {
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        sender.send_to(&discover(spoofed(i)), addr).unwrap();
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut text = String::new();
    for _ in 0..300 {
        text = metrics_text(r).await;
        let dealt = metric_in(&text, "registrar_dhcp_new_macs_total")
            + metric_in(&text, "registrar_detections_refused_total")
            + metric_in(&text, r#"registrar_dhcp_dropped_total{reason="backlog"}"#);
        if dealt >= f64::from(n) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the flood was never dealt with:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn machines_only_ever_seen_are_bounded_and_the_oldest_go_first() {
    let (r, addr) = start(|c| {
        c.discovery.max_undiscovered = 100;
        c.discovery.max_new_per_minute = 0;
    })
    .await;
    let text = flood(&r, addr, 400).await;
    let detected = metric_in(&text, r#"registrar_machines{state="detected"}"#);
    assert!(detected <= 100.0, "{detected} detected machines kept:\n{text}");
    let recorded = metric_in(&text, "registrar_dhcp_new_macs_total");
    let evicted = metric_in(&text, "registrar_detections_evicted_total");
    assert_eq!(
        evicted,
        recorded - detected,
        "every row beyond the bound was dropped and counted"
    );
    assert!(evicted > 0.0);
    assert!(
        r.machine(&mac_text(spoofed(0))).await.is_none(),
        "the oldest went first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_machines_beyond_the_rate_are_not_recorded() {
    let (r, addr) = start(|c| {
        c.discovery.max_undiscovered = 0;
        c.discovery.max_new_per_minute = 50;
    })
    .await;
    let text = flood(&r, addr, 150).await;
    let recorded = metric_in(&text, "registrar_dhcp_new_macs_total");
    let refused = metric_in(&text, "registrar_detections_refused_total");
    assert_eq!(recorded, 50.0, "{text}");
    assert!(refused > 0.0);
    assert_eq!(metric_in(&text, r#"registrar_machines{state="detected"}"#), 50.0);
}
