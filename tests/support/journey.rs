//! The journey's steps as a user checks them, shared by the end-to-end tests on the binary
//! (tests/journey.rs, tests/journey_dhcp.rs).

use serde_json::{Value, json};

use super::binary::{Process, eventually, example, kubeconfig, listen_on, point_at_github, set, token_env};
use super::fake_github::FakeGithub;
use super::fake_kube::FakeKube;
use super::{OPERATOR_TOKEN, REPORT_TOKEN, documents, lshw, report_body};

pub const NS: &str = "tinkerbell";

/// The binary on examples/all.yaml against `gh` and `kube` (seed them first: what is there
/// before the start is there from the first look), noticing machines from Smee's log (DHCP
/// off: tests/journey_dhcp.rs covers it); `edit` adjusts the config.
pub async fn start_on_cluster(
    dir: &std::path::Path,
    gh: &FakeGithub,
    kube: &FakeKube,
    edit: impl FnOnce(&mut Value),
) -> Process {
    let mut p = launch_on_cluster(dir, gh, kube, edit);
    p.wait_ready().await;
    p
}

/// As `start_on_cluster`, without waiting for it to be ready.
pub fn launch_on_cluster(
    dir: &std::path::Path,
    gh: &FakeGithub,
    kube: &FakeKube,
    edit: impl FnOnce(&mut Value),
) -> Process {
    kube.add_pod(NS, "tinkerbell-7f9c", json!({"app": "tinkerbell"}));
    let mut config = example("all.yaml");
    point_at_github(&mut config, dir, gh);
    let url = listen_on(&mut config);
    set(&mut config, "dhcp.enabled", json!(false));
    set(&mut config, "cluster.smee_logs.enabled", json!(true));
    set(&mut config, "cluster.discovery.report_url", json!(url));
    edit(&mut config);
    let kubeconfig = kubeconfig(dir, &kube.url);
    let mut env = token_env();
    env.push(("KUBECONFIG", kubeconfig.to_str().unwrap()));
    *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    Process::start(dir, config, &env)
}

/// A Hardware registered before Registrar, for another machine.
pub fn registered(name: &str, mac: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"interfaces": [{"dhcp": {"mac": mac, "ip": {"address": ip, "netmask": "255.255.255.0", "family": 4}}}]}
    })
}

/// The line Smee logs when it ignores an unknown MAC.
pub fn smee_line(mac: &str) -> String {
    format!(
        r#"{{"time":"2026-12-05T10:00:00.1Z","level":"0","msg":"Ignoring packet","logger":"smee","mac":"{mac}","xid":"0x1","error":"hardware not found: in all namespaces with MAC \"{mac}\""}}"#
    )
}

/// Smee logs `mac` as unknown (once Registrar follows the log).
pub async fn smee_sees(kube: &FakeKube, mac: &str) {
    let line = smee_line(mac);
    eventually(30, "Registrar to follow Smee's log", || async {
        (kube.log("tinkerbell-7f9c", &line) > 0).then_some(())
    })
    .await;
}

/// Tells the story as it goes (`cargo test --test journey -- --nocapture` shows it).
pub fn step(what: &str) {
    eprintln!("journey: {what}");
}

/// A discovery action's report of `lshw_file`'s facts for `mac`, with the shared report token.
pub async fn post_report(url: &str, mac: &str, lshw_file: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/api/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .json(&report_body(mac, lshw(lshw_file)))
        .send()
        .await
        .unwrap()
}

/// A report of `specs` for `mac` with the shared report token; it must be taken (202).
pub async fn report_specs(url: &str, mac: &str, specs: Value) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .json(&report_body(mac, specs))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}

/// The supermicro fixture as another machine of the same model: its own serial and system
/// UUID (a shared one would be an identity warning).
pub fn supermicro(serial: &str, uuid_tail: u32) -> Value {
    let mut specs = lshw("supermicro-ssg-6029p-x11dph-t.json");
    specs["serial"] = json!(serial);
    specs["configuration"]["uuid"] = json!(format!("00000000-0000-0000-0000-{uuid_tail:012x}"));
    specs
}

/// An operator's CSV import into `p` (batch `name`); it must be taken.
pub async fn import_csv(url: &str, name: &str, csv: String) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/v1/imports?mode=expected&name={name}"))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "import: {}", resp.text().await.unwrap());
}

/// A report of `specs` for `mac` naming its BMC at `bmc`, with the shared report token;
/// it must be taken (202).
pub async fn report_with_bmc(url: &str, mac: &str, specs: Value, bmc: &str) {
    let mut body = report_body(mac, specs);
    body["bmc_address"] = json!(bmc);
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}

pub async fn get(url: &str, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// An operator's review step through the API (`approve`, `reject`, …) with `body`; it
/// must be answered 200.
pub async fn review(p: &Process, mac: &str, action: &str, body: Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/machines/{mac}/{action}", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{action} {mac}: {}", resp.text().await.unwrap());
}

pub async fn machine(p: &Process, mac: &str) -> Value {
    get(&format!("{}/api/v1/machines/{mac}", p.url), OPERATOR_TOKEN).await.1
}

pub async fn state_reached(p: &Process, mac: &str, state: &str) -> Value {
    eventually(60, &format!("{mac} to be {state}"), || async {
        let m = machine(p, mac).await;
        (m["machine"]["state"] == state).then_some(m)
    })
    .await
}

/// What the discovery action asks while it waits: `next` (wait, reboot, poweroff).
pub async fn next_step(p: &Process, mac: &str, token: &str) -> String {
    let (status, body) = get(&format!("{}/api/v1/reports/{mac}", p.url), token).await;
    assert_eq!(status, 200, "GET /api/v1/reports/{mac}: {body}");
    body["next"].as_str().unwrap().to_string()
}

/// The Template a proposal's Workflow names.
pub fn template_ref(manifest: &str) -> String {
    documents(manifest)
        .into_iter()
        .find(|d| d["kind"] == "Workflow")
        .and_then(|w| w["spec"]["templateRef"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Applies the manifests a merge put on the base branch, as Flux or Argo CD would: every
/// Hardware and Workflow in the machine's file (the fake API server validates them).
pub fn apply_merged(gh: &FakeGithub, kube: &FakeKube, path: &str) -> String {
    let text = gh
        .repo()
        .read("main", path)
        .unwrap_or_else(|| panic!("{path} is not on main"));
    let mut hardware = None;
    for doc in documents(&text) {
        match doc["kind"].as_str() {
            Some("Hardware") => {
                hardware = doc["metadata"]["name"].as_str().map(str::to_string);
                kube.create(doc);
            }
            Some("Workflow") => kube.create_workflow(doc),
            _ => {}
        }
    }
    hardware.expect("the merged file holds a Hardware")
}

/// From the moment a machine is noticed: the rest of the journey, shared by every source.
pub async fn journey_after_detection(p: &mut Process, gh: &FakeGithub, kube: &FakeKube, mac: &str) {
    let dashed = mac.replace(':', "-");
    let temp = format!("registrar-discover-{dashed}");
    // Booted into discovery: a temporary Hardware Smee serves, and the Workflow that reports.
    step("noticed: waiting for the temporary Hardware and Workflow");
    let workflow = eventually(30, "the temporary Workflow", || async {
        kube.object("workflows", NS, &temp)
    })
    .await;
    assert!(kube.object("hardware", NS, &temp).is_some(), "the temporary Hardware");
    let token = workflow["spec"]["hardwareMap"]["report_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(workflow["spec"]["hardwareMap"]["max_wait_seconds"], "86400");
    state_reached(p, mac, "discovering").await;

    // The discovery action reports with its own token, then waits.
    step("booted into discovery; the action reports with its own token");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/reports", p.url))
        .bearer_auth(&token)
        .json(&report_body(mac, lshw("supermicro-ssg-6029p-x11dph-t.json")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    assert_eq!(next_step(p, mac, &token).await, "wait");

    // One pull request, from Registrar's branch, labelled with the rules' workflow.
    step("reported; waiting for the pull request");
    let pr = eventually(60, "the pull request", || async {
        gh.pulls()
            .into_iter()
            .find(|p| p.head.contains(&dashed) && p.open && !p.labels.is_empty())
    })
    .await;
    assert!(pr.labels.iter().any(|l| l == "workflow/ubuntu-2404"), "{:?}", pr.labels);
    let proposed = state_reached(p, mac, "proposed").await;
    let path = proposed["proposal"]["path"].as_str().unwrap().to_string();
    assert_eq!(template_ref(&gh.repo().read(&pr.head, &path).unwrap()), "ubuntu-2404");

    // A pod restart in the middle of the wait: the action's token still works.
    step("pull request open; restarting Registrar mid-wait");
    p.restart().await;
    assert_eq!(next_step(p, mac, &token).await, "wait");

    // The reviewer picks another workflow with a label: the branch is re-rendered.
    step("a reviewer labels the pull request workflow/ubuntu-2204");
    let resp = gh.label(pr.number, "workflow/ubuntu-2204", "reviewer").await;
    assert!(resp.status().is_success(), "label delivery: {}", resp.status());
    eventually(60, "the branch re-rendered for ubuntu-2204", || async {
        gh.repo()
            .read(&pr.head, &path)
            .filter(|f| template_ref(f) == "ubuntu-2204")
            .map(|_| ())
    })
    .await;
    eventually(60, "the machine's workflow to be ubuntu-2204", || async {
        (machine(p, mac).await["machine"]["workflow"] == "ubuntu-2204").then_some(())
    })
    .await;

    // Merging approves. The temporary objects stay until the approved Hardware is applied,
    step("re-rendered; the reviewer merges");
    // and the action keeps waiting: rebooting now would find no Hardware for its MAC.
    let resp = gh.merge(pr.number, "reviewer").await;
    assert!(resp.status().is_success(), "merge delivery: {}", resp.status());
    state_reached(p, mac, "approved").await;
    assert_eq!(template_ref(&gh.repo().read("main", &path).unwrap()), "ubuntu-2204");
    assert_eq!(next_step(p, mac, &token).await, "wait");
    assert!(
        kube.object("hardware", NS, &temp).is_some(),
        "the temporary Hardware must stay until the apply"
    );
    // Flux is slow today: past the hand-off timeout the machine says why it waits.
    step("approved; the action still waits; Flux has not applied yet");
    let overdue = eventually(30, "the hand-off to be shown overdue", || async {
        let m = machine(p, mac).await;
        let overdue = m["machine"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Flux or Argo CD"));
        overdue.then_some(m)
    })
    .await;
    assert_eq!(overdue["machine"]["state"], "approved");
    assert_eq!(next_step(p, mac, &token).await, "wait");

    // Flux applies the merge.
    step("Flux applies the merged Hardware and Workflow");
    let name = apply_merged(gh, kube, &path);
    eventually(30, "the action to be told to reboot", || async {
        (next_step(p, mac, &token).await == "reboot").then_some(())
    })
    .await;
    assert!(
        kube.object("hardware", NS, &temp).is_none(),
        "the temporary Hardware is gone before 'reboot'"
    );
    assert!(
        kube.object("workflows", NS, &temp).is_none(),
        "the temporary Workflow is gone before 'reboot'"
    );
    assert!(kube.object("hardware", NS, &name).is_some());
    let applied = machine(p, mac).await;
    assert_eq!(applied["machine"]["state"], "applied");
    assert!(applied["machine"]["last_error"].is_null(), "{applied:#}");

    // tink-controller runs the provisioning Workflow to success.
    step("the action was told to reboot; the Workflow succeeds");
    kube.set_workflow_status(NS, &name, json!({"state": "SUCCESS"}));
    state_reached(p, mac, "provisioned").await;
    step("provisioned");
    assert!(p.stop().success());
}
