//! All of it together, on the shipped binary with examples/all.yaml: a real DHCP client
//! (busybox udhcpc, as a PXE ROM announces itself) in a network namespace of the test's own,
//! joined to the host by a veth pair on which Registrar snoops, through discovery, GitHub and
//! the cluster to "provisioned". Needs root, `ip` and busybox: CI has them, and with
//! REGISTRAR_CI=1 their absence fails the test instead of skipping it.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::binary::{Process, eventually, example, free_port, kubeconfig, point_at_github, set, token_env};
use support::fake_github::FakeGithub;
use support::fake_kube::FakeKube;
use support::*;

/// A network namespace holding one end of a veth pair; the other end stays on the host,
/// where Registrar listens. Removed on drop, also when the test fails.
struct ClientNet {
    ns: String,
    host_if: String,
    client_if: String,
}

impl ClientNet {
    fn create(mac: &str) -> ClientNet {
        let id = std::process::id() % 100_000;
        let net = ClientNet {
            ns: format!("regjourney{id}"),
            host_if: format!("rjh{id}"),
            client_if: format!("rjc{id}"),
        };
        ip(&["netns", "add", &net.ns]);
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.client_if,
        ]);
        ip(&["link", "set", &net.client_if, "netns", &net.ns]);
        ip(&["-n", &net.ns, "link", "set", &net.client_if, "address", mac]);
        ip(&["-n", &net.ns, "link", "set", &net.client_if, "up"]);
        ip(&["link", "set", &net.host_if, "up"]);
        net
    }

    /// A PXE ROM's DISCOVERs (vendor class PXEClient, x86-64 UEFI), then it gives up.
    fn pxe_boot(&self) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "busybox", "udhcpc", "-i", &self.client_if])
            .args([
                "-n",
                "-q",
                "-t",
                "3",
                "-T",
                "1",
                "-s",
                "/bin/true",
                "-V",
                "PXEClient:Arch:00007:UNDI:003016",
            ])
            .output()
            .unwrap()
    }
}

impl Drop for ClientNet {
    fn drop(&mut self) {
        // Deleting the namespace removes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root to create network namespaces and bind port 67".into());
    }
    for (tool, package) in [("ip", "iproute2"), ("busybox", "busybox")] {
        if !installed(tool) {
            return Some(format!("needs `{tool}` (apt-get install {package})"));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn all_together_from_a_pxe_dhcp_request_to_provisioned() {
    if skip_unless_ci(
        "all_together_from_a_pxe_dhcp_request_to_provisioned",
        missing_prerequisite(),
    ) {
        return;
    }
    let mac = "0c:c4:7a:dd:cc:01";
    let net = ClientNet::create(mac);
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    kube.add_pod("tinkerbell", "tinkerbell-1", json!({"app": "tinkerbell"}));

    let mut config = example("all.yaml");
    point_at_github(&mut config, dir.path(), &gh);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    set(&mut config, "server.listen", json!(format!("127.0.0.1:{port}")));
    // As the example says, on port 67 — but only on the test's own veth.
    set(&mut config, "dhcp.listen", json!("0.0.0.0:67"));
    set(&mut config, "dhcp.interface", json!(net.host_if));
    set(&mut config, "cluster.discovery.report_url", json!(url));
    set(&mut config, "cluster.handoff_timeout_seconds", json!(1));
    let kubeconfig = kubeconfig(dir.path(), &kube.url);
    let mut env = token_env();
    env.push(("KUBECONFIG", kubeconfig.to_str().unwrap()));
    let mut p = Process::start(dir.path(), config, &env);
    *gh.hook_url.lock().unwrap() = Some(format!("{url}/webhooks/github"));
    let ready: Value = p.wait_ready().await;
    assert_eq!(ready["checks"]["dhcp"]["ready"], true, "{ready:#}");

    let out = net.pxe_boot();
    assert!(
        out.status.code().is_some(),
        "udhcpc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = eventually(30, "the DHCP request to be noticed", || async {
        let (status, body) = support::journey::get(&format!("{url}/api/v1/machines/{mac}"), OPERATOR_TOKEN).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(seen["machine"]["source"], "dhcp", "{seen:#}");
    assert_eq!(seen["machine"]["sighting"]["uefi"], true, "{seen:#}");
    support::journey::journey_after_detection(&mut p, &gh, &kube, mac).await;
}
