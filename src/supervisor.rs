//! One owner for every long-running task ("pipeline"): it starts them, restarts one that
//! fails or panics with a backoff, keeps each one's readiness for `/readyz`, and waits for
//! all of them at shutdown. A pipeline that dies is never silent: it is restarted, counted
//! in `registrar_pipeline_restarts_total` and shown not ready until it is back.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// One pipeline's readiness, as `/readyz` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub ready: bool,
    /// What it is doing, or why it is not ready.
    pub detail: String,
    pub restarts: u64,
}

/// The readiness of every pipeline the configuration enables, by name.
#[derive(Default)]
pub struct Readiness {
    checks: Mutex<BTreeMap<&'static str, Check>>,
}

impl Readiness {
    fn update(&self, name: &'static str, f: impl FnOnce(&mut Check)) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let check = checks.entry(name).or_insert_with(|| Check {
            ready: false,
            detail: "starting".into(),
            restarts: 0,
        });
        f(check);
    }

    /// Registers `name` as not ready yet: a pipeline counts from the moment it is configured.
    pub fn expect(&self, name: &'static str) {
        self.update(name, |_| {});
    }

    pub fn ready(&self, name: &'static str, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(name, |c| {
            c.ready = true;
            c.detail = detail;
        });
    }

    pub fn not_ready(&self, name: &'static str, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(name, |c| {
            c.ready = false;
            c.detail = detail;
        });
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, Check> {
        self.checks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn all_ready(&self) -> bool {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .all(|c| c.ready)
    }
}

/// Starts pipelines and owns them until shutdown.
#[derive(Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    shutdown: Shutdown,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

/// A pipeline that ran this long before failing starts again without waiting: the backoff
/// is for crash loops, not for a failure once a day.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Supervisor {
    pub fn new(shutdown: Shutdown, readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Self {
        Supervisor {
            tracker: TaskTracker::new(),
            shutdown,
            readiness,
            metrics,
        }
    }

    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Runs the pipeline that `start` makes until shutdown. It returns `Ok` only when it
    /// saw the shutdown; an `Err`, an early `Ok` or a panic restarts it after a backoff.
    pub fn spawn<F, Fut>(&self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.readiness.expect(name);
        let (readiness, shutdown, metrics) = (self.readiness.clone(), self.shutdown.clone(), self.metrics.clone());
        metrics.pipeline_up(name).set(0);
        self.tracker.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let started = Instant::now();
                metrics.pipeline_up(name).set(1);
                // Its own task, so that a panic is a JoinError here and not the end of us.
                let outcome = tokio::spawn(start()).await;
                metrics.pipeline_up(name).set(0);
                if shutdown.is_fired() {
                    return;
                }
                let why = match outcome {
                    Ok(Ok(())) => "stopped without an error".to_string(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = FIRST_BACKOFF;
                }
                tracing::error!(pipeline = name, error = %why, retry_in = ?backoff, "pipeline failed; restarting");
                readiness.update(name, |c| {
                    c.ready = false;
                    c.detail = format!("restarting after: {why}");
                    c.restarts += 1;
                });
                metrics.pipeline_restarts(name).inc();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    /// Runs a one-off task (done once it returns Ok, e.g. a scan at start) under the same
    /// ownership: awaited at shutdown, and its failure or panic logged, never silent.
    pub fn spawn_once<Fut>(&self, name: &'static str, task: Fut)
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tracker.spawn(async move {
            match tokio::spawn(task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error = %format!("{e:#}"), "task failed"),
                Err(e) => tracing::error!(task = name, error = %e, "task panicked"),
            }
        });
    }

    /// Waits (at most `grace`) for every pipeline to see the shutdown and stop.
    pub async fn wait(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failing_pipeline_is_restarted_and_shown_not_ready() {
        let (trigger, shutdown) = crate::shutdown::channel();
        let supervisor = Supervisor::new(shutdown.clone(), Arc::default(), Arc::new(Metrics::new()));
        let runs = Arc::new(AtomicU32::new(0));
        let (r, ready) = (runs.clone(), supervisor.readiness().clone());
        let stop = shutdown.clone();
        supervisor.spawn("flaky", move || {
            let (r, ready, stop) = (r.clone(), ready.clone(), stop.clone());
            async move {
                match r.fetch_add(1, Ordering::SeqCst) {
                    0 => anyhow::bail!("first run fails"),
                    1 => panic!("second run panics"),
                    _ => {
                        ready.ready("flaky", "running");
                        stop.wait().await;
                        Ok(())
                    }
                }
            }
        });
        while runs.load(Ordering::SeqCst) < 3 || !supervisor.readiness().all_ready() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let check = supervisor.readiness().snapshot()["flaky"].clone();
        assert_eq!(check.restarts, 2);
        assert!(check.ready);
        trigger.fire();
        assert!(supervisor.wait(Duration::from_secs(5)).await);
    }
}
