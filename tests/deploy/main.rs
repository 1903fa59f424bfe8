//! deploy/: the kustomize base, its components and the example overlays render and validate
//! (`.ci/check-deploy`), and they agree with the code: the RBAC is `deploy/rbac/rbac.yaml`,
//! every shipped configuration loads, every metric a dashboard or alert names is exported,
//! and the Deployment is locked down.
//!
//! Rendering needs `kubectl` (its built-in kustomize); without it these tests say so and
//! pass, but `.ci/run` refuses to start without it, so CI always runs them.

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};
use support::*;

/// Rendered kustomizations by name (`base`, `component-<name>`, `example-<name>`).
type Rendered = BTreeMap<String, Vec<Value>>;

fn kubectl_missing() -> bool {
    let present = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var_os("REGISTRAR_CI").is_none(),
            "kubectl is missing in CI (.ci/run provides it)"
        );
        eprintln!("skipped: kubectl is not installed, so deploy/ cannot be rendered (.ci/run requires it)");
    }
    !present
}

fn yaml_documents(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Everything `.ci/check-deploy --render-only` renders, once per test run.
fn rendered() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(manifest_dir().join(".ci/check-deploy"))
            .arg("--render-only")
            .env("CHECK_DEPLOY_RENDERED", dir.path())
            .current_dir(manifest_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rendering deploy/ failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut sets = Rendered::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            sets.insert(name, yaml_documents(&std::fs::read_to_string(&path).unwrap()));
        }
        for expected in [
            "base",
            "example-local",
            "example-github",
            "example-flux",
            "example-argocd",
            "component-dhcp-snooping",
            "component-github-app",
            "component-ssh-deploy-key",
            "component-replicas",
        ] {
            assert!(
                sets.contains_key(expected),
                "{expected} was not rendered: {:?}",
                sets.keys()
            );
        }
        sets
    })
}

/// The rendered sets that install Registrar (all but the Flux and Argo CD bootstraps).
fn installs() -> impl Iterator<Item = (&'static String, &'static Vec<Value>)> {
    rendered()
        .iter()
        .filter(|(_, objects)| objects.iter().any(|o| o["kind"] == "Deployment"))
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn deployment(objects: &[Value]) -> &Value {
    let d = find(objects, "Deployment");
    assert_eq!(d.len(), 1, "one Deployment");
    d[0]
}

fn container(deployment: &Value) -> &Value {
    let c = deployment["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(c.len(), 1, "one container");
    &c[0]
}

/// More than one replica: the `replicas` component (one PostgreSQL store, one Lease).
fn replicated(deployment: &Value) -> bool {
    deployment["spec"]["replicas"].as_u64().unwrap_or(1) > 1
}

/// The container's environment variable `name`, where it sets one.
fn env_var<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn ns_of(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(manifest_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn check_deploy_renders_and_validates_everything() {
    if kubectl_missing() {
        return;
    }
    let out = Command::new(manifest_dir().join(".ci/check-deploy"))
        .current_dir(manifest_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), ".ci/check-deploy failed:\n{text}");
    assert!(text.contains("ok: "), "{text}");
}

/// The claim holding the store and the mirror survives a prune, and the deletion of the
/// Flux Kustomization or Argo CD Application that created it.
#[test]
fn the_state_volume_is_never_pruned() {
    if kubectl_missing() {
        return;
    }
    for (name, objects) in installs() {
        for claim in find(objects, "PersistentVolumeClaim") {
            let annotations = &claim["metadata"]["annotations"];
            assert_eq!(annotations["kustomize.toolkit.fluxcd.io/prune"], "disabled", "{name}");
            let argo = annotations["argocd.argoproj.io/sync-options"]
                .as_str()
                .unwrap_or_default();
            for option in ["Prune=false", "Delete=false"] {
                assert!(argo.split(',').any(|o| o.trim() == option), "{name}: {argo:?}");
            }
        }
    }
}

/// The existing cluster test proves rbac.yaml grants exactly what the code uses; here, every
/// installation grants exactly rbac.yaml (and, with replicas, the replicas component's Lease
/// Role, which replicas.rs proves against the election), to the service account the pod
/// runs as, in the namespace Registrar writes to.
#[test]
fn every_installation_grants_exactly_the_shipped_rbac() {
    if kubectl_missing() {
        return;
    }
    let shipped = yaml_documents(&read("deploy/rbac/rbac.yaml"));
    let role = shipped.iter().find(|o| o["kind"] == "Role").unwrap();
    // Replicas elect a leader on a Lease: that Role is the replicas component's own
    // (replicas.rs holds it to exactly what the election uses).
    let lease = yaml_documents(&read("deploy/components/replicas/rbac.yaml"));
    let lease_role = lease.iter().find(|o| o["kind"] == "Role").unwrap();
    for (name, objects) in installs() {
        for kind in ["ClusterRole", "ClusterRoleBinding"] {
            assert!(
                find(objects, kind).is_empty(),
                "{name}: no {kind}: Registrar works in one namespace"
            );
        }
        let d = deployment(objects);
        let ns = d["metadata"]["namespace"].as_str().unwrap();
        let sa = d["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap();
        assert!(
            find(objects, "ServiceAccount")
                .iter()
                .any(|s| s["metadata"]["name"] == sa && s["metadata"]["namespace"] == ns),
            "{name}: the ServiceAccount {sa} exists"
        );
        let mut expected = vec![role];
        if replicated(d) {
            expected.push(lease_role);
        }
        let roles = find(objects, "Role");
        let role_names: Vec<&Value> = roles.iter().map(|r| &r["metadata"]["name"]).collect();
        assert_eq!(
            roles.len(),
            expected.len(),
            "{name}: the Roles are rbac.yaml's (and with replicas the Lease's): {role_names:?}"
        );
        let bindings = find(objects, "RoleBinding");
        assert_eq!(bindings.len(), expected.len(), "{name}: one RoleBinding per Role");
        for want in expected {
            let role_name = &want["metadata"]["name"];
            let got = roles
                .iter()
                .find(|r| r["metadata"]["name"] == *role_name)
                .unwrap_or_else(|| panic!("{name}: no Role {role_name}: {role_names:?}"));
            assert_eq!(
                got["rules"], want["rules"],
                "{name}: the Role {role_name}'s rules must be the shipped ones"
            );
            assert_eq!(
                got["metadata"]["namespace"], ns,
                "{name}: the Role {role_name} is in Registrar's namespace"
            );
            let bound: Vec<&&Value> = bindings.iter().filter(|b| b["roleRef"]["name"] == *role_name).collect();
            assert_eq!(bound.len(), 1, "{name}: one RoleBinding for the Role {role_name}");
            let b = bound[0];
            assert_eq!(
                b["roleRef"],
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name}),
                "{name}"
            );
            assert_eq!(b["metadata"]["namespace"], ns, "{name}");
            assert_eq!(
                b["subjects"],
                json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}]),
                "{name}: {role_name} is bound to the pod's account"
            );
        }
    }
}

/// The directory the Dockerfile copies `source` to.
fn dockerfile_copy_destination(source: &str) -> String {
    let text = read("Dockerfile");
    let line = text
        .lines()
        .find(|l| l.starts_with("COPY ") && l.split_whitespace().nth(1) == Some(source))
        .unwrap_or_else(|| panic!("Dockerfile copies no {source}"));
    line.split_whitespace()
        .last()
        .unwrap()
        .trim_end_matches('/')
        .to_string()
}

fn mounts(deployment: &Value) -> Vec<(String, Value)> {
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    container(deployment)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let volume = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("no volume for {m}"));
            (m["mountPath"].as_str().unwrap().to_string(), volume.clone())
        })
        .collect()
}

/// The Secret that provides `file` through a volume mounted in `mounts`: the file's
/// directory is mounted from a Secret whose items include its name.
fn secret_providing(name: &str, mounts: &[(String, Value)], file: &Path) -> String {
    let (_, volume) = mounts
        .iter()
        .find(|(p, _)| file.parent() == Some(Path::new(p)))
        .unwrap_or_else(|| panic!("{name}: {} is on no volume", file.display()));
    let secret = volume["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: {} is not from a Secret", file.display()));
    let key = file.file_name().unwrap().to_str().unwrap();
    assert!(
        volume["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["path"] == key),
        "{name}: the Secret {secret} does not provide {key}"
    );
    secret.to_string()
}

/// Every config.yaml in every installation loads as Registrar would load it, and fits the
/// Deployment and the image around it.
/// The config.yaml an installation's Deployment runs with: the ConfigMap key mounted where
/// its `--config` argument points.
fn shipped_config(name: &str, objects: &[Value]) -> String {
    let d = deployment(objects);
    let c = container(d);
    let mounts = mounts(d);
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| args[i + 1])
        .expect("--config");
    let (config_dir, config_file) = config_path.rsplit_once('/').unwrap();
    let config_volume = &mounts
        .iter()
        .find(|(p, _)| p == config_dir)
        .unwrap_or_else(|| panic!("{name}: nothing mounted at {config_dir}"))
        .1;
    let cm_name = config_volume["configMap"]["name"].as_str().unwrap();
    let cm = find(objects, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"] == cm_name)
        .unwrap_or_else(|| panic!("{name}: no ConfigMap {cm_name}"));
    let text = cm["data"][config_file]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: {cm_name} has no {config_file}"));
    text.to_string()
}

#[test]
fn every_shipped_configuration_loads_and_fits_its_deployment() {
    if kubectl_missing() {
        return;
    }
    let templates_in_image = dockerfile_copy_destination("hardware-templates/");
    assert_eq!(
        dockerfile_copy_destination("deploy/base/config.yaml"),
        "/etc/registrar/config.yaml"
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, objects) in installs() {
        let d = deployment(objects);
        let c = container(d);
        let mounts = mounts(d);
        let mut text = shipped_config(name, objects);
        // The PostgreSQL URL the Deployment gives as REGISTRAR_POSTGRES_URL (the replicas
        // component's Secret), which this test's own environment lacks.
        if env_var(c, "REGISTRAR_POSTGRES_URL").is_some() {
            let mut v: Value = yaml_serde::from_str(&text).unwrap();
            support::binary::set(&mut v, "store.postgres_url", json!(replicas::POSTGRES_URL));
            text = yaml_serde::to_string(&v).unwrap();
        }
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let config = registrar::config::Config::load(Some(&path))
            .unwrap_or_else(|e| panic!("{name}: config.yaml does not load: {e:#}"));

        assert_eq!(
            config.server.listen.to_string(),
            "0.0.0.0:8080",
            "{name}: listen on every address of the pod"
        );
        let port = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap();
        assert_eq!(port["containerPort"], config.server.listen.port(), "{name}");
        let state = mounts
            .iter()
            .find(|(p, _)| Path::new(p) == config.state_dir)
            .unwrap_or_else(|| {
                panic!(
                    "{name}: state_dir {} is not a mounted volume",
                    config.state_dir.display()
                )
            });
        if replicated(d) {
            // The replicas component: the store is the PostgreSQL they share; state_dir is
            // each pod's own cache (the git mirror and the lock file).
            assert!(
                state.1["emptyDir"].is_object(),
                "{name}: with replicas, state_dir is each pod's emptyDir (a ReadWriteOnce claim mounts on one node)"
            );
            assert!(
                config.store.postgres_url.is_some(),
                "{name}: replicas share a PostgreSQL store"
            );
            // A component alone renders with the base's config.yaml; an overlay that runs
            // replicas brings its own, which must elect a leader (replicas.rs checks the one
            // the component documents).
            if !name.starts_with("component-") {
                replicas::assert_fit_for_replicas(name, &config, ns_of(d));
            }
        } else {
            assert!(
                state.1["persistentVolumeClaim"]["claimName"].is_string(),
                "{name}: state_dir is on the PersistentVolumeClaim"
            );
        }
        assert_eq!(
            config.templates_dir,
            PathBuf::from(&templates_in_image),
            "{name}: templates_dir is where the image has the templates"
        );
        assert!(
            !mounts.iter().any(|(p, _)| config.templates_dir.starts_with(p)),
            "{name}: a volume hides the image's templates"
        );
        // The image's templates, with this configuration's namespace.
        registrar::render::Renderer::load(&manifest_dir().join("hardware-templates"), &config.tinkerbell.namespace)
            .unwrap();
        assert_eq!(
            config.tinkerbell.namespace,
            d["metadata"]["namespace"].as_str().unwrap(),
            "{name}: Registrar works in its own namespace (the Role's)"
        );
        assert!(
            config.cluster.watch_namespace.is_empty() && !config.cluster.enabled
                || config.cluster.watch_namespace == config.tinkerbell.namespace,
            "{name}: watching another namespace (or all) needs more than the shipped Role"
        );
        // Secret files the configuration reads are on a mounted volume.
        let g = &config.forge.github;
        for file in [&g.app_private_key_file, &g.webhook_secret_file, &g.token_file]
            .into_iter()
            .flatten()
        {
            secret_providing(name, &mounts, file);
        }
        // Literal environment overrides parse as Config::apply_env would parse them.
        for env in c["env"].as_array().unwrap() {
            if let (Some(k), Some(v)) = (env["name"].as_str(), env["value"].as_str())
                && k.ends_with("_LISTEN")
            {
                v.parse::<std::net::SocketAddr>()
                    .unwrap_or_else(|e| panic!("{name}: {k}={v}: {e}"));
            }
        }
    }
}

/// The SSH deploy-key component provides the files its documented configuration names.
#[test]
fn the_ssh_deploy_key_component_mounts_the_files_its_configuration_names() {
    if kubectl_missing() {
        return;
    }
    let objects = &rendered()["component-ssh-deploy-key"];
    let mounts = mounts(deployment(objects));
    let documented = read("deploy/components/ssh-deploy-key/kustomization.yaml");
    let files: Vec<&str> = ["ssh_key_file:", "ssh_known_hosts_file:"]
        .iter()
        .map(|key| {
            documented
                .lines()
                .find_map(|l| l.split_once(key).map(|(_, v)| v.trim()))
                .unwrap_or_else(|| panic!("the component's comment names {key}"))
        })
        .collect();
    for file in files {
        let secret = secret_providing("component-ssh-deploy-key", &mounts, Path::new(file));
        assert_eq!(secret, "registrar-gitops-ssh");
    }
}

#[test]
fn the_deployment_is_locked_down() {
    if kubectl_missing() {
        return;
    }
    for (name, objects) in installs() {
        let d = deployment(objects);
        let spec = &d["spec"];
        if replicated(d) {
            // The replicas component (replicas.rs): one PostgreSQL store, one Lease.
            assert_eq!(spec["replicas"], 2, "{name}");
            assert_eq!(
                spec["strategy"],
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
                "{name}: a new replica stands by before an old one stops"
            );
        } else {
            assert_eq!(spec["replicas"], 1, "{name}: one Registrar per state directory");
            assert_eq!(
                spec["strategy"],
                json!({"type": "Recreate"}),
                "{name}: the old pod stops before the new one opens the state"
            );
        }
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], 30, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        assert_eq!(pod["securityContext"]["fsGroup"], 65532, "{name}");
        assert_eq!(pod["securityContext"]["runAsGroup"], 65532, "{name}");
        let c = container(d);
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let added = sc["capabilities"]["add"].as_array().cloned().unwrap_or_default();
        let root = pod["securityContext"]["runAsUser"] == 0 || sc["runAsUser"] == 0;
        // Every install's API pod, DHCP snooping or not: the snooper is a DaemonSet of its
        // own (snooping.rs).
        assert!(added.is_empty(), "{name}: no capability");
        assert!(!root, "{name}: not root");
        for ctx in [&pod["securityContext"], sc] {
            assert_eq!(ctx["runAsNonRoot"], true, "{name}");
        }
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{name}");
        assert!(pod["hostNetwork"].is_null() || pod["hostNetwork"] == false, "{name}");
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz?check=store")] {
            assert_eq!(
                c[probe]["httpGet"],
                json!({"path": path, "port": "http"}),
                "{name}: {probe}"
            );
        }
        for r in ["requests", "limits"] {
            for what in ["cpu", "memory"] {
                assert!(c["resources"][r][what].is_string(), "{name}: resources.{r}.{what}");
            }
        }
        let mounts = mounts(d);
        let at = |p: &str| {
            &mounts
                .iter()
                .find(|(m, _)| m == p)
                .unwrap_or_else(|| panic!("{name}: nothing at {p}"))
                .1
        };
        if replicated(d) {
            assert!(at("/var/lib/registrar")["emptyDir"].is_object(), "{name}");
            assert!(
                find(objects, "PersistentVolumeClaim").is_empty(),
                "{name}: no claim the replicas cannot share"
            );
        } else {
            assert!(at("/var/lib/registrar")["persistentVolumeClaim"].is_object(), "{name}");
        }
        assert!(at("/etc/registrar")["configMap"].is_object(), "{name}");
        assert!(at("/tmp")["emptyDir"].is_object(), "{name}");
        // Secrets are referenced, never shipped.
        assert!(
            find(objects, "Secret").is_empty(),
            "{name}: a Secret with values in git"
        );
        for env in c["env"].as_array().unwrap() {
            let k = env["name"].as_str().unwrap();
            if k.contains("TOKEN") || k.contains("SECRET") || k.contains("PASSWORD") || k.contains("POSTGRES") {
                let from = &env["valueFrom"]["secretKeyRef"];
                assert!(
                    env["value"].is_null() && from["name"].is_string(),
                    "{name}: {k} comes from a Secret"
                );
                // Optional, so that a single Registrar starts without it; replicas need the
                // shared tokens and store (a generated token or a SQLite store would be
                // each pod's own), so there they are required.
                let required = replicated(d)
                    && [
                        "REGISTRAR_REPORT_TOKEN",
                        "REGISTRAR_OPERATOR_TOKEN",
                        "REGISTRAR_POSTGRES_URL",
                    ]
                    .contains(&k);
                if required {
                    assert!(
                        from["optional"].is_null() || from["optional"] == false,
                        "{name}: {k} is required"
                    );
                } else {
                    assert_eq!(from["optional"], true, "{name}: {k} comes from an optional Secret");
                }
            }
        }
    }
}

fn walk_rs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_rs(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The image is built from the repository minus `.dockerignore`: whatever the build reads
/// (files the code embeds, the bench targets Cargo.toml declares) must not be left out.
#[test]
fn the_image_build_context_has_what_cargo_reads() {
    let ignore = read(".dockerignore");
    let excluded: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .collect();
    let kept: Vec<&str> = ignore.lines().filter_map(|l| l.trim().strip_prefix('!')).collect();
    // Plain paths exclude themselves and everything below; `**/name` a name anywhere.
    let is_excluded = |rel: &Path| {
        let rel = rel.to_str().unwrap();
        let hit = excluded.iter().any(|e| match e.strip_prefix("**/") {
            Some(name) => rel.split('/').any(|c| c == name),
            None => rel == *e || rel.starts_with(&format!("{}/", e.trim_end_matches('/'))),
        });
        hit && !kept.contains(&rel)
    };
    let embed = Regex::new(r#"include_(?:str|bytes)!\("([^"]+)"\)"#).unwrap();
    let root = manifest_dir();
    let mut needed = vec![
        PathBuf::from("Cargo.toml"),
        PathBuf::from("Cargo.lock"),
        PathBuf::from("src/main.rs"),
        PathBuf::from("hardware-templates"),
        PathBuf::from("deploy/base/config.yaml"),
    ];
    for file in walk_rs(&root.join("src")) {
        for m in embed.captures_iter(&std::fs::read_to_string(&file).unwrap()) {
            let path = std::path::absolute(file.parent().unwrap().join(&m[1])).unwrap();
            let normal: PathBuf = path.components().fold(PathBuf::new(), |mut p, c| {
                match c {
                    std::path::Component::ParentDir => {
                        p.pop();
                    }
                    c => p.push(c),
                }
                p
            });
            needed.push(
                normal
                    .strip_prefix(&root)
                    .unwrap_or_else(|_| panic!("{} embeds {} from outside the repository", file.display(), &m[1]))
                    .to_path_buf(),
            );
        }
    }
    needed.extend(
        bench_names(&read("Cargo.toml"))
            .into_iter()
            .map(|name| PathBuf::from(format!("benches/{name}.rs"))),
    );
    for rel in needed {
        assert!(root.join(&rel).exists(), "{} does not exist", rel.display());
        assert!(
            !is_excluded(&rel),
            ".dockerignore leaves out {}, which the image build needs",
            rel.display()
        );
    }
}

/// The `[[bench]]` names in Cargo.toml (cargo refuses a manifest whose targets are missing).
fn bench_names(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_bench = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if let Some(name) = line.strip_prefix("name = ").filter(|_| in_bench) {
            out.push(name.trim_matches('"').to_string());
        }
    }
    assert!(!out.is_empty(), "no [[bench]] in Cargo.toml");
    out
}

mod exposure;
mod monitoring;
mod release;
mod replicas;
mod snooping;
