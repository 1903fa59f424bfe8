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

const PREFIX: &str = "/apis/tinkerbell.org/v1alpha1";
const API_VERSION: &str = "tinkerbell.org/v1alpha1";

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
    if plural == "hardware" { "Hardware" } else { "Workflow" }
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
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let known = |p: &str| p == "hardware" || p == "workflows";
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
            let body = json!({"apiVersion": API_VERSION, "kind": format!("{}List", kind_of(&plural)), "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
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
                    &format!("{plural}.tinkerbell.org \"{name}\" not found"),
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

/// `fieldManager`, else what the apiserver derives from the User-Agent (its program name).
fn field_manager(q: &BTreeMap<String, String>, headers: &HeaderMap) -> String {
    q.get("fieldManager")
        .cloned()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            let ua = headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown");
            ua.split('/').next().unwrap_or("unknown").to_string()
        })
}

/// PATCH on an object (`sub` = `Some("status")` for the status subresource). The whole
/// read-modify-write happens under the state lock, as etcd's compare-and-swap would make it.
#[allow(clippy::too_many_arguments)]
fn patch(
    k: &FakeKube,
    plural: &str,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let apply = match content_type.as_str() {
        "application/apply-patch+yaml" => true,
        "application/merge-patch+json" | "application/json-patch+json" => false,
        _ => {
            // The apiserver's answer for custom resources, strategic merge patch included.
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (not {content_type:?})"
                ),
            );
        }
    };
    if q.get("force").is_some_and(|f| f == "true") && !apply {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "force is only allowed for apply patches",
        );
    }
    let manager = field_manager(q, headers);
    if apply && q.get("fieldManager").is_none_or(String::is_empty) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "PATCH requests of type apply require a fieldManager",
        );
    }
    if manager.chars().count() > 128 {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "fieldManager: Too long: may not be longer than 128",
        );
    }
    let force = q.get("force").is_some_and(|f| f == "true");
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let key = format!("{plural}/{ns}/{name}");
    let kind = kind_of(plural);
    let resource = format!("{plural}.tinkerbell.org {name:?}");

    let mut st = k.state.lock().unwrap();
    let current = st.objects.get(&key).cloned();
    let fields = st.managed.get(&key).cloned().unwrap_or_default();
    let (mut next, mut next_fields) = if apply {
        // JSON is YAML; kube-rs sends JSON, kubectl YAML.
        let config: Value = match serde_json::from_slice(body).or_else(|_| yaml_serde::from_slice::<Value>(body)) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "an apply patch must be an object",
                );
            }
            Err(e) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("error decoding YAML: {e}"),
                );
            }
        };
        if config["apiVersion"] != API_VERSION || config["kind"] != kind {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "apply patches must name apiVersion {API_VERSION} and kind {kind}, not {} {}",
                    config["apiVersion"], config["kind"]
                ),
            );
        }
        if config["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    config["metadata"]["name"].as_str().unwrap()
                ),
            );
        }
        if config["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            );
        }
        if !config["metadata"]["managedFields"].is_null() {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "metadata.managedFields must be nil",
            );
        }
        if current.is_none() && sub.is_some() {
            return status(StatusCode::NOT_FOUND, "NotFound", &format!("{resource} not found"));
        }
        if let Some(resp) = preconditions(current.as_ref(), &config, &resource) {
            return resp;
        }
        let mut config = config;
        if let Some(meta) = config["metadata"].as_object_mut() {
            for system in ["resourceVersion", "uid", "generation", "creationTimestamp"] {
                meta.remove(system);
            }
        }
        // Through the object, status is not yours to set; through /status, only status is.
        let config = scoped(&config, sub);
        let base = current.clone().unwrap_or_else(
            || json!({"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name, "namespace": ns}}),
        );
        match server_side_apply(&base, &fields, &config, &(manager.clone(), "Apply"), force) {
            Ok(r) => r,
            Err(conflicts) => {
                let list: Vec<String> = conflicts
                    .iter()
                    .map(|(p, owners)| format!("conflict with {owners}: {}", p))
                    .collect();
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!("Apply failed with {} conflict(s): {}", list.len(), list.join("; ")),
                );
            }
        }
    } else {
        let Some(current) = current.clone() else {
            return status(StatusCode::NOT_FOUND, "NotFound", &format!("{resource} not found"));
        };
        let patched = if content_type == "application/merge-patch+json" {
            let Ok(p) = serde_json::from_slice::<Value>(body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "the merge patch is not JSON");
            };
            let mut doc = current.clone();
            merge_patch(&mut doc, &p);
            doc
        } else {
            let ops = match json_patch_decode(body) {
                Ok(ops) => ops,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            };
            match json_patch_apply(&current, &ops) {
                Ok(doc) => doc,
                Err(e) => return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e),
            }
        };
        if let Some(resp) = identity_kept(&current, &patched, name, ns, kind) {
            return resp;
        }
        if let Some(resp) = preconditions(Some(&current), &patched, &resource) {
            return resp;
        }
        // Only the part this endpoint may change changes.
        let mut next = current.clone();
        match sub {
            Some(_) => match patched.get("status") {
                Some(s) => next["status"] = s.clone(),
                None => {
                    next.as_object_mut().unwrap().remove("status");
                }
            },
            None => {
                next = patched;
                match current.get("status") {
                    Some(s) => next["status"] = s.clone(),
                    None => {
                        next.as_object_mut().unwrap().remove("status");
                    }
                }
            }
        }
        for system in [
            "resourceVersion",
            "uid",
            "generation",
            "managedFields",
            "creationTimestamp",
        ] {
            match current["metadata"].get(system) {
                Some(v) => next["metadata"][system] = v.clone(),
                None => {
                    next["metadata"].as_object_mut().map(|m| m.remove(system));
                }
            }
        }
        let mut f = fields.clone();
        take_updates(&mut f, &current, &next, &(manager.clone(), "Update"));
        (next, f)
    };
    normalise(&mut next_fields, &next);
    next["metadata"]["managedFields"] = managed_fields(&next_fields);
    if let Some(resp) = k.invalid(plural, &next) {
        return resp;
    }
    let created = current.is_none();
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    // A patch that changes nothing writes nothing: no new resourceVersion, no event.
    if current.as_ref() == Some(&next) || dry_run {
        return ok(code, &next);
    }
    st.managed.insert(key, next_fields);
    let stored = k.commit(&mut st, if created { "ADDED" } else { "MODIFIED" }, plural, next);
    ok(code, &stored)
}

/// A patch may not rename, move or re-kind the object.
fn identity_kept(current: &Value, patched: &Value, name: &str, ns: &str, kind: &str) -> Option<Response> {
    let problem = if patched["metadata"]["name"].as_str() != Some(name) {
        format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            patched["metadata"]["name"]
        )
    } else if patched["metadata"]["namespace"].as_str() != Some(ns) {
        "the namespace of the provided object does not match the namespace sent on the request".to_string()
    } else if patched["apiVersion"] != current["apiVersion"] || patched["kind"] != kind {
        format!("apiVersion and kind cannot change (expected {API_VERSION} {kind})")
    } else {
        return None;
    };
    Some(status(StatusCode::BAD_REQUEST, "BadRequest", &problem))
}

/// `metadata.resourceVersion` and `metadata.uid` in a patch must match the stored object.
fn preconditions(current: Option<&Value>, patched: &Value, resource: &str) -> Option<Response> {
    let want_rv = patched["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty());
    let want_uid = patched["metadata"]["uid"].as_str().filter(|s| !s.is_empty());
    let (have_rv, have_uid) = match current {
        Some(c) => (c["metadata"]["resourceVersion"].as_str(), c["metadata"]["uid"].as_str()),
        None => (None, None),
    };
    if let Some(uid) = want_uid
        && Some(uid) != have_uid
    {
        return Some(status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                have_uid.unwrap_or("")
            ),
        ));
    }
    if let Some(rv) = want_rv
        && Some(rv) != have_rv
    {
        return Some(status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {resource}: the object has been modified; please apply your changes to the latest version and try again"
            ),
        ));
    }
    None
}

/// What an apply may set through this endpoint: no status through the object, only status
/// (plus identity) through `/status`.
fn scoped(config: &Value, sub: Option<&str>) -> Value {
    let mut c = config.clone();
    let m = c.as_object_mut().unwrap();
    match sub {
        None => {
            m.remove("status");
        }
        Some(_) => m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
    }
    if sub.is_some()
        && let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.retain(|k, _| k == "name" || k == "namespace");
    }
    c
}

// ---- field ownership (server-side apply) ----

fn escape_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn unescape_token(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

/// Leaf fields an owner can hold, by JSON pointer: scalars, lists (atomic) and empty maps.
/// Of metadata only labels and annotations are fields; apiVersion and kind are identity.
fn leaves(obj: &Value) -> BTreeMap<String, Value> {
    fn walk(v: &Value, at: String, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    walk(child, format!("{at}/{}", escape_token(k)), out);
                }
            }
            other => {
                out.insert(at, other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    for part in ["labels", "annotations"] {
                        if let Some(x) = v.get(part) {
                            walk(x, format!("/metadata/{part}"), &mut out);
                        }
                    }
                }
                _ => walk(v, format!("/{}", escape_token(k)), &mut out),
            }
        }
    }
    out
}

/// An update owns every leaf it set or changed, alone: other owners lose it.
fn take_updates(fields: &mut BTreeMap<String, BTreeSet<Owner>>, before: &Value, after: &Value, owner: &Owner) {
    let old = leaves(before);
    for (p, v) in leaves(after) {
        if old.get(&p) != Some(&v) {
            fields.insert(p, BTreeSet::from([owner.clone()]));
        }
    }
}

/// Forgets ownership of fields that are no longer leaves of the object.
fn normalise(fields: &mut BTreeMap<String, BTreeSet<Owner>>, obj: &Value) {
    let now = leaves(obj);
    fields.retain(|p, owners| now.contains_key(p) && !owners.is_empty());
}

/// `metadata.managedFields` in the apiserver's FieldsV1 shape (`f:<name>` maps).
fn managed_fields(fields: &BTreeMap<String, BTreeSet<Owner>>) -> Value {
    let mut per_owner: BTreeMap<&Owner, Value> = BTreeMap::new();
    for (p, owners) in fields {
        for o in owners {
            let mut node = per_owner.entry(o).or_insert_with(|| json!({}));
            for token in p.split('/').skip(1) {
                node = node
                    .as_object_mut()
                    .unwrap()
                    .entry(format!("f:{}", unescape_token(token)))
                    .or_insert_with(|| json!({}));
            }
        }
    }
    Value::Array(
        per_owner
            .into_iter()
            .map(|((manager, op), f)| json!({"manager": manager, "operation": op, "apiVersion": API_VERSION, "fieldsType": "FieldsV1", "fieldsV1": f}))
            .collect(),
    )
}

fn pointer_tokens(p: &str) -> Vec<String> {
    p.split('/').skip(1).map(unescape_token).collect()
}

/// Removes the field at `p` and any map above it left empty (never `metadata` itself).
fn remove_field(obj: &mut Value, p: &str) {
    let tokens = pointer_tokens(p);
    for depth in (1..=tokens.len()).rev() {
        let parent: String = tokens[..depth - 1]
            .iter()
            .map(|t| format!("/{}", escape_token(t)))
            .collect();
        let Some(Value::Object(map)) = obj.pointer_mut(&parent) else {
            return;
        };
        let last = &tokens[depth - 1];
        let emptied = map.get(last).and_then(Value::as_object).is_some_and(|o| o.is_empty());
        if (depth < tokens.len() && !emptied) || (depth == 1 && last == "metadata") {
            return;
        }
        map.remove(last);
    }
}

/// Maps merge key by key; anything else (lists included) is replaced.
fn deep_merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => deep_merge(slot, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Server-side apply of `config` by `owner`: a changed value another owner holds is a
/// conflict unless forced (then it changes hands); fields this owner applied before and
/// leaves out now are released, and removed when nobody else holds them.
#[allow(clippy::type_complexity)]
fn server_side_apply(
    current: &Value,
    fields: &BTreeMap<String, BTreeSet<Owner>>,
    config: &Value,
    owner: &Owner,
    force: bool,
) -> Result<(Value, BTreeMap<String, BTreeSet<Owner>>), Vec<(String, String)>> {
    let mut obj = current.clone();
    let mut fields = fields.clone();
    let wanted = leaves(config);
    let mut conflicts = vec![];
    for (p, v) in &wanted {
        let others: Vec<String> = fields
            .get(p)
            .into_iter()
            .flatten()
            .filter(|o| *o != owner)
            .map(|(m, op)| format!("\"{m}\" ({op})"))
            .collect();
        let differs = obj.pointer(p).is_some_and(|cur| cur != v);
        if differs && !others.is_empty() {
            conflicts.push((p.clone(), others.join(", ")));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (p, _) in conflicts {
        fields.insert(p, BTreeSet::new());
    }
    let released: Vec<String> = fields
        .iter()
        .filter(|(p, o)| o.contains(owner) && !wanted.contains_key(*p))
        .map(|(p, _)| p.clone())
        .collect();
    for p in released {
        let owners = fields.get_mut(&p).unwrap();
        owners.remove(owner);
        if owners.is_empty() {
            remove_field(&mut obj, &p);
            fields.remove(&p);
        }
    }
    deep_merge(&mut obj, config);
    for p in wanted.keys() {
        fields.entry(p.clone()).or_default().insert(owner.clone());
    }
    Ok((obj, fields))
}

// ---- merge patch (RFC 7386) and JSON patch (RFC 6902) ----

fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[derive(Debug)]
struct JsonPatchOp {
    op: String,
    path: String,
    from: Option<String>,
    value: Option<Value>,
}

fn json_patch_decode(body: &[u8]) -> Result<Vec<JsonPatchOp>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("the JSON patch is not JSON: {e}"))?;
    let Value::Array(items) = doc else {
        return Err("a JSON patch is an array of operations".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let op = item["op"].as_str().ok_or(format!("operation {i}: no \"op\""))?;
            if !matches!(op, "add" | "remove" | "replace" | "move" | "copy" | "test") {
                return Err(format!("operation {i}: unexpected kind of operation {op:?}"));
            }
            let path = item["path"].as_str().ok_or(format!("operation {i}: no \"path\""))?;
            let from = item.get("from").and_then(Value::as_str).map(str::to_string);
            if matches!(op, "move" | "copy") && from.is_none() {
                return Err(format!("operation {i}: {op} needs \"from\""));
            }
            let value = item.get("value").cloned();
            if matches!(op, "add" | "replace" | "test") && value.is_none() {
                return Err(format!("operation {i}: {op} needs \"value\""));
            }
            Ok(JsonPatchOp {
                op: op.into(),
                path: path.into(),
                from,
                value,
            })
        })
        .collect()
}

fn parse_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not a JSON pointer"));
    }
    Ok(pointer_tokens(p))
}

fn array_index(token: &str, len: usize, appending: bool) -> Result<usize, String> {
    if appending && token == "-" {
        return Ok(len);
    }
    let valid =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    let i: usize = if valid {
        token.parse().map_err(|_| format!("index {token:?} out of range"))?
    } else {
        return Err(format!("{token:?} is not an array index"));
    };
    if i > len || (!appending && i == len) {
        return Err(format!("index {i} out of range (length {len})"));
    }
    Ok(i)
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String], path: &str) -> Result<&'a mut Value, String> {
    let mut node = doc;
    for t in &tokens[..tokens.len() - 1] {
        node = match node {
            Value::Object(m) => m.get_mut(t.as_str()),
            Value::Array(a) => {
                let i = array_index(t, a.len(), false)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or(format!("missing value at {path:?}: no {t:?}"))?;
    }
    Ok(node)
}

fn jp_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let tokens = parse_pointer(path)?;
    let Some(last) = tokens.last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, &tokens, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => {
            return Err(format!(
                "cannot add at {path:?}: the parent is neither an object nor an array"
            ));
        }
    }
    Ok(())
}

fn jp_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let tokens = parse_pointer(path)?;
    let Some(last) = tokens.last() else {
        return Err("cannot remove the whole document".into());
    };
    match parent_mut(doc, &tokens, path)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or(format!("cannot remove {path:?}: it does not exist")),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!(
            "cannot remove {path:?}: the parent is neither an object nor an array"
        )),
    }
}

fn json_patch_apply(doc: &Value, ops: &[JsonPatchOp]) -> Result<Value, String> {
    let mut doc = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        let at = |e: String| format!("operation {i} ({} {}): {e}", op.op, op.path);
        match op.op.as_str() {
            "add" => jp_add(&mut doc, &op.path, op.value.clone().unwrap()).map_err(at)?,
            "remove" => {
                jp_remove(&mut doc, &op.path).map_err(at)?;
            }
            "replace" => {
                parse_pointer(&op.path).map_err(at)?;
                if doc.pointer(&op.path).is_none() {
                    return Err(at("the value to replace does not exist".into()));
                }
                *doc.pointer_mut(&op.path).unwrap() = op.value.clone().unwrap();
            }
            "move" => {
                let from = op.from.as_deref().unwrap();
                if op.path.starts_with(&format!("{from}/")) {
                    return Err(at(format!("cannot move {from:?} into its own child")));
                }
                let v = jp_remove(&mut doc, from).map_err(at)?;
                jp_add(&mut doc, &op.path, v).map_err(at)?;
            }
            "copy" => {
                let from = op.from.as_deref().unwrap();
                parse_pointer(from).map_err(at)?;
                let v = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| at(format!("nothing to copy at {from:?}")))?;
                jp_add(&mut doc, &op.path, v).map_err(at)?;
            }
            "test" => {
                parse_pointer(&op.path).map_err(at)?;
                if doc.pointer(&op.path) != op.value.as_ref() {
                    return Err(at("test failed".into()));
                }
            }
            _ => unreachable!("decoded"),
        }
    }
    Ok(doc)
}

async fn watch(k: FakeKube, q: BTreeMap<String, String>, namespace: Option<String>, plural: String) -> Response {
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
            (
                st.history
                    .iter()
                    .filter(|(rv, _, _, _)| *rv > from)
                    .cloned()
                    .collect::<Vec<_>>(),
                false,
            )
        }
    };
    let keep = move |p: &str, obj: &Value| {
        p == plural
            && namespace
                .as_deref()
                .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && matches_selector(obj, selector.as_ref())
    };
    tokio::spawn(async move {
        let line = |kind: &str, obj: &Value| Ok(Bytes::from(format!("{}\n", json!({"type": kind, "object": obj}))));
        if gone {
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410});
            let _ = tx.send(line("ERROR", &status)).await;
            return;
        }
        let mut last = from;
        for (rv, p, kind, obj) in backlog {
            if keep(&p, &obj) && tx.send(line(kind, &obj)).await.is_err() {
                return;
            }
            last = rv;
        }
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok((rv, p, kind, obj)) if rv > last => {
                        last = rv;
                        if keep(&p, &obj) && tx.send(line(kind, &obj)).await.is_err() { return; }
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
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
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
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items})
                    .to_string(),
            )
                .into_response()
        }
        [_, "pods", name, "log"] => {
            let Some(sender) = k.logs.lock().unwrap().get(*name).cloned() else {
                return status(StatusCode::NOT_FOUND, "NotFound", "no such pod");
            };
            let rx = sender.subscribe();
            let replay: std::collections::VecDeque<String> = if q.contains_key("sinceSeconds") {
                k.log_history
                    .lock()
                    .unwrap()
                    .get(*name)
                    .cloned()
                    .unwrap_or_default()
                    .into()
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
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/plain")
                .body(Body::from_stream(body))
                .unwrap()
        }
        _ => status(StatusCode::NOT_FOUND, "NotFound", "unknown core resource"),
    }
}
