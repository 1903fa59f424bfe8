//! Leases (coordination.k8s.io/v1), as leader election uses them: get, create (409 when it
//! exists) and update, where a stale `metadata.resourceVersion` is a 409 Conflict — the
//! API server's optimistic concurrency, which lets one of two replicas take a free Lease.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{FakeKube, ok, status};

pub(super) const PREFIX: &str = "/apis/coordination.k8s.io/v1/namespaces/";

pub(super) fn route(k: &FakeKube, method: Method, rest: &str, body: &Bytes) -> Response {
    let segs: Vec<&str> = rest.split('/').collect();
    let (namespace, name) = match segs.as_slice() {
        [ns, "leases"] => (*ns, None),
        [ns, "leases", name] => (*ns, Some(*name)),
        _ => return status(StatusCode::NOT_FOUND, "NotFound", "unknown resource"),
    };
    let parsed = || serde_json::from_slice::<Value>(body).ok();
    let mut st = k.state.lock().unwrap();
    match (method, name) {
        (Method::GET, Some(name)) => match st.objects.get(&format!("leases/{namespace}/{name}")) {
            Some(lease) => ok(StatusCode::OK, lease),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("leases.coordination.k8s.io \"{name}\" not found"),
            ),
        },
        (Method::POST, None) => {
            let Some(mut lease) = parsed() else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
            };
            lease["metadata"]["namespace"] = json!(namespace);
            let key = format!(
                "leases/{namespace}/{}",
                lease["metadata"]["name"].as_str().unwrap_or("")
            );
            if st.objects.contains_key(&key) {
                return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
            }
            let lease = k.commit(&mut st, "ADDED", "leases", lease);
            ok(StatusCode::CREATED, &lease)
        }
        (Method::PUT, Some(name)) => {
            let Some(mut lease) = parsed() else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
            };
            let Some(current) = st.objects.get(&format!("leases/{namespace}/{name}")) else {
                return status(StatusCode::NOT_FOUND, "NotFound", "not found");
            };
            if lease["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
            lease["metadata"]["namespace"] = json!(namespace);
            let lease = k.commit(&mut st, "MODIFIED", "leases", lease);
            ok(StatusCode::OK, &lease)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not supported by the fake",
        ),
    }
}

impl FakeKube {
    /// The Lease `name` in `namespace`, if any.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&format!("leases/{namespace}/{name}"))
            .cloned()
    }
}
