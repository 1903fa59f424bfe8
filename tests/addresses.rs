//! Addresses and names on the shipped binary (issue 16): in Smee's default reservation mode
//! a machine is served only if its Hardware carries an address, so the temporary discovery
//! Hardware gets one from the discovery pool and the proposed Hardware one from a production
//! pool — never one a Hardware already holds, the same one across restarts, and a rejected
//! machine's address only after the quarantine.

mod support;

use serde_json::{Value, json};
use support::binary::{Process, eventually, set};
use support::fake_github::FakeGithub;
use support::fake_kube::FakeKube;
use support::journey::{NS, registered, start_on_cluster, state_reached};
use support::*;

fn dhcp_of(hardware: &Value) -> Value {
    hardware["spec"]["interfaces"][0]["dhcp"].clone()
}

/// A machine Smee saw: its temporary Hardware's address, and the token its action reports with.
async fn discovered(kube: &FakeKube, mac: &str) -> (String, String) {
    support::journey::smee_sees(kube, mac).await;
    let name = format!("registrar-discover-{}", mac.replace(':', "-"));
    let hardware = eventually(30, "the temporary Hardware", || async {
        kube.object("hardware", NS, &name)
    })
    .await;
    let workflow = eventually(30, "the temporary Workflow", || async {
        kube.object("workflows", NS, &name)
    })
    .await;
    let ip = dhcp_of(&hardware)["ip"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (
        ip,
        workflow["spec"]["hardwareMap"]["report_token"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

async fn report(p: &Process, mac: &str, token: &str, serial: &str) {
    let mut specs = lshw("supermicro-ssg-6029p-x11dph-t.json");
    specs["serial"] = json!(serial);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/reports", p.url))
        .bearer_auth(token)
        .json(&report_body(mac, specs))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}

/// The proposed Hardware's `dhcp` block, as the pull request's branch holds it.
async fn proposed_dhcp(p: &Process, gh: &FakeGithub, mac: &str) -> Value {
    let m = state_reached(p, mac, "proposed").await;
    let (branch, path) = (
        m["proposal"]["branch"].as_str().unwrap(),
        m["proposal"]["path"].as_str().unwrap(),
    );
    let text = gh.repo().read(branch, path).expect("the proposal's file");
    let hardware = documents(&text).into_iter().find(|d| d["kind"] == "Hardware").unwrap();
    dhcp_of(&hardware)
}

/// The binary on examples/all.yaml in Smee's reservation mode: Smee's logs name unknown
/// machines, pools give addresses, proposals go to the fake GitHub; `edit` adjusts the config.
async fn start(dir: &std::path::Path, gh: &FakeGithub, kube: &FakeKube, edit: impl FnOnce(&mut Value)) -> Process {
    start_on_cluster(dir, gh, kube, |config| {
        set(config, "forge.github.mutation_interval_ms", json!(0));
        set(
            config,
            "ipam",
            json!({
                "discovery": {"name": "discovery", "cidr": "10.0.9.0/24", "ranges": ["10.0.9.100-10.0.9.109"], "gateway": "10.0.9.1", "lease_seconds": 600},
                "pools": [{"name": "rack1", "cidr": "10.0.10.0/24", "ranges": ["10.0.10.11-10.0.10.20"], "gateway": "10.0.10.1", "nameservers": ["10.0.0.53"]}],
                "quarantine_seconds": 3600
            }),
        );
        edit(config);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn reservation_mode_machines_get_addresses_smee_serves_and_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    // A machine registered before Registrar holds the pool's first address.
    kube.create(registered("old-server", "0c:c4:7a:00:00:01", "10.0.10.11"));
    let mut p = start(dir.path(), &gh, &kube, |_| {}).await;

    let macs = ["0c:c4:7a:16:00:01", "0c:c4:7a:16:00:02", "0c:c4:7a:16:00:03"];
    let mut discovery_ips = Vec::new();
    let mut production = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let (ip, token) = discovered(&kube, mac).await;
        assert!(
            ip.starts_with("10.0.9.1"),
            "{mac}'s temporary Hardware has a discovery address: {ip:?}"
        );
        discovery_ips.push(ip);
        report(&p, mac, &token, &format!("ADDR{i:04}")).await;
        let dhcp = proposed_dhcp(&p, &gh, mac).await;
        assert_eq!(dhcp["ip"]["netmask"], "255.255.255.0", "{dhcp}");
        assert_eq!(dhcp["ip"]["gateway"], "10.0.10.1");
        assert_eq!(dhcp["name_servers"], json!(["10.0.0.53"]));
        let ip = dhcp["ip"]["address"].as_str().unwrap().to_string();
        // Shown where a person looks: the API and the pull request.
        let m = support::journey::machine(&p, mac).await;
        assert!(
            m["addresses"]
                .as_array()
                .unwrap()
                .contains(&json!({"pool": "rack1", "ip": ip})),
            "{m:#}"
        );
        let number = m["proposal"]["number"].as_u64().unwrap();
        // (The body is Markdown-escaped: `10\.0\.10\.12`.)
        let body = gh.pull(number).body.replace('\\', "");
        assert!(
            body.contains(&format!("| Address | {ip}/24 via 10.0.10.1 (pool rack1) |")),
            "{body}"
        );
        production.push(ip);
    }
    discovery_ips.sort();
    discovery_ips.dedup();
    assert_eq!(discovery_ips.len(), 3, "one discovery address each");
    assert_eq!(
        production,
        ["10.0.10.12", "10.0.10.13", "10.0.10.14"],
        "unique, from the pool, never the address old-server holds"
    );

    // The operator sees how full each pool is.
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_in(&metrics, r#"registrar_address_pool_size{pool="rack1"}"#),
        10.0
    );
    assert_eq!(metric_in(&metrics, r#"registrar_address_pool_used{pool="rack1"}"#), 3.0);
    assert_eq!(
        metric_in(&metrics, r#"registrar_address_pool_size{pool="discovery"}"#),
        10.0
    );

    // `registrar ipam list` lists the pools; `registrar ipam show MAC` explains one
    // machine's address; `registrar ipam check` names what clashes with the pools.
    let out = p.cli(&["ipam", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rack1 = listed["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rack1")
        .unwrap()
        .clone();
    assert_eq!(
        (rack1["size"].clone(), rack1["used"].clone(), rack1["purpose"].clone()),
        (json!(10), json!(3), json!("production"))
    );
    let out = p.cli(&["ipam", "show", macs[2]]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["production_pool"], "rack1", "{shown:#}");
    assert!(
        shown["addresses"]
            .as_array()
            .unwrap()
            .contains(&json!({"pool": "rack1", "ip": "10.0.10.14"})),
        "{shown:#}"
    );

    let out = p.cli(&["ipam", "check"]);
    assert!(!out.status.success(), "old-server's address is inside rack1's ranges");
    let checked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        checked["clashes"],
        json!([{
            "pool": "rack1", "ip": "10.0.10.11", "registered_in": "cluster",
            "message": "10.0.10.11 is in pool \"rack1\"'s ranges and held by a Hardware in the cluster that Registrar did not give it to; it is skipped — add it to ipam.pools[0].exclude"
        }])
    );

    // The console's machine page shows it too.
    let (cookie, page) = console_page(&p.url, macs[2]).await;
    assert!(
        page.contains(r#"<span class="mono">10.0.10.14</span> from pool rack1"#),
        "{page}"
    );
    // And the machine list, beside each name.
    let list = console_get(&p.url, "/", &cookie).await;
    assert!(
        list.contains(r#"<td class="mono">10.0.10.14 (rack1), 10.0.9.102 (discovery)</td>"#),
        "{list}"
    );

    // A restart changes no allocation: a re-render keeps the address.
    p.restart().await;
    let resp = p_post(
        &p,
        &format!("/api/v1/machines/{}/workflow", macs[0]),
        json!({"workflow": "ubuntu-2204"}),
    )
    .await;
    assert!(resp < 300, "choosing a workflow: {resp}");
    eventually(60, "the re-render", || async {
        let dhcp = proposed_dhcp(&p, &gh, macs[0]).await;
        let m = support::journey::machine(&p, macs[0]).await;
        (m["proposal"]["workflow"] == "ubuntu-2204").then_some(dhcp)
    })
    .await;
    assert_eq!(proposed_dhcp(&p, &gh, macs[0]).await["ip"]["address"], "10.0.10.12");

    // Rejected: its address rests for the quarantine; the next machine gets a fresh one.
    assert_eq!(
        p_post(
            &p,
            &format!("/api/v1/machines/{}/reject", macs[1]),
            json!({"reason": "not ours"})
        )
        .await,
        200
    );
    let (_, token) = discovered(&kube, "0c:c4:7a:16:00:04").await;
    report(&p, "0c:c4:7a:16:00:04", &token, "ADDR0004").await;
    assert_eq!(
        proposed_dhcp(&p, &gh, "0c:c4:7a:16:00:04").await["ip"]["address"],
        "10.0.10.15"
    );
    assert!(p.stop().success());
}

async fn p_post(p: &Process, path: &str, body: Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{}{path}", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn proposed_name(p: &Process, mac: &str) -> String {
    let m = state_reached(p, mac, "proposed").await;
    m["proposal"]["path"]
        .as_str()
        .unwrap()
        .trim_start_matches("hardware/")
        .trim_end_matches(".yaml")
        .to_string()
}

/// Names from a counting pattern (`node-{{ seq | pad(4) }}`) are unique across the cluster,
/// the base branch and Registrar's own machines, and a machine keeps its name across a
/// restart and a re-render.
#[tokio::test(flavor = "multi_thread")]
async fn counted_names_skip_names_others_have_and_stay_with_their_machine() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    kube.create(registered("node-0001", "0c:c4:7a:00:00:01", "10.0.10.11"));
    let on_base = serde_json::to_string(&registered("node-0002", "0c:c4:7a:00:00:02", "10.0.10.12")).unwrap();
    gh.repo().push_on_top("main", "hardware/node-0002.yaml", &on_base);
    let templates = templates_named(dir.path(), "node-{{ seq | pad(4) }}");
    let mut p = start(dir.path(), &gh, &kube, |c| {
        set(c, "templates_dir", json!(templates.display().to_string()));
        // Rack r12 has its own subnet; every other machine gets rack1's.
        let r12 = json!({"name": "r12", "cidr": "10.0.12.0/24", "ranges": ["10.0.12.10-10.0.12.20"], "match": {"rack": "r12"}});
        c["ipam"]["pools"].as_array_mut().unwrap().insert(0, r12);
        // What a Hardware on the base branch holds is excluded by the operator: otherwise
        // the start stops on the clash (tests/pool_clashes.rs).
        c["ipam"]["pools"][1]["exclude"] = json!(["10.0.10.12"]);
    })
    .await;

    let macs = ["0c:c4:7a:16:01:01", "0c:c4:7a:16:01:02", "0c:c4:7a:16:01:03"];
    // The operator says where the third one stands.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/imports?mode=expected&name=r12", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "text/csv")
        .body(format!("mac,rack,u\n{},r12,7\n", macs[2]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "import: {}", resp.text().await.unwrap());
    let mut names = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let (_, token) = discovered(&kube, mac).await;
        report(&p, mac, &token, &format!("NAME{i:04}")).await;
        names.push(proposed_name(&p, mac).await);
    }
    assert_eq!(names, ["node-0003", "node-0004", "node-0005"]);
    assert_eq!(
        proposed_dhcp(&p, &gh, macs[2]).await["ip"]["address"],
        "10.0.12.10",
        "the rack's pool"
    );
    // .11 is node-0001's (in the cluster: skipped), .12 node-0002's (on the base: excluded).
    assert_eq!(proposed_dhcp(&p, &gh, macs[1]).await["ip"]["address"], "10.0.10.14");
    let m = support::journey::machine(&p, macs[1]).await;
    let hardware = documents(
        &gh.repo()
            .read(m["proposal"]["branch"].as_str().unwrap(), "hardware/node-0004.yaml")
            .unwrap(),
    )
    .into_iter()
    .find(|d| d["kind"] == "Hardware")
    .unwrap();
    assert_eq!(hardware["metadata"]["name"], "node-0004");
    assert_eq!(hardware["spec"]["interfaces"][0]["dhcp"]["hostname"], "node-0004");

    p.restart().await;
    assert_eq!(
        p_post(
            &p,
            &format!("/api/v1/machines/{}/workflow", macs[0]),
            json!({"workflow": "ubuntu-2204"})
        )
        .await,
        200
    );
    let m = eventually(60, "the re-render", || async {
        let m = support::journey::machine(&p, macs[0]).await;
        (m["proposal"]["workflow"] == "ubuntu-2204").then_some(m)
    })
    .await;
    assert_eq!(m["proposal"]["path"], "hardware/node-0003.yaml", "{m:#}");
    assert!(p.stop().success());
}

/// A name the pattern gives that a Hardware in the cluster already has, for another
/// machine, is never proposed: the machine is named after its MAC and the pull request
/// tells the reviewer why.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_another_machine_has_is_told_to_the_reviewer_not_proposed() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    kube.create(registered("clash0001", "0c:c4:7a:00:00:01", "10.0.10.11"));
    let mut p = start(dir.path(), &gh, &kube, |_| {}).await;
    let mac = "0c:c4:7a:16:02:01";
    let (_, token) = discovered(&kube, mac).await;
    report(&p, mac, &token, "CLASH0001").await;
    assert_eq!(proposed_name(&p, mac).await, "node-0c-c4-7a-16-02-01");
    let m = support::journey::machine(&p, mac).await;
    let body = gh
        .pull(m["proposal"]["number"].as_u64().unwrap())
        .body
        .replace('\\', "");
    assert!(
        body.starts_with("> **⚠ Name: the name clash0001 is a Hardware in the cluster, for another machine; this one is named after its MAC.**"),
        "{body}"
    );
    assert!(p.stop().success());
}

/// GitHub's delivery for a push to the base branch.
async fn pushed_to_main(gh: &FakeGithub) {
    let head = gh.head_of("main");
    let body = serde_json::to_vec(&support::fake_github::shapes::push_delivery("main", &head, "someone")).unwrap();
    let resp = gh
        .deliver(
            "push",
            &support::fake_github::uuid(),
            body,
            Some(support::fake_github::SECRET),
        )
        .await;
    assert!(resp.status().is_success(), "push delivery: {}", resp.status());
}

fn pools_file(range: &str, gateway: &str) -> String {
    format!(
        "discovery: {{name: discovery, cidr: 10.0.9.0/24, ranges: [10.0.9.100-10.0.9.109]}}\npools:\n  - {{name: rack1, cidr: 10.0.10.0/24, ranges: [{range}], gateway: {gateway}}}\nquarantine_seconds: 3600\n"
    )
}

async fn rack1_size(p: &Process) -> u64 {
    let out = p.cli(&["ipam", "list"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    listed["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rack1")
        .unwrap()["size"]
        .as_u64()
        .unwrap()
}

/// Pools kept in the GitOps repository (`ipam.file`), so a pool change is reviewed like any
/// other: read from the base branch, a merged change is in use once GitHub says the base
/// moved, and a broken change keeps the pools in use and makes Registrar not ready, naming
/// the file and the key.
#[tokio::test(flavor = "multi_thread")]
async fn pools_in_the_gitops_repository_follow_its_base_branch() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    gh.repo().push_on_top(
        "main",
        "ipam/pools.yaml",
        &pools_file("10.0.10.11-10.0.10.20", "10.0.10.1"),
    );
    let mut p = start(dir.path(), &gh, &kube, |c| {
        set(c, "ipam", json!({"file": "ipam/pools.yaml"}))
    })
    .await;

    let (ip, token) = discovered(&kube, macs_in_file(0)).await;
    assert!(ip.starts_with("10.0.9.10"), "{ip:?}");
    report(&p, macs_in_file(0), &token, "FILE0000").await;
    assert_eq!(
        proposed_dhcp(&p, &gh, macs_in_file(0)).await["ip"]["address"],
        "10.0.10.11"
    );

    // A reviewed change moves rack1's range; GitHub tells Registrar the base moved.
    gh.repo().push_on_top(
        "main",
        "ipam/pools.yaml",
        &pools_file("10.0.10.50-10.0.10.60", "10.0.10.1"),
    );
    pushed_to_main(&gh).await;
    eventually(30, "the new pools to be in use", || async {
        (rack1_size(&p).await == 11).then_some(())
    })
    .await;
    let (_, token) = discovered(&kube, macs_in_file(1)).await;
    report(&p, macs_in_file(1), &token, "FILE0001").await;
    assert_eq!(
        proposed_dhcp(&p, &gh, macs_in_file(1)).await["ip"]["address"],
        "10.0.10.50"
    );

    // A broken change: the pools in use stay, and Registrar says why it is not ready.
    gh.repo().push_on_top(
        "main",
        "ipam/pools.yaml",
        &pools_file("10.0.10.50-10.0.10.60", "10.0.11.1"),
    );
    pushed_to_main(&gh).await;
    let check = eventually(30, "Registrar to be not ready", || async {
        let resp = reqwest::get(format!("{}/readyz", p.url)).await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        (status == 503).then(|| body["checks"]["ipam"].clone())
    })
    .await;
    assert_eq!(check["ready"], false, "{check:#}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("ipam/pools.yaml on main: ipam.pools[0].gateway: 10.0.11.1 is outside the pool's cidr"),
        "{check:#}"
    );
    assert_eq!(rack1_size(&p).await, 11, "the pools in use stay");

    // A change whose range covers an address a hand-made Hardware on the base holds: the
    // same clash that stops a start keeps the pools in use here, and says so.
    let hand_made = serde_json::to_string(&registered("old-db", "0c:c4:7a:00:03:09", "10.0.10.75")).unwrap();
    gh.repo().push_on_top("main", "inventory/old-db.yaml", &hand_made);
    gh.repo().push_on_top(
        "main",
        "ipam/pools.yaml",
        &pools_file("10.0.10.70-10.0.10.80", "10.0.10.1"),
    );
    pushed_to_main(&gh).await;
    let check = eventually(30, "the clash to be named", || async {
        let body: Value = reqwest::get(format!("{}/readyz", p.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let detail = body["checks"]["ipam"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        detail
            .contains("10.0.10.75 is held by Hardware \"old-db\" in inventory/old-db.yaml")
            .then_some(detail)
    })
    .await;
    assert!(check.contains("ipam.pools[0].exclude"), "{check}");
    assert_eq!(rack1_size(&p).await, 11, "the pools in use stay");
    assert!(p.stop().success());
}

fn macs_in_file(i: usize) -> &'static str {
    ["0c:c4:7a:16:03:01", "0c:c4:7a:16:03:02"][i]
}

/// A machine Smee names before the pools in the GitOps repository are read waits for them,
/// visibly, and boots into discovery once they are — without being seen again.
#[tokio::test(flavor = "multi_thread")]
async fn a_machine_noticed_before_the_pools_are_read_boots_once_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    let mut p = support::journey::launch_on_cluster(dir.path(), &gh, &kube, |c| {
        set(c, "forge.github.mutation_interval_ms", json!(0));
        set(c, "ipam", json!({"file": "ipam/pools.yaml"}));
    });
    // Serving, but not ready: the pools' file is not on the base branch yet.
    eventually(60, "the API to answer", || async {
        reqwest::get(format!("{}/healthz", p.url))
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    let mac = "0c:c4:7a:16:04:01";
    // Logged once Registrar follows Smee's log (it may start following after /healthz answers).
    support::journey::smee_sees(&kube, mac).await;
    let waiting = state_reached(&p, mac, "waiting").await;
    let cause = waiting["transitions"].as_array().unwrap().last().unwrap()["cause"].clone();
    assert!(
        cause
            .as_str()
            .unwrap()
            .contains("waiting for the address pools: ipam/pools.yaml"),
        "{waiting:#}"
    );
    let name = format!("registrar-discover-{}", mac.replace(':', "-"));
    assert!(
        kube.object("hardware", NS, &name).is_none(),
        "no Hardware without an address"
    );

    // The pools are merged; GitHub says the base moved. Smee says nothing more.
    gh.repo().push_on_top(
        "main",
        "ipam/pools.yaml",
        &pools_file("10.0.10.11-10.0.10.20", "10.0.10.1"),
    );
    pushed_to_main(&gh).await;
    let hardware = eventually(30, "the temporary Hardware", || async {
        kube.object("hardware", NS, &name)
    })
    .await;
    assert!(
        dhcp_of(&hardware)["ip"]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.0.9.10"),
        "{hardware:#}"
    );
    state_reached(&p, mac, "discovering").await;
    p.wait_ready().await;
    assert!(p.stop().success());
}
