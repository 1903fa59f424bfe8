//! Follows the logs of Smee (or the single `tinkerbell` binary) through the API and passes
//! on the MACs it could not find Hardware for. Each pod is followed by its own task; when a
//! stream ends (pod restart, log rotation, a dropped connection) the pod list is read again
//! and following resumes from a minute back: a repeated line only repeats a detection,
//! which is idempotent, while a gap would lose a machine.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};

use crate::domain::Mac;
use crate::shutdown::Shutdown;
use crate::sources::smee::parse_line;

#[derive(Clone, Debug)]
pub struct SmeeLogs {
    pub namespace: String,
    /// Pods to follow, e.g. `app=tinkerbell` (current chart) or `app=smee` (legacy).
    pub label_selector: String,
    /// The container in those pods: `tinkerbell` or `smee`.
    pub container: String,
}

/// Follows every matching pod until shutdown, sending unknown MACs to `sink`.
pub async fn follow(
    client: kube::Client,
    settings: SmeeLogs,
    sink: tokio::sync::mpsc::Sender<Mac>,
    readiness: Arc<crate::supervisor::Readiness>,
    shutdown: Shutdown,
) {
    let pods: Api<Pod> = Api::namespaced(client, &settings.namespace);
    let followed: Arc<Mutex<HashSet<String>>> = Arc::default();
    loop {
        match pods.list(&ListParams::default().labels(&settings.label_selector)).await {
            Ok(list) => {
                if list.items.is_empty() {
                    readiness.not_ready(
                        "smee_logs",
                        format!(
                            "no pod in {} matches {}: check cluster.smee_logs.label_selector",
                            settings.namespace, settings.label_selector
                        ),
                    );
                } else {
                    readiness.ready("smee_logs", format!("following {} Smee pod(s)", list.items.len()));
                }
                for pod in list.items {
                    let Some(name) = pod.metadata.name.clone() else {
                        continue;
                    };
                    if !followed.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone()) {
                        continue;
                    }
                    let (pods, container, sink, followed, stop) = (
                        pods.clone(),
                        settings.container.clone(),
                        sink.clone(),
                        followed.clone(),
                        shutdown.clone(),
                    );
                    tokio::spawn(async move {
                        tokio::select! {
                            r = follow_pod(&pods, &name, &container, &sink) => {
                                if let Err(e) = r {
                                    tracing::warn!(pod = %name, error = %e, "Smee log stream ended");
                                }
                            }
                            _ = stop.wait() => {}
                        }
                        followed.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                    });
                }
            }
            Err(e) => {
                readiness.not_ready("smee_logs", format!("could not list Smee pods: {e}"));
                tracing::warn!(error = %e, "could not list Smee pods");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait() => return,
        }
    }
}

async fn follow_pod(
    pods: &Api<Pod>,
    name: &str,
    container: &str,
    sink: &tokio::sync::mpsc::Sender<Mac>,
) -> Result<(), kube::Error> {
    let params = LogParams {
        follow: true,
        container: Some(container.to_string()),
        since_seconds: Some(60),
        ..LogParams::default()
    };
    let stream = pods.log_stream(name, &params).await?;
    let mut lines = stream.lines();
    tracing::info!(pod = %name, "following Smee's log");
    while let Some(line) = lines.next().await {
        let line = line.map_err(|e| kube::Error::Service(Box::new(e)))?;
        if let Some(unknown) = parse_line(&line) {
            // A full channel drops the line: Smee logs the machine again on its next request.
            let _ = sink.try_send(unknown.mac);
        }
    }
    Ok(())
}
