//! The replicas component (deploy/components/replicas/): two replicas on one PostgreSQL
//! store, one leader on a Lease. Its Role grants exactly the verbs the election uses (run
//! here against the fake API server, as tests/cluster/ does for deploy/rbac/rbac.yaml), its
//! Deployment is what its README promises, and the configuration it documents elects a
//! leader.

use std::collections::BTreeSet;
use std::time::Duration;

use registrar::cluster::lease::{Election, Role};
use registrar::config::{Config, LeaderElectionConfig};
use support::fake_kube::FakeKube;

use super::*;

/// What the Deployment's REGISTRAR_POSTGRES_URL (the Secret `registrar-postgres`) stands for
/// when a configuration is loaded here.
pub const POSTGRES_URL: &str = "postgres://registrar@postgres.invalid:5432/registrar";

const COMPONENT: &str = "deploy/components/replicas";

/// (apiGroup, resource, verb) for everything a Role's rules grant.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(
            rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null(),
            "{rule}"
        );
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

fn role_in(path: &str) -> Value {
    yaml_documents(&read(path))
        .into_iter()
        .find(|o| o["kind"] == "Role")
        .unwrap_or_else(|| panic!("{path} has no Role"))
}

fn lease_grants() -> BTreeSet<(String, String, String)> {
    ["create", "get", "update"]
        .into_iter()
        .map(|verb| ("coordination.k8s.io".into(), "leases".into(), verb.into()))
        .collect()
}

/// A configuration a replica can run with: it elects a leader on a Lease in the Lease Role's
/// namespace, on a store the replicas share, and its GitOps repository is not in the pod's
/// own state directory.
pub fn assert_fit_for_replicas(name: &str, config: &Config, namespace: &str) {
    assert!(
        config.cluster.enabled,
        "{name}: leader election needs the Kubernetes API (cluster.enabled)"
    );
    assert!(
        config.cluster.leader_election.enabled,
        "{name}: replicas elect a leader (cluster.leader_election.enabled)"
    );
    assert!(
        config.store.postgres_url.is_some() || config.store.postgres_url_file.is_some(),
        "{name}: replicas share a PostgreSQL store"
    );
    assert_eq!(
        config.tinkerbell.namespace, namespace,
        "{name}: the Lease is where the Lease Role grants it"
    );
    assert_eq!(
        config.cluster.watch_namespace, config.tinkerbell.namespace,
        "{name}: watching another namespace (or all) needs more than the shipped Role"
    );
    let remote = config.remote_url();
    assert!(
        !remote.starts_with("file://"),
        "{name}: the GitOps repository must be outside the pods, not in each one's state directory: {remote}"
    );
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not happen within 10 s");
}

/// Two replicas on the fake API server: the first creates the Lease and renews it, the second
/// stands by, the first stops cleanly and gives the Lease up, the second takes it over. That
/// is every way the election touches the Lease, and the component's Role grants exactly
/// those verbs: no more, no less. deploy/rbac/rbac.yaml grants none of them, so a single
/// replica (the base) cannot touch a Lease.
#[tokio::test(flavor = "multi_thread")]
async fn the_lease_role_grants_exactly_what_the_election_uses() {
    let kube = FakeKube::start().await;
    let role = role_in(&format!("{COMPONENT}/rbac.yaml"));
    let namespace = role["metadata"]["namespace"].as_str().unwrap().to_string();
    let lease = LeaderElectionConfig::default().lease_name;
    let elect = |identity: &str| Election::new(kube.client(), &namespace, &lease, identity, Duration::from_secs(3));
    let holder = || {
        kube.lease(&namespace, &lease)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };

    let readiness = std::sync::Arc::new(registrar::supervisor::Readiness::default());
    let (stop_a, shutdown_a) = registrar::shutdown::channel();
    let (stopped_a, pipelines_a) = registrar::shutdown::channel();
    let (a, run_a) = elect("registrar-a").start(readiness.clone(), shutdown_a, pipelines_a);
    let run_a = tokio::spawn(run_a);
    tokio::time::timeout(Duration::from_secs(10), a.wait())
        .await
        .expect("the first replica creates the Lease and leads");

    let (stop_b, shutdown_b) = registrar::shutdown::channel();
    let (stopped_b, pipelines_b) = registrar::shutdown::channel();
    let (b, run_b) = elect("registrar-b").start(readiness.clone(), shutdown_b, pipelines_b);
    let run_b = tokio::spawn(run_b);
    eventually("the second replica standing by", || {
        b.role() == Role::StandingBy(Some("registrar-a".into()))
    })
    .await;
    // The holder renews every third of the duration: past one period it has.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.role(), Role::Leading);
    assert_eq!(holder().as_deref(), Some("registrar-a"));

    // A clean stop: the Lease is given up once the leader's pipelines have stopped.
    stop_a.fire();
    stopped_a.fire();
    run_a.await.unwrap().expect("a clean stop");
    tokio::time::timeout(Duration::from_secs(10), b.wait())
        .await
        .expect("the second replica takes the Lease the first gave up");
    assert_eq!(holder().as_deref(), Some("registrar-b"));
    stop_b.fire();
    stopped_b.fire();
    run_b.await.unwrap().expect("a clean stop");

    assert_eq!(
        kube.rbac_used(),
        lease_grants(),
        "the election uses get, create and update on leases"
    );
    assert_eq!(
        grants(&role),
        kube.rbac_used(),
        "{COMPONENT}/rbac.yaml must grant exactly what the election uses"
    );
    assert!(
        grants(&role_in("deploy/rbac/rbac.yaml"))
            .iter()
            .all(|(group, _, _)| group != "coordination.k8s.io"),
        "the single replica's Role grants nothing on Leases"
    );
}

#[test]
fn the_replicas_component_runs_two_replicas_on_one_store() {
    if kubectl_missing() {
        return;
    }
    let name = "component-replicas";
    let objects = &rendered()[name];
    let d = deployment(objects);
    let ns = ns_of(d);
    assert_eq!(d["spec"]["replicas"], 2, "{name}");
    let c = container(d);
    let env = |k: &str| env_var(c, k).unwrap_or_else(|| panic!("{name}: no {k}"));
    assert_eq!(
        env("POD_NAME")["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.name"}}),
        "{name}: the replica's identity in the Lease is its pod's name"
    );
    assert_eq!(
        env("REGISTRAR_POSTGRES_URL")["valueFrom"],
        json!({"secretKeyRef": {"name": "registrar-postgres", "key": "url"}}),
        "{name}: the store's URL, from a required Secret"
    );
    for (k, key) in [
        ("REGISTRAR_REPORT_TOKEN", "report-token"),
        ("REGISTRAR_OPERATOR_TOKEN", "operator-token"),
    ] {
        assert_eq!(
            env(k)["valueFrom"],
            json!({"secretKeyRef": {"name": "registrar-tokens", "key": key, "optional": false}}),
            "{name}: both replicas take the same tokens"
        );
    }

    // The Lease Role: exactly get, create and update on leases, bound to the pod's account.
    let roles = find(objects, "Role");
    let role = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "registrar-leader-election")
        .unwrap_or_else(|| panic!("{name}: no Role registrar-leader-election"));
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "update"]}]),
        "{name}"
    );
    assert_eq!(grants(role), lease_grants(), "{name}");
    assert_eq!(role["metadata"]["namespace"], ns, "{name}");

    // A drain leaves one serving; the budget is about these pods.
    let budgets = find(objects, "PodDisruptionBudget");
    assert_eq!(budgets.len(), 1, "{name}");
    assert_eq!(budgets[0]["spec"]["minAvailable"], 1, "{name}");
    assert_eq!(budgets[0]["metadata"]["namespace"], ns, "{name}");
    let labels = d["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
    for (k, v) in budgets[0]["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels.get(k), Some(v), "{name}: the budget selects Registrar's pods");
    }
    let services = find(objects, "Service");
    assert_eq!(services.len(), 1, "{name}");
    assert_eq!(
        services[0]["spec"]["sessionAffinity"], "ClientIP",
        "{name}: a console session stays on the replica that holds it"
    );

    // What the README tells people to run names these objects.
    let readme = read(&format!("{COMPONENT}/README.md"));
    let lease = LeaderElectionConfig::default().lease_name;
    for command in [
        format!("kubectl -n {ns} create secret generic registrar-postgres"),
        "--from-literal=url='postgres://".to_string(),
        format!("kubectl -n {ns} create secret generic registrar-tokens"),
        format!("kubectl -n {ns} get lease {lease} -o jsonpath='{{.spec.holderIdentity}}'"),
    ] {
        assert!(readme.contains(&command), "README.md lacks {command}");
    }
}

/// The configuration in the kustomization's comment: the `#   cluster:` block.
fn documented_in_kustomization() -> Value {
    let text = read(&format!("{COMPONENT}/kustomization.yaml"));
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "#   cluster:")
        .take_while(|l| l.starts_with("#   "))
        .map(|l| &l[4..])
        .collect();
    assert!(!block.is_empty(), "kustomization.yaml documents no `cluster:` block");
    yaml_serde::from_str(&block.join("\n")).unwrap()
}

/// The configuration in the README: the YAML block after "Add to it:".
fn documented_in_readme() -> Value {
    let text = read(&format!("{COMPONENT}/README.md"));
    let (_, after) = text
        .split_once("Add to it:")
        .expect("README.md says what to add to config.yaml");
    let (_, block) = after.split_once("```yaml\n").unwrap();
    let (block, _) = block.split_once("```").unwrap();
    yaml_serde::from_str(block).unwrap()
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                merge(into.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (into, from) => *into = from.clone(),
    }
}

fn load(dir: &Path, name: &str, config: &Value) -> anyhow::Result<Config> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml_serde::to_string(config).unwrap()).unwrap();
    Config::load(Some(&path))
}

/// The full setup's config.yaml (deploy/examples/github) with what the component says to add
/// runs as a replica; without the Secret's URL, Registrar refuses to start rather than elect
/// over a store of its own. On the embedded default the GitOps repository would be in each
/// pod's state directory, which is why the README asks for a remote.
#[test]
fn the_configuration_the_replicas_component_documents_elects_a_leader() {
    let documented = documented_in_kustomization();
    assert_eq!(
        documented,
        documented_in_readme(),
        "kustomization.yaml and README.md document the same configuration"
    );
    let namespace = role_in(&format!("{COMPONENT}/rbac.yaml"))["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();

    let mut github: Value = yaml_serde::from_str(&read("deploy/examples/github/config.yaml")).unwrap();
    merge(&mut github, &documented);
    if std::env::var_os("REGISTRAR_POSTGRES_URL").is_none() {
        let refused = load(dir.path(), "no-url", &github).expect_err("leader election without a shared store");
        assert!(
            format!("{refused:#}").contains("cluster.leader_election needs a store the replicas share"),
            "{refused:#}"
        );
    }
    support::binary::set(&mut github, "store.postgres_url", json!(POSTGRES_URL));
    let config = load(dir.path(), "github", &github).unwrap_or_else(|e| panic!("{e:#}"));
    assert_fit_for_replicas("examples/github + replicas", &config, &namespace);
    assert_eq!(config.cluster.leader_election.lease_name, "registrar");

    let mut local: Value = yaml_serde::from_str(&read("deploy/base/config.yaml")).unwrap();
    merge(&mut local, &documented);
    support::binary::set(&mut local, "store.postgres_url", json!(POSTGRES_URL));
    let config = load(dir.path(), "local", &local).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        config.remote_url().starts_with("file://"),
        "the embedded default keeps the GitOps repository in state_dir"
    );
}
