//! DHCP snooping split from the API (issue 17, exposure): `registrar snoop` on
//! examples/snoop.yaml listens for DHCP and forwards what it notices to `registrar serve`,
//! which runs without any DHCP of its own. The snooper opens no TCP port; only its own
//! token may forward; a forwarded batch is checked like a packet off the wire; sightings
//! noticed while the API is down reach it once it is back.

mod support;

use serde_json::{Value, json};
use support::binary::{Process, eventually, example, set, token_env};
use support::dhcp::discover;
use support::journey::get;
use support::*;

const SNOOP_TOKEN: &str = "snoop-token-for-tests-0123456789";

/// The TCP ports a process listens on, from its sockets' inodes in /proc/net/tcp{,6}.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().to_string();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A is LISTEN; the inode is the tenth column.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

async fn machine_seen(api: &str, mac: &str) -> Value {
    eventually(30, &format!("{mac} recorded from a forwarded sighting"), || async {
        let (status, m) = get(&format!("{api}/api/v1/machines/{mac}"), OPERATOR_TOKEN).await;
        (status == 200).then_some(m)
    })
    .await
}

async fn post_sightings(api: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{api}/api/v1/sightings"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// The API: the embedded default, no DHCP of its own, taking sightings with the snoop token.
async fn start_api(dir: &std::path::Path) -> Process {
    let mut env = token_env();
    env.push(("REGISTRAR_SNOOP_TOKEN", SNOOP_TOKEN));
    let mut api = Process::start(dir, example("local.yaml"), &env);
    api.wait_ready().await;
    api
}

#[tokio::test(flavor = "multi_thread")]
async fn the_snooper_forwards_to_an_api_without_dhcp_and_opens_no_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = start_api(dir.path()).await;

    // The snooper, on the example a user copies; a loopback port stands in for 67.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dhcp = udp.local_addr().unwrap();
    drop(udp);
    let snoop_dir = tempfile::tempdir().unwrap();
    std::fs::write(snoop_dir.path().join("snoop-token"), SNOOP_TOKEN).unwrap();
    let mut config = example("snoop.yaml");
    set(&mut config, "dhcp.forward_to", json!(api.url));
    set(&mut config, "dhcp.listen", json!(dhcp.to_string()));
    set(&mut config, "dhcp.debounce_seconds", json!(1));
    let mut snoop = Process::start_snoop(snoop_dir.path(), config, &[]);
    eventually(30, "the snooper to listen", || async {
        snoop.log().contains("listening (receive only)").then_some(())
    })
    .await;

    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let first = "02:5e:00:00:00:01";
    sender.send_to(&discover([2, 0x5e, 0, 0, 0, 1]), dhcp).unwrap();
    let m = machine_seen(&api.url, first).await;
    assert_eq!(m["machine"]["source"], "dhcp", "{m:#}");
    assert_eq!(m["machine"]["state"], "detected", "{m:#}");

    // Only the API listens on TCP; the snooper has no port anyone could reach.
    assert_eq!(listening_ports(snoop.pid()), Vec::<u16>::new());
    assert!(!listening_ports(api.pid()).is_empty());

    // The API is down for a while: what the snooper notices meanwhile arrives afterwards.
    assert!(api.stop().success());
    let second = "02:5e:00:00:00:02";
    sender.send_to(&discover([2, 0x5e, 0, 0, 0, 2]), dhcp).unwrap();
    eventually(30, "the snooper to notice the API is down", || async {
        snoop.log().contains("cannot forward sightings yet").then_some(())
    })
    .await;
    api.start_again().await;
    machine_seen(&api.url, second).await;
    assert!(snoop.exited().is_none(), "the snooper keeps running:\n{}", snoop.log());
    assert!(snoop.stop().success(), "{}", snoop.log());
    assert!(api.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_snoop_token_forwards_and_a_bad_batch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = start_api(dir.path()).await;
    let mac = "02:5e:00:00:01:01";
    let one = json!({"sightings": [{"mac": mac, "sighting": {"arch": "x86_64", "uefi": true, "netboot": true}}]});

    for token in [None, Some(OPERATOR_TOKEN), Some(REPORT_TOKEN)] {
        let (status, body) = post_sightings(&api.url, token, one.clone()).await;
        assert_eq!(status, 401, "{token:?}: {body:#}");
    }
    // The snoop token opens nothing else.
    let (status, _) = get(&format!("{}/api/v1/machines", api.url), SNOOP_TOKEN).await;
    assert_eq!(status, 401);

    // One bad entry refuses the whole batch, with where it is wrong.
    let bad = json!({"sightings": [
        {"mac": mac, "sighting": {"arch": "x86_64", "netboot": true}},
        {"mac": "02:5e:00:00:01:02", "sighting": {"hostname": "<script>".repeat(40), "netboot": true}},
    ]});
    let (status, body) = post_sightings(&api.url, Some(SNOOP_TOKEN), bad).await;
    assert_eq!(status, 400, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("sightings[1].sighting.hostname"),
        "{body:#}"
    );
    let too_many: Vec<Value> = (0..513)
        .map(|i| json!({"mac": format!("02:5e:00:00:{:02x}:{:02x}", i / 256, i % 256)}))
        .collect();
    let (status, _) = post_sightings(&api.url, Some(SNOOP_TOKEN), json!({"sightings": too_many})).await;
    assert_eq!(status, 400);
    let (status, _) = post_sightings(
        &api.url,
        Some(SNOOP_TOKEN),
        json!({"sightings": [{"mac": "not a mac"}]}),
    )
    .await;
    assert_eq!(status, 400);

    // The same sighting, well formed, with the snoop token: recorded. Forwarded sightings
    // are recorded in order, so had any refused batch been taken, its machines would be
    // there before this one.
    let (status, body) = post_sightings(&api.url, Some(SNOOP_TOKEN), one).await;
    assert_eq!((status, body["accepted"].clone()), (202, json!(1)));
    let m = machine_seen(&api.url, mac).await;
    assert_eq!(m["machine"]["sighting"]["arch"], "x86_64", "{m:#}");
    let (status, listed) = get(&format!("{}/api/v1/machines", api.url), OPERATOR_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(listed["machines"].as_array().map(Vec::len), Some(1), "{listed:#}");
    assert!(api.stop().success());
}
