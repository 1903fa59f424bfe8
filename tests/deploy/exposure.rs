//! What the shipped manifests expose answers nobody without a token. Every TCP port an
//! installation opens (its Service, its container ports, and with `hostNetwork` the node's
//! addresses) is Registrar's one HTTP port; Ingresses route to that port only. The binary,
//! started on each installation's own config.yaml, is then asked for every route without a
//! token, as a machine on the provisioning network would: the API, the console and
//! `/metrics` all refuse, and nothing is stored.

use super::*;
use support::binary::{Process, kubeconfig, point_at_github, set, token_env};
use support::fake_github::FakeGithub;
use support::fake_kube::FakeKube;

const MAC: &str = "0c:c4:7a:66:00:01";

/// The TCP ports an installation opens, by number or name, with where each comes from.
fn exposed_tcp_ports(objects: &[Value]) -> Vec<(String, Value)> {
    let mut ports = vec![];
    let daemonsets = find(objects, "DaemonSet");
    for workload in std::iter::once(deployment(objects)).chain(daemonsets) {
        for p in container(workload)["ports"].as_array().into_iter().flatten() {
            if p["protocol"].as_str().unwrap_or("TCP") == "TCP" {
                ports.push(("containerPort".to_string(), p["containerPort"].clone()));
            }
        }
    }
    for service in find(objects, "Service") {
        for p in service["spec"]["ports"].as_array().unwrap() {
            if p["protocol"].as_str().unwrap_or("TCP") == "TCP" {
                ports.push((
                    format!("Service {}", service["metadata"]["name"]),
                    p["targetPort"].clone(),
                ));
            }
        }
    }
    for ingress in find(objects, "Ingress") {
        for rule in ingress["spec"]["rules"].as_array().unwrap() {
            for path in rule["http"]["paths"].as_array().unwrap() {
                let port = &path["backend"]["service"]["port"];
                let port = if port["name"].is_string() {
                    port["name"].clone()
                } else {
                    port["number"].clone()
                };
                ports.push((format!("Ingress {}", ingress["metadata"]["name"]), port));
            }
        }
    }
    ports
}

/// A request: method, path, and (content type, body) where the route takes one.
type Ask = (reqwest::Method, String, Option<(&'static str, String)>);

/// Routes nobody may use without a token, with a body where the route takes one.
fn guarded_routes() -> Vec<Ask> {
    use reqwest::Method;
    let report = report_body(MAC, lshw("supermicro-ssg-6029p-x11dph-t.json")).to_string();
    let json = |b: &str| Some(("application/json", b.to_string()));
    let form = |b: &str| Some(("application/x-www-form-urlencoded", b.to_string()));
    vec![
        (Method::POST, "/api/v1/reports".into(), json(&report)),
        (Method::POST, "/register".into(), json(&report)),
        (
            Method::POST,
            "/api/v1/sightings".into(),
            json(&format!(r#"{{"sightings": [{{"mac": "{MAC}"}}]}}"#)),
        ),
        (Method::GET, format!("/api/v1/reports/{MAC}"), None),
        (Method::GET, "/api/v1/machines".into(), None),
        (Method::GET, format!("/api/v1/machines/{MAC}"), None),
        (Method::POST, format!("/api/v1/machines/{MAC}/approve"), json("{}")),
        (Method::POST, format!("/api/v1/proposals/{MAC}/reject"), json("{}")),
        (Method::GET, "/api/v1/proposals".into(), None),
        (Method::GET, "/api/v1/ipam".into(), None),
        (Method::GET, "/api/v1/status".into(), None),
        (Method::GET, "/api/v1/openapi.json".into(), None),
        (Method::GET, "/api/v1/imports".into(), None),
        (
            Method::POST,
            "/api/v1/imports".into(),
            Some(("text/csv", format!("mac,hostname\n{MAC},stolen\n"))),
        ),
        (Method::GET, "/metrics".into(), None),
        (Method::GET, "/".into(), None),
        (Method::GET, format!("/machines/{MAC}"), None),
        (Method::POST, format!("/machines/{MAC}/approve"), form("csrf=x")),
        (
            Method::POST,
            "/machines/bulk".into(),
            form(&format!("csrf=x&action=approve&mac={MAC}")),
        ),
        (Method::GET, "/import".into(), None),
        (Method::POST, "/import".into(), form(&format!("csrf=x&csv=mac%0A{MAC}"))),
        (Method::GET, "/imports".into(), None),
        (Method::GET, "/status".into(), None),
        (Method::GET, "/events".into(), None),
        (
            Method::POST,
            "/webhooks/github".into(),
            json(r#"{"action":"closed","number":1,"pull_request":{"number":1,"merged":true}}"#),
        ),
    ]
}

/// The binary on an installation's own config.yaml: the fakes stand in for GitHub and the
/// cluster where the config uses them; DHCP capture (UDP, and root) is left out, the HTTP
/// surface is the same without it.
async fn start_as_shipped(
    name: &str,
    objects: &[Value],
    dir: &Path,
) -> (Process, Option<FakeGithub>, Option<FakeKube>) {
    let mut config: Value = yaml_serde::from_str(&shipped_config(name, objects)).unwrap();
    set(&mut config, "dhcp.enabled", json!(false));
    let mut env = token_env();
    let gh = if config["forge"]["kind"] == "github" {
        let gh = FakeGithub::start().await;
        point_at_github(&mut config, dir, &gh);
        Some(gh)
    } else {
        None
    };
    let kube = if config["cluster"]["enabled"] == true {
        let kube = FakeKube::start().await;
        kube.add_pod("tinkerbell", "tinkerbell-7f9c", json!({"app": "tinkerbell"}));
        Some(kube)
    } else {
        None
    };
    let kubeconfig_path = kube.as_ref().map(|k| kubeconfig(dir, &k.url));
    if let Some(path) = &kubeconfig_path {
        env.push(("KUBECONFIG", path.to_str().unwrap()));
    }
    let p = Process::start(dir, config, &env);
    (p, gh, kube)
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_shipped_manifests_expose_refuses_everyone_without_a_token() {
    if kubectl_missing() {
        return;
    }
    // A fresh connection per request: a refusal may close the connection before reading
    // the body it refused, and a pooled one would then fail the next request.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut asked = vec![];
    for (name, objects) in installs() {
        let http = container(deployment(objects))["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap_or_else(|| panic!("{name}: no http port"))["containerPort"]
            .clone();
        for (from, port) in exposed_tcp_ports(objects) {
            assert!(
                port == "http" || port == http,
                "{name}: {from} exposes port {port}, which is not Registrar's HTTP port {http}"
            );
        }

        let dir = tempfile::tempdir().unwrap();
        let (mut p, _gh, _kube) = start_as_shipped(name, objects, dir.path()).await;
        p.wait_ready().await;
        for (method, path, body) in guarded_routes() {
            let mut request = client.request(method.clone(), format!("{}{path}", p.url));
            if let Some((content_type, body)) = body {
                request = request.header("content-type", content_type).body(body);
            }
            let resp = request.send().await.unwrap();
            let status = resp.status();
            let location = resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string())
                .unwrap_or_default();
            let text = resp.text().await.unwrap_or_default();
            // GitHub's webhook is signed, not authenticated by token; without the GitHub
            // forge there is nothing there.
            let no_forge = path == "/webhooks/github" && status == 404 && text.contains("not configured");
            assert!(
                matches!(status.as_u16(), 401 | 403)
                    || status.is_redirection() && location.starts_with("/login")
                    || no_forge,
                "{name}: {method} {path} without a token answered {status} {location}: {text}"
            );
            assert!(!text.contains("registrar_machines"), "{name}: {method} {path}: {text}");
        }
        // The same server answers someone with a token, and kept nothing of the above.
        let (status, machines) = support::journey::get(&format!("{}/api/v1/machines", p.url), OPERATOR_TOKEN).await;
        assert_eq!(status, 200, "{name}: {machines}");
        assert_eq!(
            machines["machines"],
            json!([]),
            "{name}: refused requests stored nothing"
        );
        let (status, imports) = support::journey::get(&format!("{}/api/v1/imports", p.url), OPERATOR_TOKEN).await;
        assert_eq!(status, 200, "{name}: {imports}");
        assert_eq!(imports["imports"], json!([]), "{name}: refused imports stored nothing");
        assert!(p.stop().success(), "{name}: {}", p.log());
        asked.push(name.as_str());
    }
    for setup in [
        "base",
        "example-github",
        "component-dhcp-snooping",
        "component-servicemonitor",
    ] {
        assert!(asked.contains(&setup), "{setup} was not asked: {asked:?}");
    }
}
