//! An in-process fake Kubernetes API server over real HTTP, for Tinkerbell's Hardware and
//! Workflows: list (label selectors), watch (chunked JSON events from a resourceVersion),
//! get, create, patch and delete, every written object validated against the upstream CRD
//! schema the way a strict apiserver does (unknown fields rejected with 422, as with
//! `fieldValidation=Strict`). Tests can drop every open watch or expire the history, so the
//! next watch gets 410 Gone, to prove the client recovers without missing an object.
//!
//! PATCH behaves as the apiserver does for custom resources (see [`patch`]):
//! - `application/apply-patch+yaml`: server-side apply with `fieldManager` (required) and
//!   `force`; field ownership is tracked per manager and operation (leaf fields; lists are
//!   atomic, as for CRD lists without `x-kubernetes-list-type`) and shown in
//!   `metadata.managedFields`; a changed value another manager owns is a 409 Conflict
//!   unless forced; fields a manager stops applying are removed when nobody else owns
//!   them; applying to a missing object creates it (201).
//! - `application/merge-patch+json` (RFC 7386) and `application/json-patch+json` (RFC 6902:
//!   add, remove, replace, move, copy, test); a missing object is 404.
//! - `application/strategic-merge-patch+json`: 415, as for every custom resource.
//! - A patch that changes nothing writes nothing: same resourceVersion, no watch event.
//! - The `status` subresource: patches to the object keep its status, patches to
//!   `…/{name}/status` change only the status. `metadata.generation` counts spec changes.
//! - `metadata.resourceVersion` (and `uid`) in a patch are preconditions (409 when stale);
//!   name, namespace, apiVersion and kind cannot change (400); `dryRun=All` stores nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

mod apply;
mod json_patch;
mod leases;
mod patch;
mod watch;

use apply::*;
use json_patch::*;
use patch::*;
use watch::*;

const PREFIX: &str = "/apis/tinkerbell.org/v1alpha1";
const API_VERSION: &str = "tinkerbell.org/v1alpha1";
const BMC_PREFIX: &str = "/apis/bmc.tinkerbell.org/v1alpha1";

/// A watch event: (resourceVersion, plural, type, object).
type Event = (u64, String, &'static str, Value);

/// Who owns a field: (manager, operation `Apply` or `Update`), as in `managedFields`.
type Owner = (String, &'static str);

pub struct KubeState {
    rv: u64,
    /// "plural/namespace/name" → object.
    objects: BTreeMap<String, Value>,
    /// Same key → leaf field (JSON pointer) → its owners.
    managed: HashMap<String, BTreeMap<String, BTreeSet<Owner>>>,
    history: Vec<Event>,
    /// Watches from before this resourceVersion get 410 Gone.
    oldest: u64,
    /// Every request: (method, path without query).
    pub requests: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct FakeKube {
    pub url: String,
    pub state: Arc<Mutex<KubeState>>,
    events: broadcast::Sender<Event>,
    drops: broadcast::Sender<()>,
    /// Pods (namespace, name, labels) and their log streams: `None` ends a stream, as a
    /// restart would.
    pods: Arc<Mutex<Vec<(String, String, Value)>>>,
    logs: Arc<Mutex<HashMap<String, broadcast::Sender<Option<String>>>>>,
    /// Every line a pod logged: a follower asking for `sinceSeconds` gets them replayed, as
    /// the kubelet does.
    log_history: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// CRD schema per plural (hardware, workflows).
    schemas: Arc<HashMap<&'static str, super::UpstreamSchema>>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

fn ok(code: StatusCode, obj: &Value) -> Response {
    (code, [("content-type", "application/json")], obj.to_string()).into_response()
}

/// `%XX` and `+` decoded, as a query string is.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// `key=value` and `key` terms, comma-separated (what Registrar and kube-runtime send).
fn matches_selector(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => obj["metadata"]["labels"][k.trim_end_matches('=')].as_str() == Some(v.trim_start_matches('=')),
        None => obj["metadata"]["labels"].get(term).is_some(),
    })
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "hardware" => "Hardware",
        "machines" => "Machine",
        _ => "Workflow",
    }
}

/// The API group a plural belongs to: Tinkerbell's own, or Rufio's (BMCs).
fn group_of(plural: &str) -> &'static str {
    if plural == "machines" {
        "bmc.tinkerbell.org"
    } else {
        "tinkerbell.org"
    }
}

fn api_version_of(plural: &str) -> String {
    format!("{}/v1alpha1", group_of(plural))
}

impl FakeKube {
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(1024);
        let (drops, _) = broadcast::channel(16);
        let state = Arc::new(Mutex::new(KubeState {
            rv: 100,
            objects: BTreeMap::new(),
            managed: HashMap::new(),
            history: vec![],
            oldest: 0,
            requests: vec![],
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let schemas = [
            ("hardware", "tinkerbell.org_hardware.yaml"),
            ("workflows", "tinkerbell.org_workflows.yaml"),
            ("machines", "bmc.tinkerbell.org_machines.yaml"),
        ]
        .into_iter()
        .map(|(plural, file)| (plural, super::UpstreamSchema::load(file)))
        .collect();
        let fake = FakeKube {
            url,
            state,
            events,
            drops,
            schemas: Arc::new(schemas),
            pods: Arc::default(),
            logs: Arc::default(),
            log_history: Arc::default(),
        };
        let app = Router::new().fallback(route).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Creates a Rufio Machine (a BMC) as `kubectl apply` would; panics if invalid.
    pub fn create_bmc(&self, obj: Value) {
        let errors = self.schemas["machines"].errors(&obj);
        assert!(errors.is_empty(), "invalid Rufio Machine: {errors:?}");
        self.write("ADDED", "machines", obj);
    }

    /// A Secret (BMC credentials, say), as an operator creates it outside git.
    pub fn create_secret(&self, namespace: &str, name: &str) {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "data": {"username": "YWRtaW4=", "password": "c2VjcmV0"}
        });
        self.state
            .lock()
            .unwrap()
            .objects
            .insert(format!("secrets/{namespace}/{name}"), secret);
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
        self.log_history
            .lock()
            .unwrap()
            .entry(pod.into())
            .or_default()
            .push(line.into());
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
        let obj = self
            .state
            .lock()
            .unwrap()
            .objects
            .get(&format!("workflows/{namespace}/{name}"))
            .cloned()
            .expect("workflow");
        let mut obj = obj;
        obj["status"] = status;
        self.write("MODIFIED", "workflows", obj);
    }

    /// Objects of a kind (`hardware`, `workflows`), as stored.
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{plural}/")))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// One stored object, if any.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&format!("{plural}/{namespace}/{name}"))
            .cloned()
    }

    fn write(&self, kind: &'static str, plural: &str, obj: Value) -> Value {
        let mut st = self.state.lock().unwrap();
        self.commit(&mut st, kind, plural, obj)
    }

    /// Stores (or deletes) an object under a new resourceVersion and tells the watches.
    /// The uid is the object's for life; `generation` starts at 1 and counts spec changes.
    fn commit(&self, st: &mut KubeState, kind: &'static str, plural: &str, mut obj: Value) -> Value {
        st.rv += 1;
        let rv = st.rv;
        let key = format!(
            "{plural}/{}/{}",
            obj["metadata"]["namespace"].as_str().unwrap_or("default"),
            obj["metadata"]["name"].as_str().unwrap_or("")
        );
        let old = st.objects.get(&key).cloned();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["uid"] = match &old {
            Some(o) if kind != "ADDED" => o["metadata"]["uid"].clone(),
            _ => json!(format!("uid-{rv}")),
        };
        let generation = match &old {
            Some(o) if kind != "ADDED" => {
                let g = o["metadata"]["generation"].as_u64().unwrap_or(1);
                if spec_of(o) != spec_of(&obj) { g + 1 } else { g }
            }
            _ => 1,
        };
        obj["metadata"]["generation"] = json!(generation);
        if kind == "DELETED" {
            st.objects.remove(&key);
            st.managed.remove(&key);
        } else {
            st.objects.insert(key, obj.clone());
        }
        st.history.push((rv, plural.to_string(), kind, obj.clone()));
        let _ = self.events.send((rv, plural.to_string(), kind, obj.clone()));
        obj
    }

    pub fn delete(&self, namespace: &str, name: &str) {
        self.delete_of("hardware", namespace, name);
    }

    fn delete_of(&self, plural: &str, namespace: &str, name: &str) {
        let mut st = self.state.lock().unwrap();
        let obj = st.objects.get(&format!("{plural}/{namespace}/{name}")).cloned();
        if let Some(obj) = obj {
            self.commit(&mut st, "DELETED", plural, obj);
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
    pub fn rbac_used(&self) -> BTreeSet<(String, String, String)> {
        let mut used = BTreeSet::new();
        for (method, path) in &self.state.lock().unwrap().requests {
            let (group, rest) = if let Some(r) = path.strip_prefix(&format!("{PREFIX}/")) {
                ("tinkerbell.org", r)
            } else if let Some(r) = path.strip_prefix(&format!("{BMC_PREFIX}/")) {
                ("bmc.tinkerbell.org", r)
            } else if let Some(r) = path.strip_prefix("/api/v1/") {
                ("", r)
            } else if let Some(r) = path.strip_prefix("/apis/coordination.k8s.io/v1/") {
                ("coordination.k8s.io", r)
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

    /// How many watch events (of any kind) the server has emitted since its history began.
    pub fn event_count(&self) -> usize {
        self.state.lock().unwrap().history.len()
    }

    pub fn watch_count(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, p)| m == "WATCH" && p.ends_with("/hardware"))
            .count()
    }

    /// The apiserver's 422 for an object that fails its CRD schema.
    fn invalid(&self, plural: &str, obj: &Value) -> Option<Response> {
        let errors = self.schemas[plural].errors(obj);
        (!errors.is_empty()).then(|| {
            let name = obj["metadata"]["name"].as_str().unwrap_or("");
            status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                &format!(
                    "{}.tinkerbell.org {name:?} is invalid: {}",
                    kind_of(plural),
                    errors.join("; ")
                ),
            )
        })
    }
}

/// Everything but metadata and status: what `generation` counts.
fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

async fn route(State(k): State<FakeKube>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let q = query(&uri);
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    k.state
        .lock()
        .unwrap()
        .requests
        .push((if watching { "WATCH".into() } else { method.to_string() }, path.clone()));
    if let Some(rest) = path.strip_prefix("/api/v1/namespaces/") {
        return core(&k, rest, &q);
    }
    if let Some(rest) = path.strip_prefix(leases::PREFIX) {
        return leases::route(&k, method, rest, &body);
    }
    let (rest, bmc) = match (path.strip_prefix(PREFIX), path.strip_prefix(BMC_PREFIX)) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    };
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let known = |p: &str| {
        if bmc {
            p == "machines"
        } else {
            p == "hardware" || p == "workflows"
        }
    };
    let (namespace, plural, name, sub) = match segs.as_slice() {
        [p] if known(p) => (None, p.to_string(), None, None),
        ["namespaces", ns, p] if known(p) => (Some(ns.to_string()), p.to_string(), None, None),
        ["namespaces", ns, p, name] if known(p) => (Some(ns.to_string()), p.to_string(), Some(name.to_string()), None),
        ["namespaces", ns, p, name, "status"] if known(p) => (
            Some(ns.to_string()),
            p.to_string(),
            Some(name.to_string()),
            Some("status"),
        ),
        _ => return status(StatusCode::NOT_FOUND, "NotFound", "unknown resource"),
    };
    let of_kind = |key: &str| key.starts_with(&format!("{plural}/"));
    let in_ns = |obj: &Value| {
        namespace
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
    };
    match (method, name) {
        (Method::GET, None) if watching => watch(k, q, namespace, plural).await,
        (Method::GET, None) => {
            let st = k.state.lock().unwrap();
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, o)| of_kind(k) && in_ns(o) && matches_selector(o, q.get("labelSelector")))
                .map(|(_, o)| o.clone())
                .collect();
            let body = json!({"apiVersion": api_version_of(&plural), "kind": format!("{}List", kind_of(&plural)), "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
            ok(StatusCode::OK, &body)
        }
        (Method::GET, Some(name)) => {
            let st = k.state.lock().unwrap();
            match st
                .objects
                .get(&format!("{plural}/{}/{name}", namespace.unwrap_or_default()))
            {
                Some(o) => ok(StatusCode::OK, o),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{plural}.{} \"{name}\" not found", group_of(&plural)),
                ),
            }
        }
        (Method::POST, None) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
            };
            obj["metadata"]["namespace"] = json!(namespace.clone().unwrap_or_else(|| "default".into()));
            if let Some(resp) = k.invalid(&plural, &obj) {
                return resp;
            }
            let key = format!(
                "{plural}/{}/{}",
                namespace.unwrap_or_default(),
                obj["metadata"]["name"].as_str().unwrap_or("")
            );
            let mut st = k.state.lock().unwrap();
            if st.objects.contains_key(&key) {
                return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
            }
            let manager = field_manager(&q, &headers);
            let mut fields = BTreeMap::new();
            take_updates(&mut fields, &json!({}), &obj, &(manager, "Update"));
            obj["metadata"]["managedFields"] = managed_fields(&fields);
            st.managed.insert(key, fields);
            let obj = k.commit(&mut st, "ADDED", &plural, obj);
            ok(StatusCode::CREATED, &obj)
        }
        (Method::PATCH, Some(name)) => patch(
            &k,
            &plural,
            &namespace.unwrap_or_default(),
            &name,
            sub,
            &q,
            &headers,
            &body,
        ),
        (Method::DELETE, Some(name)) if sub.is_none() => {
            let ns = namespace.unwrap_or_default();
            if !k
                .state
                .lock()
                .unwrap()
                .objects
                .contains_key(&format!("{plural}/{ns}/{name}"))
            {
                return status(StatusCode::NOT_FOUND, "NotFound", "not found");
            }
            k.delete_of(&plural, &ns, &name);
            ok(StatusCode::OK, &json!({"kind": "Status", "status": "Success"}))
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not supported by the fake",
        ),
    }
}
