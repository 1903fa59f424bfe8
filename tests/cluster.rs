//! Registrar and a Kubernetes API (an in-process fake that validates Hardware against the
//! upstream CRD): registered Hardware makes MACs known, Tinkerbell's auto-discovered
//! Hardware becomes a proposal, and the watch survives drops and 410 Gone.

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
    let metrics = r
        .client
        .get(format!("{}/metrics", r.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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

// ---- PATCH on the fake API server, through the real kube client ----
//
// Registrar itself only creates and deletes (the RBAC test above holds it to that); these
// tests use their own fake so that Flux-style server-side apply and kubectl-style patches
// behave as a real apiserver's do: strict CRD validation, resourceVersion and watch events
// only on a real change, 404/409/415/422 where the apiserver answers them.

mod patching {
    use super::*;
    use futures::StreamExt;
    use kube::api::{
        Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
    };

    fn resource(kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: "tinkerbell.org".into(),
            version: "v1alpha1".into(),
            api_version: "tinkerbell.org/v1alpha1".into(),
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    fn apis(kube: &FakeKube) -> (Api<DynamicObject>, Api<DynamicObject>) {
        (
            Api::namespaced_with(kube.client(), "tinkerbell", &resource("Hardware", "hardware")),
            Api::namespaced_with(kube.client(), "tinkerbell", &resource("Workflow", "workflows")),
        )
    }

    fn rv(obj: &DynamicObject) -> String {
        obj.metadata.resource_version.clone().unwrap()
    }

    fn api_error(result: Result<DynamicObject, kube::Error>) -> (u16, String) {
        match result {
            Err(kube::Error::Api(s)) => (s.code, s.message),
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    fn json_patch(ops: Value) -> Patch<()> {
        Patch::Json(serde_json::from_value(ops).unwrap())
    }

    fn labelled(name: &str, mac: &str, labels: Value) -> Value {
        let mut hw = hardware(name, mac);
        hw["metadata"]["labels"] = labels;
        hw
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn server_side_apply_creates_then_updates_idempotently() {
        let kube = FakeKube::start().await;
        let (hw, _) = apis(&kube);
        let flux = PatchParams::apply("flux").force();
        let mut desired = labelled("node-ssa", "02:00:00:00:a0:01", json!({"rack": "r1", "role": "worker"}));

        // Apply on a missing object creates it.
        let created = hw.patch("node-ssa", &flux, &Patch::Apply(&desired)).await.unwrap();
        assert_eq!(created.metadata.labels.as_ref().unwrap()["rack"], "r1");
        assert_eq!(created.metadata.generation, Some(1));
        let managers: Vec<_> = created
            .metadata
            .managed_fields
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap()))
            .collect();
        assert_eq!(managers, vec![("flux".to_string(), "Apply".to_string())]);

        // The same apply again changes nothing: same resourceVersion, no event.
        let events = kube.event_count();
        let again = hw.patch("node-ssa", &flux, &Patch::Apply(&desired)).await.unwrap();
        assert_eq!(rv(&again), rv(&created), "a no-op apply does not bump resourceVersion");
        assert_eq!(again.metadata.uid, created.metadata.uid);
        assert_eq!(kube.event_count(), events, "and sends no watch event");

        // A changed apply: new values, a new resourceVersion and generation, same uid; a
        // label the manager stops applying is removed.
        desired["metadata"]["labels"] = json!({"rack": "r2"});
        desired["spec"]["interfaces"][0]["dhcp"]["arch"] = json!("aarch64");
        let changed = hw.patch("node-ssa", &flux, &Patch::Apply(&desired)).await.unwrap();
        assert_ne!(rv(&changed), rv(&created));
        assert_eq!(changed.metadata.uid, created.metadata.uid);
        assert_eq!(changed.metadata.generation, Some(2));
        assert_eq!(changed.metadata.labels.as_ref().unwrap().len(), 1);
        assert_eq!(changed.data["spec"]["interfaces"][0]["dhcp"]["arch"], "aarch64");
        assert_eq!(
            kube.object("hardware", "tinkerbell", "node-ssa").unwrap()["metadata"]["labels"],
            json!({"rack": "r2"})
        );

        // Labels only: the generation (spec changes) stays.
        desired["metadata"]["labels"] = json!({"rack": "r3"});
        let relabelled = hw.patch("node-ssa", &flux, &Patch::Apply(&desired)).await.unwrap();
        assert_eq!(relabelled.metadata.generation, Some(2));

        // Another manager changing a field flux owns conflicts, unless it forces.
        let mut other = json!({"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware", "metadata": {"name": "node-ssa", "labels": {"rack": "r9"}}});
        let (code, message) = api_error(
            hw.patch("node-ssa", &PatchParams::apply("kubectl"), &Patch::Apply(&other))
                .await,
        );
        assert_eq!(code, 409, "{message}");
        assert!(
            message.contains("flux") && message.contains("/metadata/labels/rack"),
            "{message}"
        );
        assert_eq!(
            kube.object("hardware", "tinkerbell", "node-ssa").unwrap()["metadata"]["labels"]["rack"],
            "r3"
        );
        // The same value is no conflict: both own it.
        other["metadata"]["labels"]["rack"] = json!("r3");
        hw.patch("node-ssa", &PatchParams::apply("kubectl"), &Patch::Apply(&other))
            .await
            .unwrap();
        other["metadata"]["labels"]["rack"] = json!("r9");
        let forced = hw
            .patch(
                "node-ssa",
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&other),
            )
            .await
            .unwrap();
        assert_eq!(forced.metadata.labels.as_ref().unwrap()["rack"], "r9");
        // Flux lost the label; its spec fields stay its own.
        let fields = forced.metadata.managed_fields.unwrap();
        let of = |m: &str| {
            fields
                .iter()
                .find(|f| f.manager.as_deref() == Some(m))
                .map(|f| serde_json::to_value(&f.fields_v1).unwrap())
                .unwrap()
        };
        assert!(of("flux")["f:metadata"].is_null(), "{:?}", of("flux"));
        assert!(!of("flux")["f:spec"]["f:interfaces"].is_null());
        assert_eq!(of("kubectl")["f:metadata"]["f:labels"]["f:rack"], json!({}));

        // Apply needs a field manager, and names the object it patches.
        let (code, _) = api_error(
            hw.patch("node-ssa", &PatchParams::default(), &Patch::Apply(&desired))
                .await,
        );
        assert_eq!(code, 400);
        let (code, message) = api_error(hw.patch("node-other", &flux, &Patch::Apply(&desired)).await);
        assert_eq!(code, 400, "{message}");
        assert!(
            kube.rbac_used()
                .contains(&("tinkerbell.org".into(), "hardware".into(), "patch".into()))
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn merge_and_json_patches_change_existing_objects_only() {
        let kube = FakeKube::start().await;
        let (hw, _) = apis(&kube);
        let pp = PatchParams::default();

        // A missing object: 404 for merge and JSON patches.
        let (code, _) = api_error(
            hw.patch(
                "node-mp",
                &pp,
                &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
            )
            .await,
        );
        assert_eq!(code, 404);
        let (code, _) = api_error(
            hw.patch(
                "node-mp",
                &pp,
                &json_patch(json!([{"op": "add", "path": "/metadata/labels", "value": {}}])),
            )
            .await,
        );
        assert_eq!(code, 404);

        let obj: DynamicObject = serde_json::from_value(labelled(
            "node-mp",
            "02:00:00:00:a0:02",
            json!({"rack": "r1", "stale": "x"}),
        ))
        .unwrap();
        let created = hw.create(&PostParams::default(), &obj).await.unwrap();

        // Merge patch (RFC 7386): maps merge, null deletes.
        let merged = hw
            .patch(
                "node-mp",
                &pp,
                &Patch::Merge(
                    json!({"metadata": {"labels": {"rack": "r2", "stale": null}}, "spec": {"tinkVersion": 2}}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            merged.metadata.labels.as_ref().unwrap().iter().collect::<Vec<_>>(),
            vec![(&"rack".to_string(), &"r2".to_string())]
        );
        assert_eq!(merged.data["spec"]["tinkVersion"], 2);
        assert_eq!(merged.data["spec"]["agentID"], "02:00:00:00:a0:02", "the rest is kept");
        assert_ne!(rv(&merged), rv(&created));
        // A merge patch that changes nothing writes nothing.
        let events = kube.event_count();
        let same = hw
            .patch(
                "node-mp",
                &pp,
                &Patch::Merge(json!({"metadata": {"labels": {"rack": "r2"}}})),
            )
            .await
            .unwrap();
        assert_eq!(rv(&same), rv(&merged));
        assert_eq!(kube.event_count(), events);

        // JSON patch (RFC 6902): add, replace, remove, copy, move and test, all or nothing.
        let patched = hw
            .patch(
                "node-mp",
                &pp,
                &json_patch(json!([
                    {"op": "test", "path": "/metadata/labels/rack", "value": "r2"},
                    {"op": "add", "path": "/metadata/labels/zone", "value": "z1"},
                    {"op": "replace", "path": "/spec/interfaces/0/dhcp/arch", "value": "aarch64"},
                    {"op": "copy", "from": "/metadata/labels/zone", "path": "/metadata/labels/zone-copy"},
                    {"op": "move", "from": "/metadata/labels/zone-copy", "path": "/metadata/labels/site"},
                    {"op": "add", "path": "/spec/interfaces/-", "value": {"dhcp": {"mac": "02:00:00:00:a0:03"}}},
                    {"op": "remove", "path": "/spec/tinkVersion"}
                ])),
            )
            .await
            .unwrap();
        assert_eq!(patched.metadata.labels.as_ref().unwrap().len(), 3);
        assert_eq!(patched.metadata.labels.as_ref().unwrap()["site"], "z1");
        assert_eq!(patched.data["spec"]["interfaces"][0]["dhcp"]["arch"], "aarch64");
        assert_eq!(
            patched.data["spec"]["interfaces"][1]["dhcp"]["mac"],
            "02:00:00:00:a0:03"
        );
        assert!(patched.data["spec"].get("tinkVersion").is_none());
        let before = kube.object("hardware", "tinkerbell", "node-mp").unwrap();
        for (ops, needle) in [
            (
                json!([{"op": "add", "path": "/metadata/labels/x", "value": "y"}, {"op": "test", "path": "/metadata/labels/rack", "value": "r1"}]),
                "test failed",
            ),
            (json!([{"op": "remove", "path": "/spec/nothing"}]), "does not exist"),
            (
                json!([{"op": "replace", "path": "/spec/interfaces/7/dhcp", "value": {}}]),
                "does not exist",
            ),
            (
                json!([{"op": "add", "path": "/spec/interfaces/7", "value": {}}]),
                "out of range",
            ),
        ] {
            let (code, message) = api_error(hw.patch("node-mp", &pp, &json_patch(ops)).await);
            assert_eq!(code, 422, "{message}");
            assert!(message.contains(needle), "{message}");
        }
        assert_eq!(
            kube.object("hardware", "tinkerbell", "node-mp").unwrap(),
            before,
            "a failed JSON patch changes nothing"
        );

        // Strategic merge patch is not for custom resources: 415, as the apiserver answers.
        let (code, message) = api_error(
            hw.patch(
                "node-mp",
                &pp,
                &Patch::Strategic(json!({"metadata": {"labels": {"a": "b"}}})),
            )
            .await,
        );
        assert_eq!(code, 415, "{message}");
        assert!(message.contains("application/merge-patch+json"), "{message}");

        // resourceVersion in a patch is a precondition; name and namespace cannot change.
        let stale = json!({"metadata": {"resourceVersion": rv(&created), "labels": {"rack": "r5"}}});
        let (code, _) = api_error(hw.patch("node-mp", &pp, &Patch::Merge(stale)).await);
        assert_eq!(code, 409);
        let fresh = json!({"metadata": {"resourceVersion": rv(&patched), "labels": {"rack": "r5"}}});
        hw.patch("node-mp", &pp, &Patch::Merge(fresh)).await.unwrap();
        let (code, _) = api_error(
            hw.patch(
                "node-mp",
                &pp,
                &Patch::Merge(json!({"metadata": {"name": "node-renamed"}})),
            )
            .await,
        );
        assert_eq!(code, 400);
        // A dry run answers with the result and stores nothing.
        let before = kube.object("hardware", "tinkerbell", "node-mp").unwrap();
        let dry = hw
            .patch(
                "node-mp",
                &PatchParams::default().dry_run(),
                &Patch::Merge(json!({"metadata": {"labels": {"rack": "dry"}}})),
            )
            .await
            .unwrap();
        assert_eq!(dry.metadata.labels.unwrap()["rack"], "dry");
        assert_eq!(kube.object("hardware", "tinkerbell", "node-mp").unwrap(), before);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_patch_with_an_unknown_field_is_rejected_and_nothing_changes() {
        let kube = FakeKube::start().await;
        let (hw, wf) = apis(&kube);
        kube.create(labelled("node-strict", "02:00:00:00:a0:04", json!({"rack": "r1"})));
        kube.create_workflow(json!({
            "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "node-strict", "namespace": "tinkerbell"},
            "spec": {"templateRef": "ubuntu", "hardwareRef": "node-strict", "hardwareMap": {"device_1": "02:00:00:00:a0:04"}}
        }));
        let hw_before = kube.object("hardware", "tinkerbell", "node-strict").unwrap();
        let wf_before = kube.object("workflows", "tinkerbell", "node-strict").unwrap();
        let mut bogus_apply = hardware("node-strict", "02:00:00:00:a0:04");
        bogus_apply["spec"]["interfaces"][0]["dhcp"]["bogus"] = json!(true);
        let attempts: Vec<(&Api<DynamicObject>, Patch<Value>)> = vec![
            (&hw, Patch::Apply(bogus_apply)),
            (&hw, Patch::Merge(json!({"spec": {"bogus": "x"}}))),
            (
                &hw,
                Patch::Merge(
                    json!({"spec": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:a0:04", "lease_time": "long"}}]}}),
                ),
            ),
            (
                &hw,
                Patch::Json(
                    serde_json::from_value(
                        json!([{"op": "add", "path": "/spec/interfaces/0/netboot/bogus", "value": 1}]),
                    )
                    .unwrap(),
                ),
            ),
            (
                &wf,
                Patch::Merge(json!({"spec": {"hardwareMap": {"device_1": "x"}, "bogus": 1}})),
            ),
            (
                &wf,
                Patch::Apply(
                    json!({"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Workflow", "metadata": {"name": "node-strict"}, "spec": {"bogus": 1}}),
                ),
            ),
        ];
        for (api, patch) in attempts {
            let pp = if matches!(patch, Patch::Apply(_)) {
                PatchParams::apply("flux").force()
            } else {
                PatchParams::default()
            };
            let (code, message) = api_error(api.patch("node-strict", &pp, &patch).await);
            assert_eq!(code, 422, "{message}");
            assert!(message.contains("is invalid"), "{message}");
        }
        assert_eq!(kube.object("hardware", "tinkerbell", "node-strict").unwrap(), hw_before);
        assert_eq!(
            kube.object("workflows", "tinkerbell", "node-strict").unwrap(),
            wf_before
        );
        // An apply of an invalid new object creates nothing.
        let mut bogus_new = hardware("node-never", "02:00:00:00:a0:05");
        bogus_new["spec"]["bogus"] = json!(1);
        let (code, _) = api_error(
            hw.patch("node-never", &PatchParams::apply("flux"), &Patch::Apply(bogus_new))
                .await,
        );
        assert_eq!(code, 422);
        assert!(kube.object("hardware", "tinkerbell", "node-never").is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn watches_and_selectors_see_patches_and_status_is_its_own_subresource() {
        let kube = FakeKube::start().await;
        let (hw, wf) = apis(&kube);
        kube.create(labelled("node-w", "02:00:00:00:a0:06", json!({"rack": "r1"})));
        let start = rv(&hw.get("node-w").await.unwrap());
        let mut events = hw.watch(&WatchParams::default(), &start).await.unwrap().boxed();
        macro_rules! next {
            () => {
                match tokio::time::timeout(Duration::from_secs(5), events.next())
                    .await
                    .expect("an event")
                    .unwrap()
                    .unwrap()
                {
                    WatchEvent::Added(o) => ("ADDED", o),
                    WatchEvent::Modified(o) => ("MODIFIED", o),
                    WatchEvent::Deleted(o) => ("DELETED", o),
                    other => panic!("{other:?}"),
                }
            };
        }

        let pp = PatchParams::default();
        hw.patch(
            "node-w",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"rack": "r2"}}})),
        )
        .await
        .unwrap();
        let (kind, obj) = next!();
        assert_eq!(
            (kind, obj.metadata.labels.unwrap()["rack"].as_str()),
            ("MODIFIED", "r2")
        );
        // A no-op patch sends no event: the next one is the next real change.
        hw.patch(
            "node-w",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"rack": "r2"}}})),
        )
        .await
        .unwrap();
        hw.patch(
            "node-new",
            &PatchParams::apply("flux"),
            &Patch::Apply(labelled("node-new", "02:00:00:00:a0:07", json!({"rack": "r2"}))),
        )
        .await
        .unwrap();
        let (kind, obj) = next!();
        assert_eq!((kind, obj.metadata.name.as_deref()), ("ADDED", Some("node-new")));
        hw.patch(
            "node-w",
            &pp,
            &json_patch(json!([{"op": "replace", "path": "/metadata/labels/rack", "value": "r3"}])),
        )
        .await
        .unwrap();
        let (kind, obj) = next!();
        assert_eq!(
            (kind, obj.metadata.labels.unwrap()["rack"].as_str()),
            ("MODIFIED", "r3")
        );

        // Label selectors see the patched labels.
        let names = |l: kube::api::ObjectList<DynamicObject>| {
            l.items
                .into_iter()
                .map(|o| o.metadata.name.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(hw.list(&ListParams::default().labels("rack=r3")).await.unwrap()),
            vec!["node-w"]
        );
        assert_eq!(
            names(hw.list(&ListParams::default().labels("rack=r2")).await.unwrap()),
            vec!["node-new"]
        );
        assert!(names(hw.list(&ListParams::default().labels("rack=r1")).await.unwrap()).is_empty());

        // Status: the object's patches leave it alone, the subresource changes only it.
        let with_status = hw
            .patch(
                "node-w",
                &pp,
                &Patch::Merge(json!({"status": {"state": "ignored"}, "metadata": {"labels": {"rack": "r4"}}})),
            )
            .await
            .unwrap();
        assert!(with_status.data.get("status").is_none());
        let status = hw
            .patch_status(
                "node-w",
                &pp,
                &Patch::Merge(json!({"status": {"state": "in_use"}, "spec": {"agentID": "ignored"}})),
            )
            .await
            .unwrap();
        assert_eq!(status.data["status"]["state"], "in_use");
        assert_eq!(status.data["spec"]["agentID"], "02:00:00:00:a0:06");
        assert_eq!(
            status.metadata.generation, with_status.metadata.generation,
            "status is no spec change"
        );
        let (kind, _) = next!();
        assert_eq!(kind, "MODIFIED");
        let (kind, obj) = next!();
        assert_eq!(
            (kind, obj.data["status"]["state"].as_str()),
            ("MODIFIED", Some("in_use"))
        );

        // Workflows are watched and patched the same way.
        kube.create_workflow(json!({
            "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "node-w", "namespace": "tinkerbell"},
            "spec": {"templateRef": "ubuntu", "hardwareRef": "node-w", "hardwareMap": {"device_1": "02:00:00:00:a0:06"}}
        }));
        let wrv = rv(&wf.get("node-w").await.unwrap());
        let mut wf_events = wf.watch(&WatchParams::default(), &wrv).await.unwrap().boxed();
        wf.patch_status(
            "node-w",
            &pp,
            &Patch::Merge(json!({"status": {"state": "STATE_SUCCESS"}})),
        )
        .await
        .unwrap();
        match tokio::time::timeout(Duration::from_secs(5), wf_events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Modified(o) => assert_eq!(o.data["status"]["state"], "STATE_SUCCESS"),
            other => panic!("{other:?}"),
        }
        let used = kube.rbac_used();
        assert!(
            used.contains(&("tinkerbell.org".into(), "hardware/status".into(), "patch".into())),
            "{used:?}"
        );
        assert!(
            used.contains(&("tinkerbell.org".into(), "workflows/status".into(), "patch".into())),
            "{used:?}"
        );
    }
}
