//! Untrusted input: every bad request gets a clear JSON error and stores nothing;
//! hostile facts are stored as text and change no manifest's structure.

mod support;

use serde_json::{Value, json};
use support::*;

async fn post(r: &Registrar, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = r
        .client
        .post(format!("{}/api/v1/reports", r.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_answered_and_store_nothing() {
    let r = Registrar::start().await;
    let good = serde_json::to_vec(&report_body("aa:bb:cc:00:00:01", json!({"class": "system"}))).unwrap();
    // (what, token, body, expected status, a word the answer must contain)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no token", None, good.clone(), 401, "Bearer"),
        (
            "wrong token",
            Some("not-the-token-at-all-000000"),
            good.clone(),
            401,
            "Bearer",
        ),
        (
            "malformed JSON",
            Some(REPORT_TOKEN),
            b"{\"mac\": \"aa:bb".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "wrong type",
            Some(REPORT_TOKEN),
            br#"{"mac": ["aa:bb:cc:00:00:01"], "specs": {}}"#.to_vec(),
            422,
            "mac must be a string",
        ),
        (
            "specs of the wrong type",
            Some(REPORT_TOKEN),
            br#"{"mac": "aa:bb:cc:00:00:01", "specs": 7}"#.to_vec(),
            422,
            "specs must be",
        ),
        (
            "invalid MAC",
            Some(REPORT_TOKEN),
            br#"{"mac": "aa:bb:cc:00:00", "specs": {}}"#.to_vec(),
            422,
            "not a MAC",
        ),
        (
            "broadcast MAC",
            Some(REPORT_TOKEN),
            br#"{"mac": "ff:ff:ff:ff:ff:ff", "specs": {}}"#.to_vec(),
            422,
            "broadcast",
        ),
        (
            "no MAC",
            Some(REPORT_TOKEN),
            br#"{"specs": {"class": "system"}}"#.to_vec(),
            422,
            "no MAC",
        ),
    ];
    for (what, token, body, status, needle) in cases {
        let (got, json) = post(&r, token, body).await;
        assert_eq!(got, status, "{what}: {json}");
        assert!(json["message"].as_str().unwrap().contains(needle), "{what}: {json}");
        assert!(json["error"].is_string(), "{what}: {json}");
        assert_eq!(r.machine_count().await, 0, "{what} stored something");
    }
    // A 10 MiB body is refused from its Content-Length, before it is read. (Over a raw
    // socket: the server answers and closes without reading, and an HTTP client still
    // busy sending may lose that answer to the reset.)
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(r.url.trim_start_matches("http://"))
            .await
            .unwrap();
        let head = format!(
            "POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {REPORT_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            10 << 20
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&vec![b' '; 64 << 10]).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains("\"error\":\"too_large\"") && answer.contains("exceeds 4194304 bytes"),
            "{answer}"
        );
        assert_eq!(r.machine_count().await, 0);
    }
    // The report token cannot review.
    let resp = r
        .client
        .get(format!("{}/api/v1/machines", r.url))
        .bearer_auth(REPORT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = r
        .client
        .post(format!("{}/api/v1/machines/aa:bb:cc:00:00:01/approve", r.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // An invalid MAC in a path is a 400, an unknown one a 404.
    assert_eq!(
        r.client
            .get(format!("{}/api/v1/machines/zz", r.url))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        r.client
            .get(format!("{}/api/v1/machines/aa:bb:cc:00:00:09", r.url))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Metrics count what was refused.
    let metrics = metrics_text(&r).await;
    assert!(metrics.contains("registrar_auth_failures_total 4"), "{metrics}");
    assert!(
        metrics.contains("registrar_reports_total{result=\"too_large\"} 1"),
        "{metrics}"
    );
}

/// The keys of every mapping, recursively: a document's structure without its values.
fn shape(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| shape(v, format!("{path}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| shape(v, format!("{path}/{i}"), out)),
        _ => out.push(path),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_facts_change_no_manifest_structure() {
    let r = Registrar::start().await;
    let clean_mac = "02:00:00:00:00:01";
    let evil_mac = "02:00:00:00:00:02";
    let specs = |serial: &str, product: &str| {
        json!({"id": "x", "class": "system", "vendor": "Acme", "product": product, "serial": serial,
               "children": [{"class": "network", "logicalname": "eth0", "serial": "02:00:00:00:00:01"},
                            {"class": "disk", "logicalname": "/dev/sda", "units": "bytes", "size": 1000}]})
    };
    r.report(&report_body(clean_mac, specs("SERIAL1", "Box"))).await;
    let mut evil = report_body(
        evil_mac,
        specs(
            "x\nspec: {}",
            "<img src=x onerror=alert(1)> {{ 7*7 }} @octocat [x](http://evil) `|`",
        ),
    );
    evil["hostname"] = json!("{% raw %}\nkind: Secret");
    let resp = r.report(&evil).await;
    assert_eq!(resp.status(), 202);

    let a = r.wait_for_state(clean_mac, "proposed").await;
    let b = r.wait_for_state(evil_mac, "proposed").await;
    let read = |m: &Value| {
        let branch = m["proposal"]["branch"].as_str().unwrap().to_string();
        let path = m["proposal"]["path"].as_str().unwrap().to_string();
        documents(&r.remote.read(&branch, &path).unwrap())
    };
    let (da, db) = (read(&a), read(&b));
    assert_eq!(b["proposal"]["name"], "x-spec");
    let schema = UpstreamSchema::load("tinkerbell.org_hardware.yaml");
    assert!(schema.errors(&db[0]).is_empty());
    for (x, y) in da.iter().zip(&db) {
        let (mut sx, mut sy) = (vec![], vec![]);
        shape(x, String::new(), &mut sx);
        shape(y, String::new(), &mut sy);
        assert_eq!(sx, sy);
    }
    assert_eq!(db.len(), da.len());
    // The facts survive as text, for a human to read.
    let stored = &b["machine"]["facts"];
    assert_eq!(stored["serial"], "x spec: {}");
    assert!(
        stored["product"]
            .as_str()
            .unwrap()
            .contains("<img src=x onerror=alert(1)>")
    );
    let summary = b["proposal"]["summary"].as_str().unwrap();
    assert!(!summary.contains("| Product | <img"), "{summary}");
    assert!(!summary.contains("49"), "a fact was evaluated");
}
