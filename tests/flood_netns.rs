//! 100,000 spoofed MACs on a provisioning network of the test's own: the shipped binary
//! captures DHCP in one network namespace, a flood of PXE DISCOVERs, each from another MAC,
//! comes over a veth pair from the other. Rows stay within `discovery.max_undiscovered`
//! (the oldest evicted first, counted), and so does memory. Needs root and `ip`; under
//! REGISTRAR_CI=1 a missing prerequisite fails the test. It prints the figures
//! docs/benchmarks.md quotes (packets a second absorbed, peak RSS); nothing here asserts a
//! time.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::binary::{binary, example, free_port, set};
use support::dhcp::{discover, spoofed};
use support::netns::{Netns, installed};
use support::*;

const SPOOFED: u32 = 100_000;
const MAX_UNDISCOVERED: u64 = 1_000;
/// Peak RSS the binary may reach while it absorbs the flood. At rest the release binary
/// holds about 25 MiB (docs/benchmarks.md); memory that grew with the number of MACs would
/// cross this long before 100,000.
const MAX_PEAK_RSS_KIB: u64 = 128 * 1024;

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root to create network namespaces and capture packets".into());
    }
    (!installed("ip")).then(|| "needs `ip` (apt-get install iproute2)".to_string())
}

/// A GET from inside `ns`, where the binary's loopback is: (status, body).
fn get_inside(ns: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\n\r\n");
    Netns::inside(ns, move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let status = answer.split(' ').nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    })
}

/// Peak resident memory of `pid` so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[test]
fn a_hundred_thousand_spoofed_macs_cost_bounded_rows_and_memory() {
    if skip_unless_ci(
        "a_hundred_thousand_spoofed_macs_cost_bounded_rows_and_memory",
        missing_prerequisite(),
    ) {
        return;
    }
    let net = Netns::create();
    net.run(&[
        "-n",
        &net.client,
        "addr",
        "add",
        "10.98.0.2/24",
        "dev",
        &net.client_if(),
    ]);

    // The binary, started as a user would (examples/local.yaml with DHCP capture on the
    // provisioning interface), inside the server namespace.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut config = example("local.yaml");
    set(&mut config, "server.listen", json!(format!("127.0.0.1:{port}")));
    set(
        &mut config,
        "state_dir",
        json!(dir.path().join("state").display().to_string()),
    );
    let templates = manifest_dir().join("hardware-templates");
    set(&mut config, "templates_dir", json!(templates.display().to_string()));
    set(&mut config, "dhcp.enabled", json!(true));
    set(&mut config, "dhcp.capture", json!(true));
    set(&mut config, "dhcp.interface", json!(net.server_if()));
    set(&mut config, "discovery.max_undiscovered", json!(MAX_UNDISCOVERED));
    set(&mut config, "discovery.max_new_per_minute", json!(0));
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, yaml_serde::to_string(&config).unwrap()).unwrap();
    let log = std::fs::File::create(dir.path().join("registrar.log")).unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.server])
        .arg(binary())
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("REGISTRAR_REPORT_TOKEN", REPORT_TOKEN)
        .env("REGISTRAR_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env_remove("REGISTRAR_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let registrar_log = || std::fs::read_to_string(dir.path().join("registrar.log")).unwrap_or_default();
    // `ip netns exec` execs the command: the child's pid is Registrar's.
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("registrar exited with {status}:\n{}", registrar_log());
        }
        if get_inside(&net.server, port, "/readyz").is_some_and(|(s, _)| s == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "never ready:\n{}", registrar_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let resting_kib = peak_rss_kib(pid);

    // The flood, from the other namespace, as fast as one core sends: what the kernel's
    // capture buffer or Registrar's backlog cannot take is dropped, as it would be.
    let client = net.client.clone();
    let sender = Netns::inside(&client, || {
        let s = std::net::UdpSocket::bind("10.98.0.2:68").unwrap();
        s.set_broadcast(true).unwrap();
        s
    });
    let flood_started = Instant::now();
    for i in 0..SPOOFED {
        sender.send_to(&discover(spoofed(i)), "10.98.0.255:67").unwrap();
    }
    // Then a real machine, asking every 100 ms as PXE ROMs do, until Registrar has it: its
    // requests queue behind the flood, so everything the flood left queued is dealt with.
    let sentinel = "02:77:00:00:00:01";
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        sender
            .send_to(&discover([0x02, 0x77, 0, 0, 0, 1]), "10.98.0.255:67")
            .unwrap();
        let (status, _) = get_inside(&net.server, port, &format!("/api/v1/machines/{sentinel}")).unwrap();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the machine after the flood was never recorded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let absorbed_in = flood_started.elapsed();
    let (status, metrics) = get_inside(&net.server, port, "/metrics").unwrap();
    assert_eq!(status, 200, "{metrics}");
    let received = metric_in(&metrics, "registrar_dhcp_packets_total");
    let absorbed_per_second = received / absorbed_in.as_secs_f64();

    // Every machine Registrar keeps, whatever its state.
    let (status, list) = get_inside(&net.server, port, "/api/v1/machines?limit=1").unwrap();
    assert_eq!(status, 200, "{list}");
    let kept = serde_json::from_str::<serde_json::Value>(&list).unwrap()["total"]
        .as_u64()
        .unwrap();
    let recorded = metric_in(&metrics, "registrar_dhcp_new_macs_total");
    let evicted = metric_in(&metrics, "registrar_detections_evicted_total");
    assert!(kept <= MAX_UNDISCOVERED, "{kept} machines kept");
    assert!(
        recorded > MAX_UNDISCOVERED as f64,
        "the flood never reached the bound (recorded {recorded}):\n{metrics}"
    );
    assert_eq!(
        evicted,
        recorded - kept as f64,
        "every row beyond the bound evicted and counted"
    );
    let peak_kib = peak_rss_kib(pid);
    // The figures docs/benchmarks.md quotes (a release binary: REGISTRAR_TEST_BINARY).
    eprintln!(
        "FLOOD {SPOOFED} spoofed MACs sent, {received} received, {recorded} recorded in {:.1} s: {absorbed_per_second:.0} packets/s absorbed, {kept} rows kept, peak RSS {peak_kib} KiB (at rest {resting_kib} KiB)",
        absorbed_in.as_secs_f64()
    );
    assert!(
        peak_kib <= MAX_PEAK_RSS_KIB,
        "peak RSS {peak_kib} KiB (at rest {resting_kib} KiB) beyond {MAX_PEAK_RSS_KIB} KiB"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
