//! Telling people when machines need them (issue 20), on the shipped binary: a Slack-style
//! receiver and a JSON one learn that machines wait for review and were approved. The
//! receiver that fails first gets the news again with what followed — nothing lost, and
//! nothing told twice once it was taken.

mod support;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use support::binary::{Process, eventually, example, set, token_env};
use support::journey::{post_report, state_reached};

/// Everything a receiver was sent, with what it answered; it answers 500 `failures` times first.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(u16, Value)>>>,
    failures: Arc<Mutex<u32>>,
}

async fn receive(State(r): State<Receiver>, axum::Json(body): axum::Json<Value>) -> StatusCode {
    let mut failures = r.failures.lock().unwrap();
    let status = if *failures > 0 {
        *failures -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    r.got.lock().unwrap().push((status.as_u16(), body));
    status
}

async fn receiver(failures: u32) -> (Receiver, String) {
    let r = Receiver::default();
    *r.failures.lock().unwrap() = failures;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, url)
}

/// The texts the receiver took (answered 200).
fn taken(r: &Receiver, key: &str) -> Vec<Value> {
    r.got
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b[key].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_and_approved_machines_are_told_once_even_to_a_receiver_that_failed() {
    let (slack, slack_url) = receiver(1).await;
    let (plain, plain_url) = receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slack-url"), &slack_url).unwrap();
    let mut config = example("local.yaml");
    set(
        &mut config,
        "notify",
        json!({"interval_seconds": 1, "webhooks": [{"url_file": "slack-url", "format": "slack"}, {"url": plain_url}]}),
    );
    let mut p = Process::start(dir.path(), config, &token_env());
    let ready = p.wait_ready().await;
    assert_eq!(ready["checks"]["notify"]["ready"], true, "{ready:#}");

    let macs = ["0c:c4:7a:20:01:01", "0c:c4:7a:20:01:02"];
    assert_eq!(
        post_report(&p.url, macs[0], "packet-c3small-asrockrack-e3c246d4i-nl.json")
            .await
            .status(),
        202
    );
    assert_eq!(
        post_report(&p.url, macs[1], "supermicro-ssg-6029p-x11dph-t.json")
            .await
            .status(),
        202
    );
    for mac in macs {
        state_reached(&p, mac, "proposed").await;
    }
    // Both receivers learn of both machines, each named in exactly one message they took.
    for (r, key) in [(&slack, "text"), (&plain, "text")] {
        let texts = eventually(30, "both machines told", || async {
            let texts = taken(r, key);
            macs.iter()
                .all(|m| texts.iter().any(|t| t.as_str().unwrap().contains(m)))
                .then_some(texts)
        })
        .await;
        for mac in macs {
            let told = texts.iter().filter(|t| t.as_str().unwrap().contains(mac)).count();
            assert_eq!(told, 1, "{mac} in {texts:?}");
        }
        assert!(
            texts.iter().all(|t| t.as_str().unwrap().contains("wait for review")),
            "{texts:?}"
        );
    }
    // The Slack receiver failed once: what it missed came with a later message.
    let first = slack.got.lock().unwrap()[0].clone();
    assert_eq!(first.0, 500);
    assert!(
        first.1["text"].as_str().unwrap().contains("wait for review"),
        "{first:?}"
    );
    // The JSON form carries the events themselves.
    let events: Vec<Value> = taken(&plain, "events")
        .into_iter()
        .flat_map(|e| e.as_array().cloned().unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["mac"] == macs[0] && e["state"] == "proposed"),
        "{events:?}"
    );

    // An approval is news too, naming who approved.
    let out = p.cli(&["approve", macs[0]]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(30, "the approval told", || async {
        taken(&slack, "text")
            .iter()
            .any(|t| t.as_str().unwrap().contains("1 approved:") && t.as_str().unwrap().contains(macs[0]))
            .then_some(())
    })
    .await;
    assert!(p.stop().success());
}
