//! An in-process fake Kubernetes API server over real HTTP, for Tinkerbell's Hardware:
//! list (label selectors), watch (chunked JSON events from a resourceVersion), get, create
//! and delete, every created object validated against the upstream CRD schema the way a
//! strict apiserver does. Tests can drop every open watch or expire the history, so the
//! next watch gets 410 Gone, to prove the client recovers without missing an object.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

const PREFIX: &str = "/apis/tinkerbell.org/v1alpha1";

pub struct KubeState {
    rv: u64,
    /// "namespace/name" → object.
    objects: BTreeMap<String, Value>,
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from before this resourceVersion get 410 Gone.
    oldest: u64,
    /// Every request: (method, path without query).
    pub requests: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct FakeKube {
    pub url: String,
    pub state: Arc<Mutex<KubeState>>,
    events: broadcast::Sender<(u64, &'static str, Value)>,
    drops: broadcast::Sender<()>,
    /// Pods (namespace, name, labels) and their log streams: `None` ends a stream, as a
    /// restart would.
    pods: Arc<Mutex<Vec<(String, String, Value)>>>,
    logs: Arc<Mutex<std::collections::HashMap<String, broadcast::Sender<Option<String>>>>>,
    /// Every line a pod logged: a follower asking for `sinceSeconds` gets them replayed, as
    /// the kubelet does.
    log_history: Arc<Mutex<std::collections::HashMap<String, Vec<String>>>>,
    /// CRD schema per plural (hardware, workflows).
    schemas: Arc<std::collections::HashMap<&'static str, super::UpstreamSchema>>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/")))
        .collect()
}

/// `key=value` and `key` terms, comma-separated (what Registrar and kube-runtime send).
fn matches_selector(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else { return true };
    sel.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => obj["metadata"]["labels"][k.trim_end_matches('=')].as_str() == Some(v.trim_start_matches('=')),
        None => obj["metadata"]["labels"].get(term).is_some(),
    })
}

impl FakeKube {
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(1024);
        let (drops, _) = broadcast::channel(16);
        let state = Arc::new(Mutex::new(KubeState { rv: 100, objects: BTreeMap::new(), history: vec![], oldest: 0, requests: vec![] }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let schemas = [("hardware", "tinkerbell.org_hardware.yaml"), ("workflows", "tinkerbell.org_workflows.yaml")]
            .into_iter()
            .map(|(plural, file)| (plural, super::UpstreamSchema::load(file)))
            .collect();
        let fake = FakeKube { url, state, events, drops, schemas: Arc::new(schemas), pods: Arc::default(), logs: Arc::default(), log_history: Arc::default() };
        let app = Router::new().fallback(route).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Creates an object as `kubectl apply` of a new object would; panics if invalid.
    pub fn create(&self, obj: Value) {
        let errors = self.schemas["hardware"].errors(&obj);
        assert!(errors.is_empty(), "invalid Hardware: {errors:?}");
        self.write("ADDED", "hardware", obj);
    }

    pub fn add_pod(&self, namespace: &str, name: &str, labels: Value) {
        self.pods.lock().unwrap().push((namespace.into(), name.into(), labels));
        self.logs.lock().unwrap().insert(name.into(), broadcast::channel(256).0);
    }

    /// Writes a line to a pod's log (to every open follower).
    pub fn log(&self, pod: &str, line: &str) -> usize {
        self.log_history.lock().unwrap().entry(pod.into()).or_default().push(line.into());
        self.logs.lock().unwrap()[pod].send(Some(line.into())).unwrap_or(0)
    }

    /// Ends every open log stream of a pod, as a container restart does.
    pub fn restart_pod(&self, pod: &str) {
        let _ = self.logs.lock().unwrap()[pod].send(None);
    }

    /// Creates a Workflow (validated), as Flux would apply one.
    pub fn create_workflow(&self, obj: Value) {
        let errors = self.schemas["workflows"].errors(&obj);
        assert!(errors.is_empty(), "invalid Workflow: {errors:?}");
        self.write("ADDED", "workflows", obj);
    }

    /// Sets a Workflow's status, as tink-controller does.
    pub fn set_workflow_status(&self, namespace: &str, name: &str, status: Value) {
        let obj = self.state.lock().unwrap().objects.get(&format!("workflows/{namespace}/{name}")).cloned().expect("workflow");
        let mut obj = obj;
        obj["status"] = status;
        self.write("MODIFIED", "workflows", obj);
    }

    /// Objects of a kind (`hardware`, `workflows`), as stored.
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        self.state.lock().unwrap().objects.iter().filter(|(k, _)| k.starts_with(&format!("{plural}/"))).map(|(_, v)| v.clone()).collect()
    }

    fn write(&self, kind: &'static str, plural: &str, mut obj: Value) -> Value {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
        let key = format!("{plural}/{}/{}", obj["metadata"]["namespace"].as_str().unwrap_or("default"), obj["metadata"]["name"].as_str().unwrap_or(""));
        if kind == "DELETED" {
            st.objects.remove(&key);
        } else {
            st.objects.insert(key, obj.clone());
        }
        // Only Hardware is watched.
        if plural == "hardware" {
            st.history.push((rv, kind, obj.clone()));
            let _ = self.events.send((rv, kind, obj.clone()));
        }
        obj
    }

    pub fn delete(&self, namespace: &str, name: &str) {
        self.delete_of("hardware", namespace, name);
    }

    fn delete_of(&self, plural: &str, namespace: &str, name: &str) {
        let obj = self.state.lock().unwrap().objects.get(&format!("{plural}/{namespace}/{name}")).cloned();
        if let Some(obj) = obj {
            self.write("DELETED", plural, obj);
        }
    }

    /// Closes every open watch, as a load balancer or apiserver restart would.
    pub fn drop_watches(&self) {
        let _ = self.drops.send(());
    }

    /// Forgets the event history: a watch resuming from before now gets 410 Gone.
    pub fn expire_history(&self) {
        let mut st = self.state.lock().unwrap();
        st.oldest = st.rv + 1;
        st.history.clear();
    }

    /// What the client did, as RBAC sees it: (apiGroup, resource, verb).
    pub fn rbac_used(&self) -> std::collections::BTreeSet<(String, String, String)> {
        let mut used = std::collections::BTreeSet::new();
        for (method, path) in &self.state.lock().unwrap().requests {
            let (group, rest) = if let Some(r) = path.strip_prefix(&format!("{PREFIX}/")) {
                ("tinkerbell.org", r)
            } else if let Some(r) = path.strip_prefix("/api/v1/") {
                ("", r)
            } else {
                continue;
            };
            let segs: Vec<&str> = rest.split('/').collect();
            let (resource, named) = match segs.as_slice() {
                ["namespaces", _, res] | [res] => (res.to_string(), false),
                ["namespaces", _, res, _] => (res.to_string(), true),
                ["namespaces", _, res, _, sub] => (format!("{res}/{sub}"), true),
                _ => continue,
            };
            let verb = match (method.as_str(), named) {
                ("WATCH", _) => "watch",
                ("GET", false) => "list",
                ("GET", true) => "get",
                ("POST", _) => "create",
                ("DELETE", _) => "delete",
                ("PATCH", _) => "patch",
                ("PUT", _) => "update",
                _ => continue,
            };
            used.insert((group.to_string(), resource, verb.to_string()));
        }
        used
    }

    pub fn watch_count(&self) -> usize {
        self.state.lock().unwrap().requests.iter().filter(|(m, p)| m == "WATCH" && p.ends_with("/hardware")).count()
    }
}

async fn route(State(k): State<FakeKube>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let q = query(&uri);
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    k.state.lock().unwrap().requests.push((if watching { "WATCH".into() } else { method.to_string() }, path.clone()));
    if let Some(rest) = path.strip_prefix("/api/v1/namespaces/") {
        return core(&k, rest, &q);
    }
    let Some(rest) = path.strip_prefix(PREFIX) else { return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource") };
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let known = |p: &str| p == "hardware" || p == "workflows";
    let (namespace, plural, name) = match segs.as_slice() {
        [p] if known(p) => (None, p.to_string(), None),
        ["namespaces", ns, p] if known(p) => (Some(ns.to_string()), p.to_string(), None),
        ["namespaces", ns, p, name] if known(p) => (Some(ns.to_string()), p.to_string(), Some(name.to_string())),
        _ => return status(StatusCode::NOT_FOUND, "NotFound", "unknown resource"),
    };
    if watching && plural != "hardware" {
        return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "the fake watches Hardware only");
    }
    let of_kind = |key: &str| key.starts_with(&format!("{plural}/"));
    let in_ns = |obj: &Value| namespace.as_deref().is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns));
    match (method, name) {
        (Method::GET, None) if watching => watch(k, q, namespace).await,
        (Method::GET, None) => {
            let st = k.state.lock().unwrap();
            let items: Vec<Value> = st.objects.iter().filter(|(k, o)| of_kind(k) && in_ns(o) && matches_selector(o, q.get("labelSelector"))).map(|(_, o)| o.clone()).collect();
            let list_kind = if plural == "hardware" { "HardwareList" } else { "WorkflowList" };
            let body = json!({"apiVersion": "tinkerbell.org/v1alpha1", "kind": list_kind, "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
            (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
        }
        (Method::GET, Some(name)) => {
            let st = k.state.lock().unwrap();
            match st.objects.get(&format!("{plural}/{}/{name}", namespace.unwrap_or_default())) {
                Some(o) => (StatusCode::OK, [("content-type", "application/json")], o.to_string()).into_response(),
                None => status(StatusCode::NOT_FOUND, "NotFound", &format!("hardware.tinkerbell.org \"{name}\" not found")),
            }
        }
        (Method::POST, None) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else { return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON") };
            obj["metadata"]["namespace"] = json!(namespace.clone().unwrap_or_else(|| "default".into()));
            let errors = k.schemas[plural.as_str()].errors(&obj);
            if !errors.is_empty() {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &errors.join("; "));
            }
            let key = format!("{plural}/{}/{}", namespace.unwrap_or_default(), obj["metadata"]["name"].as_str().unwrap_or(""));
            if k.state.lock().unwrap().objects.contains_key(&key) {
                return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
            }
            let obj = k.write("ADDED", &plural, obj);
            (StatusCode::CREATED, [("content-type", "application/json")], obj.to_string()).into_response()
        }
        (Method::DELETE, Some(name)) => {
            let ns = namespace.unwrap_or_default();
            if !k.state.lock().unwrap().objects.contains_key(&format!("{plural}/{ns}/{name}")) {
                return status(StatusCode::NOT_FOUND, "NotFound", "not found");
            }
            k.delete_of(&plural, &ns, &name);
            (StatusCode::OK, [("content-type", "application/json")], json!({"kind": "Status", "status": "Success"}).to_string()).into_response()
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not supported by the fake"),
    }
}

async fn watch(k: FakeKube, q: BTreeMap<String, String>, namespace: Option<String>) -> Response {
    let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let selector = q.get("labelSelector").cloned();
    // Subscribe before reading the history, so nothing falls between the two.
    let mut live = k.events.subscribe();
    let mut drops = k.drops.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let (backlog, gone) = {
        let st = k.state.lock().unwrap();
        if from != 0 && from < st.oldest {
            (vec![], true)
        } else {
            (st.history.iter().filter(|(rv, _, _)| *rv > from).cloned().collect::<Vec<_>>(), false)
        }
    };
    let keep = move |obj: &Value| namespace.as_deref().is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns)) && matches_selector(obj, selector.as_ref());
    tokio::spawn(async move {
        let line = |kind: &str, obj: &Value| Ok(Bytes::from(format!("{}\n", json!({"type": kind, "object": obj}))));
        if gone {
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410});
            let _ = tx.send(line("ERROR", &status)).await;
            return;
        }
        let mut last = from;
        for (rv, kind, obj) in backlog {
            if keep(&obj) && tx.send(line(kind, &obj)).await.is_err() {
                return;
            }
            last = rv;
        }
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok((rv, kind, obj)) if rv > last => {
                        last = rv;
                        if keep(&obj) && tx.send(line(kind, &obj)).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = drops.recv() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(290)) => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Response::builder().status(StatusCode::OK).header("content-type", "application/json").body(Body::from_stream(stream)).unwrap()
}

/// Pods and their logs (`/api/v1/namespaces/{ns}/pods[/{name}/log]`).
fn core(k: &FakeKube, rest: &str, q: &BTreeMap<String, String>) -> Response {
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        [ns, "pods"] => {
            let items: Vec<Value> = k
                .pods
                .lock()
                .unwrap()
                .iter()
                .filter(|(n, _, labels)| n == ns && matches_selector(&json!({"metadata": {"labels": labels}}), q.get("labelSelector")))
                .map(|(n, name, labels)| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": n, "labels": labels}, "status": {"phase": "Running"}}))
                .collect();
            (StatusCode::OK, [("content-type", "application/json")], json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}).to_string()).into_response()
        }
        [_, "pods", name, "log"] => {
            let Some(sender) = k.logs.lock().unwrap().get(*name).cloned() else { return status(StatusCode::NOT_FOUND, "NotFound", "no such pod") };
            let rx = sender.subscribe();
            let replay: std::collections::VecDeque<String> = if q.contains_key("sinceSeconds") {
                k.log_history.lock().unwrap().get(*name).cloned().unwrap_or_default().into()
            } else {
                Default::default()
            };
            let body = futures::stream::unfold((replay, rx), |(mut replay, mut rx)| async move {
                if let Some(line) = replay.pop_front() {
                    return Some((Ok::<_, std::io::Error>(Bytes::from(format!("{line}\n"))), (replay, rx)));
                }
                match rx.recv().await {
                    Ok(Some(line)) => Some((Ok(Bytes::from(format!("{line}\n"))), (replay, rx))),
                    _ => None,
                }
            });
            Response::builder().status(StatusCode::OK).header("content-type", "text/plain").body(Body::from_stream(body)).unwrap()
        }
        _ => status(StatusCode::NOT_FOUND, "NotFound", "unknown core resource"),
    }
}
