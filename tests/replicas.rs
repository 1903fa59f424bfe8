//! Issue 19 on the shipped binary: two replicas, one PostgreSQL store, one Lease.
//!
//! Two `registrar serve` processes share a PostgreSQL store (a throwaway server from
//! Debian's packages) and stand for the Lease `registrar` on the fake Kubernetes API
//! server. Machines report to both at once. The leader is killed with SIGKILL in the middle
//! of the burst; the other replica takes the Lease once it expires and finishes: every
//! machine has exactly one pull request, and none is lost.

mod support;

use serde_json::json;
use support::binary::{Process, eventually, example, kubeconfig, listen_on, point_at_github, set, token_env};
use support::fake_github::FakeGithub;
use support::fake_kube::FakeKube;
use support::journey::{machine, report_specs, review, step, supermicro};
use support::postgres::Postgres;

const MACHINES: usize = 30;

fn mac_of(i: usize) -> String {
    format!("0c:c4:7a:3b:00:{i:02x}")
}

/// A replica on the GitHub example, on the shared store and the fake cluster, standing for
/// the Lease as `name`.
fn replica(name: &str, dir: &std::path::Path, gh: &FakeGithub, kube: &FakeKube, store_url: &str) -> Process {
    let mut config = example("github.yaml");
    point_at_github(&mut config, dir, gh);
    listen_on(&mut config);
    // Slow enough that the burst is still under way when the leader dies.
    set(&mut config, "forge.github.mutation_interval_ms", json!(150));
    set(&mut config, "forge.github.reconcile_seconds", json!(2));
    set(&mut config, "queue.retry_seconds", json!(1));
    set(&mut config, "queue.reconcile_seconds", json!(2));
    set(&mut config, "cluster.enabled", json!(true));
    set(&mut config, "cluster.leader_election.enabled", json!(true));
    set(&mut config, "cluster.leader_election.lease_seconds", json!(3));
    std::fs::write(dir.join("postgres-url"), store_url).unwrap();
    set(
        &mut config,
        "store.postgres_url_file",
        json!(dir.join("postgres-url").display().to_string()),
    );
    let kubeconfig = kubeconfig(dir, &kube.url).display().to_string();
    let mut env = token_env();
    env.push(("KUBECONFIG", &kubeconfig));
    env.push(("POD_NAME", name));
    Process::start(dir, config, &env)
}

fn holder(kube: &FakeKube) -> Option<String> {
    kube.lease("tinkerbell", "registrar")?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_killed_mid_burst_is_replaced_and_no_machine_is_lost_or_proposed_twice() {
    let Some(pg) = Postgres::start() else { return };
    let store = pg.url();
    let gh = FakeGithub::start().await;
    let kube = FakeKube::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    step("replica a starts first and takes the Lease; replica b stands by");
    let mut a = replica("replica-a", dir_a.path(), &gh, &kube, &store);
    a.wait_ready().await;
    eventually(30, "replica a to lead", || async {
        (holder(&kube).as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let mut b = replica("replica-b", dir_b.path(), &gh, &kube, &store);
    b.wait_ready().await;
    eventually(30, "replica b to say it follows replica a", || async {
        let ready = reqwest::get(format!("{}/readyz", b.url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        ready.contains("standing by: replica-a leads").then_some(())
    })
    .await;
    // GitHub's webhooks reach the replica that survives (a Service would pick either).
    *gh.hook_url.lock().unwrap() = Some(format!("{}/webhooks/github", b.url));

    step("30 machines report, to both replicas at once");
    let reports = (0..MACHINES).map(|i| {
        let url = if i % 2 == 0 { a.url.clone() } else { b.url.clone() };
        async move { report_specs(&url, &mac_of(i), supermicro(&format!("HA{i:04}"), 0x4000 + i as u32)).await }
    });
    futures::future::join_all(reports).await;

    step("the leader is killed with SIGKILL while pull requests are being opened");
    eventually(60, "the leader to open a few pull requests", || async {
        (gh.pulls().len() >= 3).then_some(())
    })
    .await;
    let opened_before = gh.pulls().len();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        opened_before < MACHINES,
        "the burst was still under way ({opened_before} opened)"
    );

    step("replica b takes the Lease once it expires, and finishes");
    eventually(30, "replica b to lead", || async {
        (holder(&kube).as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let lease = kube.lease("tinkerbell", "registrar").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], json!(1), "{lease}");
    for i in 0..MACHINES {
        let mac = mac_of(i);
        eventually(120, &format!("{mac} to be proposed"), || async {
            let m = machine(&b, &mac).await;
            (m["machine"]["state"] == "proposed").then_some(())
        })
        .await;
    }

    step("exactly one pull request per machine, each with its machine's file");
    // Nothing is still in flight on GitHub: the queue is empty.
    eventually(30, "the queue to be empty", || async {
        let status = support::journey::get(&format!("{}/api/v1/status", b.url), support::OPERATOR_TOKEN)
            .await
            .1;
        (status["queue"]["length"] == 0).then_some(())
    })
    .await;
    let pulls = gh.pulls();
    let mut heads: Vec<String> = pulls.iter().map(|p| p.head.clone()).collect();
    heads.sort();
    heads.dedup();
    assert_eq!(heads.len(), pulls.len(), "a branch with two pull requests: {heads:?}");
    assert_eq!(pulls.len(), MACHINES, "one pull request per machine");
    for i in 0..MACHINES {
        let m = machine(&b, &mac_of(i)).await;
        let number = m["proposal"]["number"].as_u64().unwrap_or_else(|| panic!("{m}"));
        assert!(pulls.iter().any(|p| p.number == number && p.open), "{m}");
    }

    step("the killed replica comes back standing by; a rejection asked of it is carried out by the leader");
    a.start_again().await;
    eventually(30, "replica a to say it follows replica b", || async {
        let ready = reqwest::get(format!("{}/readyz", a.url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        ready.contains("standing by: replica-b leads").then_some(())
    })
    .await;
    let rejected = mac_of(0);
    let number = machine(&a, &rejected).await["proposal"]["number"].as_u64().unwrap();
    review(&a, &rejected, "reject", json!({"reason": "not ours"})).await;
    eventually(
        60,
        "the leader to close the rejected machine's pull request",
        || async { (!gh.pull(number).open).then_some(()) },
    )
    .await;
    assert_eq!(machine(&b, &rejected).await["machine"]["state"], "rejected");
    assert_eq!(gh.pulls().len(), MACHINES, "nothing proposed again");
    assert!(b.exited().is_none(), "the new leader keeps running:\n{}", b.log());
}
