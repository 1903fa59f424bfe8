//! The same machine seen many times, at once, yields one proposal and one commit.

mod support;

use support::*;

/// A machine of its own, reported to prove that the proposal worker has run a pass.
const PROBE: &str = "02:00:00:00:99:01";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_reports_make_one_proposal_and_one_commit() {
    let r = Registrar::start().await;
    let body = report_body("0C:42:A1:3D:BD:E0", lshw("supermicro-ssg-6029p-x11dph-t.json"));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (client, url, body) = (r.client.clone(), r.url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{url}/api/v1/reports"))
                .bearer_auth(REPORT_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    let m = r.wait_for_state("0c:42:a1:3d:bd:e0", "proposed").await;
    assert_eq!(m["machine"]["seen_count"], 200);
    // A straggling duplicate would be queued by now (every report was answered, and a report
    // queues before its answer); a probe machine proposed after it proves a worker pass ran.
    probe_worker_pass(&r, PROBE).await;
    let text = metrics_text(&r).await;
    assert_eq!(
        metric_in(&text, SYNCS_PUSHED),
        2.0,
        "one push for it, one for the probe: {text}"
    );
    assert_eq!(metric_in(&text, SYNCS_ERROR), 0.0, "{text}");
    let proposals = r.get("/api/v1/proposals").await["proposals"].clone();
    assert_eq!(
        proposals
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["mac"] == "0c:42:a1:3d:bd:e0")
            .count(),
        1,
        "{proposals:#}"
    );
    assert_eq!(
        r.remote.branches(),
        vec![
            "main".to_string(),
            "registrar/02-00-00-00-99-01".to_string(),
            "registrar/0c-42-a1-3d-bd-e0".to_string()
        ]
    );
    assert_eq!(r.remote.commits_ahead("main", "registrar/0c-42-a1-3d-bd-e0"), 1);
    let transitions = m["transitions"].as_array().unwrap();
    assert_eq!(transitions.len(), 2, "reported, proposed: {transitions:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_repeat_pushes_nothing() {
    let r = Registrar::start().await;
    let body = report_body("b4:96:91:70:26:c8", lshw("packet-c3small-asrockrack-e3c246d4i-nl.json"));
    r.report(&body).await;
    r.wait_for_state("b4:96:91:70:26:c8", "proposed").await;
    let head = r.remote.head("registrar/b4-96-91-70-26-c8");
    for _ in 0..20 {
        let resp: serde_json::Value = r.report(&body).await.json().await.unwrap();
        assert_eq!(resp["queued"], false);
    }
    // Had a repeat been queued after all, the probe's worker pass would have synced it first.
    probe_worker_pass(&r, PROBE).await;
    assert_eq!(r.remote.head("registrar/b4-96-91-70-26-c8"), head);
    let text = metrics_text(&r).await;
    assert_eq!(
        metric_in(&text, SYNCS_PUSHED),
        2.0,
        "the first report's push and the probe's: {text}"
    );
}
