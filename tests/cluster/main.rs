//! Registrar and a Kubernetes API (an in-process fake that validates Hardware against the
//! upstream CRD): registered Hardware makes MACs known, Tinkerbell's auto-discovered
//! Hardware becomes a proposal, and the watch survives drops and 410 Gone.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_kube::FakeKube;
use support::*;

fn hardware(name: &str, mac: &str) -> Value {
    json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
        "metadata": {"name": name, "namespace": "tinkerbell"},
        "spec": {"agentID": mac, "interfaces": [{"dhcp": {"mac": mac, "arch": "x86_64", "lease_time": 86400}, "netboot": {"allowPXE": true}}]}
    })
}

async fn start() -> (FakeKube, Registrar) {
    let kube = FakeKube::start().await;
    let client = kube.client();
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.cluster.watch_namespace = "tinkerbell".into();
    let r = Registrar::start_app(dir, config, move |app| app.with_kube_client(client)).await;
    (kube, r)
}

/// A report for `mac`, then: was it refused as already registered?
async fn is_known(r: &Registrar, mac: &str) -> bool {
    r.report(&report_body(
        mac,
        json!({"class": "system", "serial": format!("S{}", mac.replace(':', ""))}),
    ))
    .await;
    for _ in 0..100 {
        if let Some(m) = r.machine(mac).await {
            // Settled: either proposed, or refused with the reason.
            let refused = m["machine"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("already holds this MAC"));
            if m["machine"]["pending"] == false && (refused || !m["proposal"].is_null()) {
                return refused && m["proposal"].is_null();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{mac} was never processed");
}

/// Waits until the cluster index holds `count` MACs (the status API says), then checks `mac`.
async fn eventually_known(r: &Registrar, kube: &FakeKube, mac: &str, count: u64) {
    for _ in 0..200 {
        if r.get("/api/v1/status").await["known_macs"]["cluster"] == count {
            assert!(is_known(r, mac).await, "{mac}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the index never reached {count} MACs (watches: {})", kube.watch_count());
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_hardware_is_never_proposed_again() {
    let (kube, r) = start().await;
    kube.create(hardware("node01", "3c:ec:ef:4c:4f:54"));
    eventually_known(&r, &kube, "3c:ec:ef:4c:4f:54", 1).await;
    // The operator's view: the watch is up.
    let metrics = metrics_text(&r).await;
    assert!(
        metrics.lines().any(|l| l == "registrar_cluster_watch_up 1"),
        "{metrics}"
    );
    // An unknown one is proposed as usual.
    assert!(!is_known(&r, "3c:ec:ef:4c:4f:99").await);
    r.wait_for_state("3c:ec:ef:4c:4f:99", "proposed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auto_discovered_hardware_becomes_a_proposal_with_its_attributes() {
    let (kube, r) = start().await;
    let attrs = json!({"product": {"vendor": "Dell Inc.", "name": "PowerEdge R650", "serialNumber": "7XK2N13"},
                       "cpu": {"totalCores": 32}, "memory": {"total": "256GB"},
                       "networkInterfaces": [{"name": "eno8303", "mac": "b0:7b:25:de:ad:01", "speed": "1000Mb/s"}]});
    kube.create(json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
        "metadata": {"name": "discovery-b0-7b-25-de-ad-01", "namespace": "tinkerbell",
                     "labels": {"tinkerbell.org/auto-discovered": "true"},
                     "annotations": {"tinkerbell.org/agent-attributes": attrs.to_string()}},
        "spec": {"agentID": "b0:7b:25:de:ad:01", "auto": {"enrollmentEnabled": false}, "interfaces": [{"dhcp": {"mac": "b0:7b:25:de:ad:01"}}]}
    }));
    let m = r.wait_for_state("b0:7b:25:de:ad:01", "proposed").await;
    assert_eq!(m["machine"]["source"], "auto_discovery");
    assert_eq!(m["proposal"]["name"], "7xk2n13");
    assert_eq!(m["machine"]["facts"]["cpu_cores"], 32);
    let yaml = r
        .remote
        .read("registrar/b0-7b-25-de-ad-01", "hardware/7xk2n13.yaml")
        .unwrap();
    assert_eq!(documents(&yaml)[0]["spec"]["agentID"], "b0:7b:25:de:ad:01");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_recovers_from_drops_and_410_gone_without_missing_a_mac() {
    let (kube, r) = start().await;
    kube.create(hardware("node-a", "02:00:00:00:0b:01"));
    eventually_known(&r, &kube, "02:00:00:00:0b:01", 1).await;

    // The watch drops; a Hardware appears meanwhile.
    kube.drop_watches();
    kube.create(hardware("node-b", "02:00:00:00:0b:02"));
    eventually_known(&r, &kube, "02:00:00:00:0b:02", 2).await;

    // History expired and the watch drops: resuming gets 410 Gone, and a relist follows.
    let lists = || {
        kube.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, p)| m == "GET" && p.ends_with("/hardware"))
            .count()
    };
    assert_eq!(lists(), 1);
    kube.expire_history();
    kube.drop_watches();
    for _ in 0..200 {
        if lists() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(lists() >= 2, "410 Gone led to a relist ({} lists)", lists());
    kube.create(hardware("node-c", "02:00:00:00:0b:03"));
    eventually_known(&r, &kube, "02:00:00:00:0b:03", 3).await;
    // And a deletion is seen too: the MAC is free again.
    kube.delete("tinkerbell", "node-a");
    for _ in 0..200 {
        if r.get("/api/v1/status").await["known_macs"]["cluster"] == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the deletion was never seen");
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_removes_the_discovery_hardware_and_the_applied_hardware_is_followed() {
    let (kube, r) = start().await;
    let mac = "b0:7b:25:de:ad:02";
    let attrs =
        json!({"product": {"vendor": "Dell Inc.", "name": "PowerEdge R650", "serialNumber": "7XK2N14"}}).to_string();
    let discovered = |name: &str, mac: &str| {
        json!({
            "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
            "metadata": {"name": name, "namespace": "tinkerbell",
                         "labels": {"tinkerbell.org/auto-discovered": "true"},
                         "annotations": {"tinkerbell.org/agent-attributes": attrs}},
            "spec": {"agentID": mac, "interfaces": [{"dhcp": {"mac": mac}}]}
        })
    };
    kube.create(discovered("discovery-b0-7b-25-de-ad-02", mac));
    kube.create(discovered("discovery-b0-7b-25-de-ad-03", "b0:7b:25:de:ad:03"));
    r.wait_for_state(mac, "proposed").await;

    let resp = r
        .post(&format!("/api/v1/machines/{mac}/approve"), json!({"actor": "ops"}))
        .await;
    assert_eq!(resp.status(), 200);
    let names = || {
        kube.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, p)| m == "DELETE" && p.ends_with("/discovery-b0-7b-25-de-ad-02"))
            .count()
    };
    let approved = r.wait_for_state(mac, "approved").await;
    assert_eq!(
        names(),
        0,
        "the discovery Hardware stays until the approved one is applied: until then it is the only Hardware Smee has for the machine"
    );
    assert!(approved["machine"]["last_error"].is_null());

    // Flux applies what merged: the discovery Hardware goes, then the machine is "applied".
    let yaml = r.remote.read("main", "hardware/7xk2n14.yaml").expect("merged");
    let approved = documents(&yaml).remove(0);
    kube.create(approved);
    let m = r.wait_for_state(mac, "applied").await;
    assert_eq!(
        names(),
        1,
        "the discovery Hardware is deleted once the approved one is there"
    );
    assert!(
        m["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["to"] == "applied" && t["cause"].as_str().unwrap().contains("1 discovery Hardware removed"))
    );
    // And its Workflow, which merged with it, is followed until it fails or succeeds.
    let workflow = documents(&yaml).remove(1);
    kube.create_workflow(workflow);
    kube.set_workflow_status("tinkerbell", "7xk2n14", json!({"state": "RUNNING"}));
    // Registrar polls each applied machine's Workflow in turn, in one loop: once it has read
    // the Workflow twice since RUNNING was set, it has acted on the first of those answers.
    let reads = || {
        kube.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, p)| m == "GET" && p.ends_with("/workflows/7xk2n14"))
            .count()
    };
    let before = reads();
    let state = async || r.machine(mac).await.unwrap()["machine"]["state"].clone();
    for _ in 0..300 {
        if reads() >= before + 2 || state().await != "applied" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        state().await,
        "applied",
        "a RUNNING Workflow is not the end of provisioning"
    );
    assert!(
        reads() >= before + 2,
        "the RUNNING Workflow was never read twice ({} reads)",
        reads() - before
    );
    kube.set_workflow_status("tinkerbell", "7xk2n14", json!({"state": "SUCCESS"}));
    let m = r.wait_for_state(mac, "provisioned").await;
    assert!(
        m["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["to"] == "provisioned" && t["cause"] == "Workflow tinkerbell/7xk2n14 succeeded")
    );
    // The other machine's discovery Hardware is untouched.
    let other = kube
        .state
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(m, p)| m == "DELETE" && p.ends_with("/discovery-b0-7b-25-de-ad-03"))
        .count();
    assert_eq!(other, 0);
}

/// Waits until the cluster index holds `count` MACs (the status API says).
async fn wait_cluster_index(r: &Registrar, count: u64) {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = r.get("/api/v1/status").await["known_macs"].clone();
        if last["cluster"] == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the cluster index never reached {count} MACs: {last}");
}

/// A DHCP socket on loopback and the discovery side on, bounded to `max` machines.
async fn start_discovery(max: usize, ttl_seconds: u64) -> (FakeKube, Registrar, std::net::SocketAddr) {
    let kube = FakeKube::start().await;
    let client = kube.client();
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.cluster.watch_namespace = "tinkerbell".into();
    config.cluster.discovery.enabled = true;
    config.cluster.discovery.report_url = "http://registrar.tinkerbell.svc:8080".into();
    config.cluster.discovery.max_machines = max;
    config.cluster.discovery.ttl_seconds = ttl_seconds;
    let socket = registrar::sources::dhcp::listener::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let addr = socket.local_addr().unwrap();
    let r = Registrar::start_app(dir, config, move |app| {
        app.with_kube_client(client).with_dhcp_socket(socket)
    })
    .await;
    (kube, r, addr)
}

fn pxe_discover(mac: [u8; 6]) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[28..34].copy_from_slice(&mac);
    b.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 93, 2, 0, 11, 255]);
    b
}

async fn wait_objects(kube: &FakeKube, plural: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let objs = kube.objects(plural);
        if objs.len() == n {
            return objs;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {n} {plural}, have {:?}", kube.objects(plural));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_machine_is_booted_into_discovery_with_its_own_token() {
    let (kube, r, dhcp) = start_discovery(5, 3600).await;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mac = "02:00:00:00:0c:01";
    sender.send_to(&pxe_discover([2, 0, 0, 0, 0x0c, 1]), dhcp).unwrap();
    let hardware_objects = wait_objects(&kube, "hardware", 1).await;
    let workflows = wait_objects(&kube, "workflows", 1).await;
    let (hw, wf) = (&hardware_objects[0], &workflows[0]);
    // Valid against the CRDs (the fake refuses anything else), temporary, and bootable.
    assert_eq!(hw["metadata"]["labels"]["registrar.dev/temporary"], "true");
    assert_eq!(hw["spec"]["agentID"], mac);
    assert_eq!(
        hw["spec"]["interfaces"][0]["dhcp"]["arch"], "aarch64",
        "what DHCP revealed"
    );
    assert_eq!(hw["spec"]["interfaces"][0]["netboot"]["allowPXE"], true);
    assert_eq!(wf["spec"]["templateRef"], "registrar-discovery");
    assert_eq!(wf["spec"]["hardwareRef"], hw["metadata"]["name"]);
    assert_eq!(wf["spec"]["hardwareMap"]["device_1"], mac);
    let token = wf["spec"]["hardwareMap"]["report_token"].as_str().unwrap().to_string();
    r.wait_for_state(mac, "discovering").await;

    // The same machine asking again makes nothing new: the listener takes it for a repeat.
    let repeats = metric(&r, DHCP_REPEAT).await;
    sender.send_to(&pxe_discover([2, 0, 0, 0, 0x0c, 1]), dhcp).unwrap();
    wait_metric(&r, DHCP_REPEAT, repeats + 1.0).await;
    assert_eq!(kube.objects("hardware").len(), 1);
    assert_eq!(kube.objects("workflows").len(), 1);

    // Its token reports for it, and for no other machine.
    let post = |m: &str, t: &str| {
        r.client
            .post(format!("{}/api/v1/reports", r.url))
            .bearer_auth(t.to_string())
            .json(&report_body(m, json!({"class": "system", "serial": "DISC1"})))
            .send()
    };
    assert_eq!(post("02:00:00:00:0c:02", &token).await.unwrap().status(), 403);
    assert_eq!(post(mac, &token).await.unwrap().status(), 202);
    r.wait_for_state(mac, "proposed").await;

    // Approval keeps the temporary objects, and the action waits, until the approved
    // Hardware is applied; then they go, and the action hears "reboot".
    assert_eq!(
        r.post(&format!("/api/v1/machines/{mac}/approve"), json!({}))
            .await
            .status(),
        200
    );
    let next = async || {
        let resp = r
            .client
            .get(format!("{}/api/v1/reports/{mac}", r.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        resp.json::<Value>().await.unwrap()["next"]
            .as_str()
            .unwrap()
            .to_string()
    };
    r.wait_for_state(mac, "approved").await;
    assert_eq!(next().await, "wait");
    assert_eq!(kube.objects("hardware").len(), 1);
    let name = r.machine(mac).await.unwrap()["machine"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let merged = r.remote.read("main", &format!("hardware/{name}.yaml")).expect("merged");
    kube.create(documents(&merged).remove(0));
    r.wait_for_state(mac, "applied").await;
    assert_eq!(next().await, "reboot");
    wait_objects(&kube, "workflows", 0).await;
    let left: Vec<Value> = kube.objects("hardware");
    assert_eq!(left.len(), 1, "only the approved Hardware is left: {left:?}");
    assert_eq!(left[0]["metadata"]["name"], name.as_str());

    // A machine the cluster already has Hardware for gets nothing.
    kube.create(hardware("node-known", "02:00:00:00:0c:09"));
    wait_cluster_index(&r, 2).await;
    // The listener drops it as known (counted there, before anything would be recorded).
    let known = metric(&r, DHCP_KNOWN).await;
    sender.send_to(&pxe_discover([2, 0, 0, 0, 0x0c, 9]), dhcp).unwrap();
    wait_metric(&r, DHCP_KNOWN, known + 1.0).await;
    assert_eq!(kube.objects("workflows").len(), 0);
    assert_eq!(kube.objects("hardware").len(), 2);
    assert!(r.machine("02:00:00:00:0c:09").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_is_bounded_and_expires() {
    let (kube, r, dhcp) = start_discovery(1, 1).await;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&pxe_discover([2, 0, 0, 0, 0x0d, 1]), dhcp).unwrap();
    wait_objects(&kube, "hardware", 1).await;
    sender.send_to(&pxe_discover([2, 0, 0, 0, 0x0d, 2]), dhcp).unwrap();
    let second = r.wait_for_state("02:00:00:00:0d:02", "waiting").await;
    assert_eq!(kube.objects("hardware").len(), 1, "over the limit: it waits, visibly");
    assert!(
        second["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["to"] == "waiting")
    );
    // After the time to live the first one's objects go, it is back to detected, and the
    // slot goes to the waiting machine without it asking again.
    let m = r.wait_for_state("02:00:00:00:0d:01", "detected").await;
    assert!(
        m["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["cause"] == "discovery expired without a report")
    );
    let second = r.wait_for_state("02:00:00:00:0d:02", "detected").await;
    assert!(
        second["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["to"] == "discovering"),
        "the waiting machine got the freed slot: {second:#}"
    );
    wait_objects(&kube, "hardware", 0).await;
    wait_objects(&kube, "workflows", 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smees_log_reports_unknown_machines_across_pod_restarts() {
    let kube = FakeKube::start().await;
    kube.add_pod("tinkerbell", "tinkerbell-6d9f", json!({"app": "tinkerbell"}));
    kube.create(hardware("node01", "3c:ec:ef:4c:4f:54"));
    let client = kube.client();
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.cluster.watch_namespace = "tinkerbell".into();
    config.cluster.smee_logs.enabled = true;
    let r = Registrar::start_app(dir, config, move |app| app.with_kube_client(client)).await;
    let line = |mac: &str| {
        format!(
            r#"{{"time":"2026-08-20T10:00:00.1Z","level":"0","msg":"Ignoring packet","logger":"smee","mac":"{mac}","xid":"0x1","error":"hardware not found: in all namespaces with MAC \"{mac}\""}}"#
        )
    };
    // Wait until someone follows the log, then log.
    let say = |mac: &str| {
        let text = line(mac);
        let kube = kube.clone();
        async move {
            for _ in 0..200 {
                if kube.log("tinkerbell-6d9f", &text) > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("nobody follows the log");
        }
    };
    wait_cluster_index(&r, 1).await;
    say("3c:ec:ef:4c:4f:54").await; // has Hardware: not a new machine
    say("02:00:00:00:0e:01").await;
    let m = r.wait_for_state("02:00:00:00:0e:01", "detected").await;
    assert_eq!(m["machine"]["source"], "smee");
    // The container restarts; following resumes and the next machine is seen.
    kube.restart_pod("tinkerbell-6d9f");
    say("02:00:00:00:0e:02").await;
    r.wait_for_state("02:00:00:00:0e:02", "detected").await;
    assert!(
        r.machine("3c:ec:ef:4c:4f:54").await.is_none(),
        "a registered MAC in Smee's log is not a machine to notice"
    );
}

/// Everything Registrar does in a cluster, in one run, and the RBAC in `deploy/` must grant
/// exactly those verbs: no more, no less.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_rbac_grants_exactly_what_the_code_uses() {
    let (kube, r, dhcp) = start_discovery(5, 3600).await;
    // (start_discovery does not follow Smee's log; a second Registrar on the same API does.)
    kube.add_pod("tinkerbell", "tinkerbell-1", json!({"app": "tinkerbell"}));
    let client = kube.client();
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.cluster.watch_namespace = "tinkerbell".into();
    config.cluster.smee_logs.enabled = true;
    let _smee = Registrar::start_app(dir, config, move |app| app.with_kube_client(client)).await;

    // Discovery objects, a report with the machine's token, approval (deletions), the merged
    // Hardware and Workflow applied, provisioning followed.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&pxe_discover([2, 0, 0, 0, 0x0f, 1]), dhcp).unwrap();
    let wf = wait_objects(&kube, "workflows", 1).await.remove(0);
    let token = wf["spec"]["hardwareMap"]["report_token"].as_str().unwrap().to_string();
    let mac = "02:00:00:00:0f:01";
    let resp = r
        .client
        .post(format!("{}/api/v1/reports", r.url))
        .bearer_auth(token)
        .json(&report_body(mac, json!({"class": "system", "serial": "RBAC1"})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    r.wait_for_state(mac, "proposed").await;
    assert_eq!(
        r.post(&format!("/api/v1/machines/{mac}/approve"), json!({}))
            .await
            .status(),
        200
    );
    let docs = documents(&r.remote.read("main", "hardware/rbac1.yaml").unwrap());
    kube.create(docs[0].clone());
    kube.create_workflow(docs[1].clone());
    kube.set_workflow_status("tinkerbell", "rbac1", json!({"state": "SUCCESS"}));
    r.wait_for_state(mac, "provisioned").await;
    let follows_logs = || kube.rbac_used().iter().any(|(_, res, _)| res == "pods/log");
    for _ in 0..200 {
        if follows_logs() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(follows_logs(), "the second Registrar never followed Smee's log");

    let text = std::fs::read_to_string(manifest_dir().join("deploy/rbac/rbac.yaml")).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for doc in text.split("\n---\n") {
        let v: Value = yaml_serde::from_str(doc).unwrap();
        if v["kind"] == "Role" {
            for rule in v["rules"].as_array().unwrap() {
                for g in rule["apiGroups"].as_array().unwrap() {
                    for res in rule["resources"].as_array().unwrap() {
                        for verb in rule["verbs"].as_array().unwrap() {
                            granted.insert((
                                g.as_str().unwrap().to_string(),
                                res.as_str().unwrap().to_string(),
                                verb.as_str().unwrap().to_string(),
                            ));
                        }
                    }
                }
            }
        }
    }
    assert_eq!(
        kube.rbac_used(),
        granted,
        "deploy/rbac/rbac.yaml must grant exactly what Registrar uses"
    );
}

mod patching;
