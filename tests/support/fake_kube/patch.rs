//! PATCH as the apiserver does it for custom resources: the content types, the status
//! subresource, preconditions and identity.

use super::*;

/// `fieldManager`, else what the apiserver derives from the User-Agent (its program name).
pub(super) fn field_manager(q: &BTreeMap<String, String>, headers: &HeaderMap) -> String {
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
pub(super) fn patch(
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
pub(super) fn identity_kept(current: &Value, patched: &Value, name: &str, ns: &str, kind: &str) -> Option<Response> {
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
pub(super) fn preconditions(current: Option<&Value>, patched: &Value, resource: &str) -> Option<Response> {
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
