//! Bulk import through the console and the API: previews, row-precise errors, nothing
//! half imported, and what an imported machine's proposal carries.

use super::*;

async fn import(r: &Registrar, query: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let resp = r
        .client
        .post(format!("{}/api/v1/imports{query}", r.url))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text })),
    )
}

fn row_errors(v: &Value) -> Vec<(u64, String)> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |e| (r["line"].as_u64().unwrap(), e.as_str().unwrap().to_string()))
        })
        .collect()
}

#[tokio::test]
async fn malformed_imports_get_row_precise_errors_and_nothing_is_half_imported() {
    let r = Registrar::start().await;
    // Wrong header: the file as a whole is refused.
    let (status, v) = import(&r, "", "hostname;ip\nnode-1;10.0.0.1\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("line 1: the header has no `mac` column"),
        "{v}"
    );
    let (status, v) = import(&r, "", "mac,colour\naa:bb:cc:dd:ee:01,red\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["message"].as_str().unwrap().contains("unknown column \"colour\""),
        "{v}"
    );

    // Row errors, each on its line; a quoted field keeps its separator.
    let csv = "mac,hostname,ip,location\n\
               aa:bb:cc:dd:ee:01,node-1,10.0.0.1,\"Rack 1, U2\"\n\
               aa:bb:cc:dd:ee:02,node-2,10.0.0.999,\n\
               AA-BB-CC-DD-EE-01,node-3,,\n\
               zz:zz,node-4,,\n";
    let (status, v) = import(&r, "", csv).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let errors = row_errors(&v);
    assert!(
        errors.iter().any(|(l, e)| *l == 3 && e.contains("10.0.0.999")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|(l, e)| *l == 4 && e.contains("duplicate of line 2")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|(l, e)| *l == 5 && e.contains("zz:zz")), "{errors:?}");
    assert!(!errors.iter().any(|(l, _)| *l == 2), "{errors:?}");
    assert_eq!(v["stored"], false);
    assert_eq!(r.machine_count().await, 0, "a file with bad rows stores nothing");
    assert!(r.get("/api/v1/imports").await["imports"].as_array().unwrap().is_empty());

    // The preview changes nothing either; skip_invalid stores the valid row alone.
    let (status, v) = import(&r, "?dry_run=true", csv).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((v["valid"].as_u64(), v["invalid"].as_u64()), (Some(1), Some(3)));
    assert_eq!(r.machine_count().await, 0);
    let (status, v) = import(&r, "?skip_invalid=true&name=rack-1", csv).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let m = r.machine("aa:bb:cc:dd:ee:01").await.unwrap();
    assert_eq!(m["machine"]["expected"]["location"], "Rack 1, U2");
    assert_eq!(m["machine"]["state"], "detected");
    let batch = &r.get("/api/v1/imports").await["imports"][0];
    assert_eq!(batch["name"], "rack-1");
    assert_eq!(
        batch["rows"].as_array().unwrap().len(),
        4,
        "skipped rows are kept with their reasons"
    );

    // Importing the same MAC again is an error on its line.
    let (_, v) = import(&r, "?dry_run=true", "mac\naa:bb:cc:dd:ee:01\n").await;
    assert!(
        row_errors(&v)[0]
            .1
            .contains("already expected (expected — rack-1, row 2)"),
        "{v}"
    );

    // 50 MiB is refused before it is read.
    let big = vec![b'a'; 50 << 20];
    let (status, _) = import(&r, "", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn an_expected_machine_reports_and_its_proposal_carries_the_imported_values() {
    let r = Registrar::start_with(|c| c.discovery.only_expected = true).await;
    let (status, v) = import(
        &r,
        "?name=batch-7",
        "mac;hostname;ip;netmask;gateway;nameservers;bmc_address;bmc_secret;location;labels\n\
        aa:bb:cc:dd:ee:21;web-01;10.1.0.21;24;10.1.0.1;10.1.0.2 10.1.0.3;10.2.0.21;web-01-ipmi;DC1 Rack 4;team=web\n",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    // An unexpected machine reports: recorded and shown, never proposed.
    assert!(
        r.report(&report_body(
            "aa:bb:cc:dd:ee:99",
            lshw("supermicro-ssg-6029p-x11dph-t.json")
        ))
        .await
        .status()
        .is_success()
    );
    // The expected one reports.
    assert!(
        r.report(&report_body(
            "aa:bb:cc:dd:ee:21",
            lshw("supermicro-ssg-6029p-x11dph-t.json")
        ))
        .await
        .status()
        .is_success()
    );
    let m = r.wait_for_state("aa:bb:cc:dd:ee:21", "proposed").await;
    assert_eq!(m["proposal"]["name"], "web-01");
    // Markdown-escaped in the source; as a reviewer reads it:
    let summary = m["proposal"]["summary"].as_str().unwrap().replace('\\', "");
    assert!(summary.contains("Expected — batch-7, row 2"), "{summary}");
    assert!(summary.contains("hostname web-01 · IP 10.1.0.21"), "{summary}");
    let yaml = r
        .remote
        .read("registrar/aa-bb-cc-dd-ee-21", "hardware/web-01.yaml")
        .unwrap();
    let docs = support::documents(&yaml);
    let iface = &docs[0]["spec"]["interfaces"][0]["dhcp"];
    assert_eq!(iface["hostname"], "web-01");
    assert_eq!(iface["ip"]["address"], "10.1.0.21");
    assert_eq!(iface["ip"]["netmask"], "255.255.255.0");
    assert_eq!(iface["ip"]["gateway"], "10.1.0.1");
    assert_eq!(iface["name_servers"], json!(["10.1.0.2", "10.1.0.3"]));
    assert_eq!(docs[0]["metadata"]["labels"]["registrar.dev/location"], "DC1-Rack-4");
    assert_eq!(docs[0]["metadata"]["labels"]["team"], "web");
    let bmc = docs
        .iter()
        .find(|d| d["kind"] == "Machine")
        .expect("a BMC object from the imported address");
    assert_eq!(bmc["spec"]["connection"]["host"], "10.2.0.21");
    assert_eq!(bmc["spec"]["connection"]["authSecretRef"]["name"], "web-01-ipmi");
    let hw = support::UpstreamSchema::load("tinkerbell.org_hardware.yaml");
    assert!(hw.errors(&docs[0]).is_empty(), "{:?}", hw.errors(&docs[0]));

    let unexpected = r.machine("aa:bb:cc:dd:ee:99").await.unwrap();
    assert_eq!(unexpected["machine"]["state"], "reported");
    assert!(unexpected["proposal"].is_null());
    assert!(
        unexpected["machine"]["last_error"]
            .as_str()
            .unwrap()
            .contains("not expected")
    );
    assert!(
        !r.remote.branches().iter().any(|b| b.contains("ee-99")),
        "no branch for a rogue machine"
    );
}

#[tokio::test]
async fn propose_now_then_facts_update_the_same_proposal() {
    let r = Registrar::start().await;
    let (status, _) = import(
        &r,
        "?mode=propose&name=seed",
        "mac,hostname,ip\naa:bb:cc:dd:ee:31,db-01,10.3.0.31\n",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let before = r.wait_for_state("aa:bb:cc:dd:ee:31", "proposed").await;
    assert_eq!(before["proposal"]["name"], "db-01");
    let number = before["proposal"]["number"].clone();
    let head = r.remote.head("registrar/aa-bb-cc-dd-ee-31").unwrap();

    assert!(
        r.report(&report_body(
            "aa:bb:cc:dd:ee:31",
            lshw("supermicro-ssg-6029p-x11dph-t.json")
        ))
        .await
        .status()
        .is_success()
    );
    let mut after = before.clone();
    for _ in 0..100 {
        after = r.machine("aa:bb:cc:dd:ee:31").await.unwrap();
        if r.remote.head("registrar/aa-bb-cc-dd-ee-31") != Some(head) && !after["machine"]["pending"].as_bool().unwrap()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(after["proposal"]["number"], number, "the same proposal, updated");
    assert_eq!(
        r.get("/api/v1/proposals").await["proposals"].as_array().unwrap().len(),
        1
    );
    let yaml = r
        .remote
        .read("registrar/aa-bb-cc-dd-ee-31", "hardware/db-01.yaml")
        .unwrap();
    assert!(yaml.contains("disks:"), "the facts arrived in the same file:\n{yaml}");
    assert!(yaml.contains("10.3.0.31"));
}

#[tokio::test]
async fn live_updates_arrive_as_server_sent_events() {
    let r = Registrar::start().await;
    let (cookie, _) = login(&r).await;
    let mut resp = client()
        .get(format!("{}/events", r.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(
        r.report(&report_body(
            "aa:bb:cc:dd:ee:41",
            lshw("supermicro-ssg-6029p-x11dph-t.json")
        ))
        .await
        .status()
        .is_success()
    );
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("event: changed"), "{chunk:?}");
}

#[tokio::test]
async fn the_cli_imports_a_file_and_names_bad_rows_by_line() {
    let r = Registrar::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rack-9.csv");
    std::fs::write(
        &file,
        "mac,hostname\naa:bb:cc:dd:ee:51,n-51\nnope,n-52\naa:bb:cc:dd:ee:53,n-53\n",
    )
    .unwrap();
    let run = |extra: &'static [&'static str]| {
        let (url, file, state) = (r.url.clone(), file.clone(), dir.path().join("cli-state"));
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
                .args(["import", file.to_str().unwrap(), "--url", &url])
                .args(extra)
                .env("REGISTRAR_STATE_DIR", state)
                .env("REGISTRAR_OPERATOR_TOKEN", OPERATOR_TOKEN)
                .env("REGISTRAR_REPORT_TOKEN", support::REPORT_TOKEN)
                .output()
                .unwrap()
        })
    };
    let out = run(&["--dry-run"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("rack-9.csv:3: mac: \"nope\" is not a MAC"), "{stdout}");
    assert!(
        stdout.contains("dry run: 2 valid, 1 with errors; nothing stored"),
        "{stdout}"
    );

    let out = run(&[]).await.unwrap();
    assert!(!out.status.success(), "a file with a bad row is refused as a whole");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--skip-invalid"));
    assert_eq!(r.machine_count().await, 0);

    let out = run(&["--skip-invalid", "--mode", "propose"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("imported 2 row(s) as batch 1 (rack-9.csv); skipped 1"),
        "{stdout}"
    );
    r.wait_for_state("aa:bb:cc:dd:ee:51", "proposed").await;
}

fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "registrar-test-boundary-7c1d";
    let mut body = Vec::new();
    for (name, filename, content) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/csv\r\n\r\n").as_bytes()),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn a_file_uploaded_in_the_console_is_previewed_then_imported() {
    let r = Registrar::start().await;
    let (cookie, _) = login(&r).await;
    let csrf = csrf_of(&page(&r, &cookie, "/import").await);
    let file = "\u{feff}mac;hostname\r\naa:bb:cc:dd:ee:c1;up-01\r\naa:bb:cc:dd:ee:c2;up-02\r\n".as_bytes();
    let post = |fields: Vec<(&'static str, Option<&'static str>, Vec<u8>)>, with_csrf: bool| {
        let refs: Vec<(&str, Option<&str>, &[u8])> = fields.iter().map(|(n, f, c)| (*n, *f, c.as_slice())).collect();
        let (ct, body) = multipart(&refs);
        let url = if with_csrf {
            format!("{}/import?csrf={csrf}", r.url)
        } else {
            format!("{}/import", r.url)
        };
        client()
            .post(url)
            .header("cookie", &cookie)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    // Without the token in the form's action: refused.
    let resp = post(vec![("file", Some("rack.csv"), file.to_vec())], false)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // The preview stores nothing.
    let resp = post(
        vec![
            ("file", Some("rack.csv"), file.to_vec()),
            ("mode", None, b"expected".to_vec()),
        ],
        true,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Preview: 2 valid, 0 with errors"), "{html}");
    assert_eq!(r.machine_count().await, 0);
    // Confirmed: stored, then listed with their fates.
    let resp = post(
        vec![
            ("csv", None, file.to_vec()),
            ("name", None, b"rack 7".to_vec()),
            ("confirm", None, b"1".to_vec()),
        ],
        true,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.machine_count().await, 2);
    let batches = page(&r, &cookie, "/imports").await;
    assert!(
        batches.contains("rack 7") && batches.contains("aa:bb:cc:dd:ee:c1"),
        "{batches}"
    );
    // Bigger than the console takes: 413, nothing stored.
    let big = vec![b'a'; 9 << 20];
    let resp = post(vec![("file", Some("big.csv"), big)], true).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.machine_count().await, 2);
}
