//! Watches (chunked JSON events from a resourceVersion, 410 once the history expired) and
//! the few core resources Registrar reads (pods and their logs).

use super::*;

pub(super) async fn watch(
    k: FakeKube,
    q: BTreeMap<String, String>,
    namespace: Option<String>,
    plural: String,
) -> Response {
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

/// Pods and their logs (`/api/v1/namespaces/{ns}/pods[/{name}/log]`), and Secrets by name.
pub(super) fn core(k: &FakeKube, rest: &str, q: &BTreeMap<String, String>) -> Response {
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
        [ns, "secrets", name] => match k.object("secrets", ns, name) {
            Some(secret) => (
                StatusCode::OK,
                [("content-type", "application/json")],
                secret.to_string(),
            )
                .into_response(),
            None => status(StatusCode::NOT_FOUND, "NotFound", "no such secret"),
        },
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
