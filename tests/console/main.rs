//! The console over real HTTP: login, sessions, CSRF, escaping, and bulk import as an
//! operator (or a hostile machine) meets them. The browser walk is in `console_browser.rs`.

#[path = "../support/mod.rs"]
mod support;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use support::{OPERATOR_TOKEN, Registrar, lshw, report_body};

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// Logs in through the form; returns the session cookie pair and the Set-Cookie line.
async fn login(r: &Registrar) -> (String, String) {
    let resp = client()
        .post(format!("{}/login", r.url))
        .form(&[("token", OPERATOR_TOKEN), ("name", "alice"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    (set.split(';').next().unwrap().to_string(), set)
}

async fn page(r: &Registrar, cookie: &str, path: &str) -> String {
    let resp = client()
        .get(format!("{}{path}", r.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    resp.text().await.unwrap()
}

/// The CSRF token the page embeds in its forms.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with a CSRF token");
    html[at + 19..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn without_a_session_pages_redirect_to_login_and_the_api_answers_401() {
    let r = Registrar::start().await;
    let resp = client().get(format!("{}/", r.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/login?next=%2F");
    let resp = client()
        .post(format!("{}/machines/aa:bb:cc:dd:ee:01/approve", r.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "a form post without a session goes to the login too"
    );
    let resp = client().get(format!("{}/api/v1/machines", r.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = client()
        .post(format!("{}/api/v1/imports", r.url))
        .body("mac\naa:bb:cc:dd:ee:01\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A wrong token is refused with the form shown again; nothing leaks into a cookie.
    let resp = client()
        .post(format!("{}/login", r.url))
        .form(&[("token", "not-the-token"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("set-cookie").is_none());
    // A `next` that leaves the site is ignored.
    let resp = client()
        .post(format!("{}/login", r.url))
        .form(&[("token", OPERATOR_TOKEN), ("next", "//evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["location"], "/");
}

#[tokio::test]
async fn the_session_cookie_is_httponly_and_strict_and_secure_when_asked() {
    let r = Registrar::start().await;
    let (_, set) = login(&r).await;
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");

    let r = Registrar::start_with(|c| c.ui.secure_cookie = true).await;
    let (_, set) = login(&r).await;
    assert!(set.contains("; Secure"), "{set}");
}

#[tokio::test]
async fn a_state_changing_request_without_the_csrf_token_is_403() {
    let r = Registrar::start().await;
    let mac = "aa:bb:cc:dd:ee:10";
    assert!(
        r.report(&report_body(mac, lshw("supermicro-ssg-6029p-x11dph-t.json")))
            .await
            .status()
            .is_success()
    );
    r.wait_for_state(mac, "proposed").await;
    let (cookie, _) = login(&r).await;

    for body in [vec![], vec![("csrf", "0".repeat(64))]] {
        let resp = client()
            .post(format!("{}/machines/{mac}/approve", r.url))
            .header("cookie", &cookie)
            .form(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
    // The API with a session cookie wants the token in a header.
    let resp = client()
        .post(format!("{}/api/v1/machines/{mac}/approve", r.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.machine(mac).await.unwrap()["machine"]["state"],
        "proposed",
        "nothing happened"
    );

    // With the token from the page, the same request approves.
    let html = page(&r, &cookie, &format!("/machines/{mac}")).await;
    let csrf = csrf_of(&html);
    let resp = client()
        .post(format!("{}/machines/{mac}/approve", r.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let m = r.wait_for_state(mac, "approved").await;
    let log = m["transitions"].as_array().unwrap();
    assert_eq!(
        log.last().unwrap()["actor"],
        "console:alice",
        "the timeline names who approved"
    );
    let merge = r.remote.message("main");
    assert!(merge.contains("Approved-by: console:alice"), "{merge}");
}

#[tokio::test]
async fn a_hostile_product_name_is_text_on_every_page_and_no_script_may_run_inline() {
    let r = Registrar::start().await;
    let mac = "aa:bb:cc:dd:ee:11";
    let evil = "<img src=x onerror=alert(1)>";
    // In the list and the summary (vendor, product), and in the manifest the page
    // highlights as YAML (a disk's device name).
    let disk = json!({"id": "disk", "class": "disk", "logicalname": "/dev/sd<img/src=x/onerror=alert(1)>", "size": 1_000_000_000_000u64, "units": "bytes"});
    let specs = json!({"class": "system", "vendor": "\"><script>alert(2)</script>", "product": evil, "serial": "S-XSS-1", "children": [disk]});
    assert!(r.report(&report_body(mac, specs)).await.status().is_success());
    r.wait_for_state(mac, "proposed").await;
    let (cookie, _) = login(&r).await;
    for path in ["/", &format!("/machines/{mac}"), "/?q=%3Cimg"] {
        let resp = client()
            .get(format!("{}{path}", r.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
        let script_src = csp.split(';').find(|d| d.trim().starts_with("script-src")).unwrap();
        assert!(
            !script_src.contains("unsafe-inline") && script_src.contains("'self'"),
            "{csp}"
        );
        let html = resp.text().await.unwrap();
        assert!(
            !html.contains("<img src=x") && !html.contains("<img/"),
            "{path}: markup from a fact"
        );
        assert!(!html.contains("<script>alert"), "{path}: markup from a fact");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{path}: the name is shown as text"
        );
        // The page's own scripts come from /static only.
        assert!(!html.contains("<script>"), "{path}: inline script");
    }
    let detail = page(&r, &login(&r).await.0, &format!("/machines/{mac}")).await;
    // minijinja's escaping also writes '/' as &#x2f;, which a browser reads back as '/'.
    let detail = detail.replace("&#x2f;", "/");
    let manifest = &detail[detail.find("id=\"manifest\"").expect("the manifest is shown")..];
    assert!(
        manifest.contains("/dev/sd&lt;img/src=x/onerror=alert(1)&gt;"),
        "the device is in the highlighted manifest, as text: {}",
        &manifest[..manifest.len().min(4000)]
    );
}

#[tokio::test]
async fn a_trusted_proxy_names_the_user_and_an_untrusted_one_does_not() {
    let r = Registrar::start_with(|c| {
        c.ui.proxy_header = Some("X-Forwarded-Email".into());
        c.ui.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let resp = client()
        .get(format!("{}/", r.url))
        .header("X-Forwarded-Email", "bob@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("set-cookie").is_some());
    assert!(resp.text().await.unwrap().contains("bob@example.com"));

    let r = Registrar::start_with(|c| {
        c.ui.proxy_header = Some("X-Forwarded-Email".into());
        c.ui.trusted_proxies = vec!["10.9.9.9/32".into()];
    })
    .await;
    let resp = client()
        .get(format!("{}/", r.url))
        .header("X-Forwarded-Email", "mallory@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "the header is ignored from an address that is not a trusted proxy"
    );
}

#[tokio::test]
async fn the_machine_list_pages_filters_and_sorts_on_the_server() {
    let r = Registrar::start().await;
    let rows: String = (0..120)
        .map(|i| format!("aa:bb:cc:00:{:02x}:{:02x},node-{i:03}\n", i / 256, i % 256))
        .collect();
    let resp = r
        .client
        .post(format!("{}/api/v1/imports", r.url))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "text/csv")
        .body(format!("mac,hostname\n{rows}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (cookie, _) = login(&r).await;
    let first = page(&r, &cookie, "/?sort=mac&order=asc").await;
    assert_eq!(first.matches("<tr data-mac=").count(), 50);
    assert!(first.contains("120 machines, 1–50 shown"));
    assert!(first.find("aa:bb:cc:00:00:00").unwrap() < first.find("aa:bb:cc:00:00:01").unwrap());
    assert!(first.contains("rel=\"next\""));
    let last = page(&r, &cookie, "/?sort=mac&order=asc&offset=100").await;
    assert_eq!(last.matches("<tr data-mac=").count(), 20);
    let one = page(&r, &cookie, "/?q=node-007").await;
    assert_eq!(
        one.matches("<tr data-mac=").count(),
        1,
        "free text finds the imported hostname"
    );
    let none = page(&r, &cookie, "/?expected=false").await;
    assert_eq!(none.matches("<tr data-mac=").count(), 0);
    let resp = client()
        .get(format!("{}/?sort=colour", r.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_list_shows_the_switch_port_a_machine_is_cabled_to() {
    let r = Registrar::start().await;
    let mac = "aa:bb:cc:dd:ee:71";
    let lldp: Value = serde_json::from_str(
        &std::fs::read_to_string(support::manifest_dir().join("tests/fixtures/discovery/lldpctl-f-json.json")).unwrap(),
    )
    .unwrap();
    let mut body = report_body(mac, lshw("supermicro-ssg-6029p-x11dph-t.json"));
    body["lldp"] = lldp;
    assert!(r.report(&body).await.status().is_success());
    r.wait_for_state(mac, "proposed").await;
    let (cookie, _) = login(&r).await;
    let list = page(&r, &cookie, "/").await;
    let row = &list[list.find(&format!("<tr data-mac=\"{mac}\"")).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("leaf-01.dc1 Ethernet12"), "{row}");
    let detail = page(&r, &cookie, &format!("/machines/{mac}")).await;
    assert!(
        detail.contains("leaf-01.dc1 port Ethernet12 (eno1)"),
        "the machine page lists every neighbour"
    );
}

async fn post_form(r: &Registrar, cookie: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}{path}", r.url))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn several_machines_are_approved_or_rejected_in_one_action() {
    let r = Registrar::start().await;
    let macs = ["aa:bb:cc:dd:ee:81", "aa:bb:cc:dd:ee:82", "aa:bb:cc:dd:ee:83"];
    for (i, mac) in macs.iter().enumerate() {
        let specs = json!({"class": "system", "vendor": "Acme", "product": "Bulk", "serial": format!("BULK-{i}"), "children": []});
        assert!(r.report(&report_body(mac, specs)).await.status().is_success());
        r.wait_for_state(mac, "proposed").await;
    }
    let (cookie, _) = login(&r).await;
    let csrf = csrf_of(&page(&r, &cookie, "/").await);
    let form = [
        ("csrf", csrf.as_str()),
        ("action", "approve"),
        ("mac", macs[0]),
        ("mac", macs[1]),
    ];
    let resp = post_form(&r, &cookie, "/machines/bulk", &form).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/?done=approve&n=2&failed=0");
    let html = page(&r, &cookie, "/?done=approve&n=2&failed=0").await;
    assert!(html.contains("2 machines approved."));
    for mac in &macs[..2] {
        r.wait_for_state(mac, "approved").await;
    }
    let form = [("csrf", csrf.as_str()), ("action", "reject"), ("mac", macs[2])];
    assert_eq!(
        post_form(&r, &cookie, "/machines/bulk", &form).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(r.machine(macs[2]).await.unwrap()["machine"]["state"], "rejected");
    // The flash is built from fixed words: a crafted link cannot make the console say more.
    let html = page(&r, &cookie, "/?done=%3Cscript%3E&n=1").await;
    assert!(!html.contains("id=\"flash\""));
}

#[tokio::test]
async fn a_machine_is_rejected_with_a_reason_unsuppressed_re_rendered_and_forgotten_from_its_page() {
    let r = Registrar::start().await;
    let mac = "aa:bb:cc:dd:ee:91";
    assert!(
        r.report(&report_body(mac, lshw("supermicro-ssg-6029p-x11dph-t.json")))
            .await
            .status()
            .is_success()
    );
    r.wait_for_state(mac, "proposed").await;
    let (cookie, _) = login(&r).await;
    let csrf = csrf_of(&page(&r, &cookie, &format!("/machines/{mac}")).await);
    let go = |action: &'static str, extra: Option<(&'static str, &'static str)>| {
        let mut form = vec![("csrf", csrf.clone())];
        if let Some((k, v)) = extra {
            form.push((k, v.to_string()));
        }
        let (url, cookie) = (format!("{}/machines/{mac}/{action}", r.url), cookie.clone());
        async move {
            client()
                .post(url)
                .header("cookie", cookie)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        go("reject", Some(("reason", "not in the inventory"))).await.status(),
        StatusCode::SEE_OTHER
    );
    let m = r.machine(mac).await.unwrap();
    assert_eq!(m["machine"]["state"], "rejected");
    let last = m["transitions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["cause"].as_str(), last["actor"].as_str()),
        (Some("not in the inventory"), Some("console:alice"))
    );
    let html = page(&r, &cookie, &format!("/machines/{mac}")).await;
    assert!(
        html.contains("not in the inventory") && html.contains("console:alice"),
        "the timeline shows cause and actor"
    );

    assert_eq!(go("unsuppress", None).await.status(), StatusCode::SEE_OTHER);
    r.wait_for_state(mac, "proposed").await;
    assert_eq!(
        go("workflow", Some(("workflow", "ubuntu-2204"))).await.status(),
        StatusCode::SEE_OTHER
    );
    let m = r.wait_for_state(mac, "proposed").await;
    assert_eq!(
        m["proposal"]["workflow"], "ubuntu-2204",
        "choosing a workflow re-renders"
    );
    let resp = go("workflow", Some(("workflow", "../../etc/passwd"))).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(go("rerender", None).await.status(), StatusCode::SEE_OTHER);

    // An open proposal is git's business: forget is refused until it is rejected.
    let resp = go("forget", None).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(resp.text().await.unwrap().contains("reject an open proposal instead"));
    go("reject", None).await;
    let resp = go("forget", None).await;
    assert_eq!(resp.headers()["location"], "/?done=forget&n=1");
    assert!(r.machine(mac).await.is_none());
}

#[tokio::test]
async fn the_status_page_says_what_an_operator_checks_when_nothing_happens() {
    // A remote that is not there: the queue fills and says why.
    let r = Registrar::start_with(|c| c.gitops.remote = "http://127.0.0.1:9/nowhere.git".into()).await;
    assert!(
        r.report(&report_body(
            "aa:bb:cc:dd:ee:a1",
            lshw("supermicro-ssg-6029p-x11dph-t.json")
        ))
        .await
        .status()
        .is_success()
    );
    let (cookie, _) = login(&r).await;
    let mut html = String::new();
    for _ in 0..100 {
        html = page(&r, &cookie, "/status").await;
        if html.contains("aa:bb:cc:dd:ee:a1</a>:") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(html.contains("<td id=\"queue-length\">1</td>"), "{html}");
    assert!(
        html.contains("aa:bb:cc:dd:ee:a1</a>:"),
        "the last error names the machine: {html}"
    );
    assert!(html.contains("not configured"), "no cluster configured: {html}");
    assert!(html.contains("Packets"), "DHCP counters");
}

#[tokio::test]
async fn the_machine_page_shows_everything_approve_would_merge() {
    let r = Registrar::start().await;
    let mac = "aa:bb:cc:dd:ee:b1";
    assert!(
        r.report(&report_body(mac, lshw("supermicro-ssg-6029p-x11dph-t.json")))
            .await
            .status()
            .is_success()
    );
    r.wait_for_state(mac, "proposed").await;
    // Someone pushes a file outside the proposals' directory onto the proposal's branch.
    let repo = git2::Repository::open_bare(r.dir.path().join("state/gitops.git")).unwrap();
    let head = repo
        .find_reference("refs/heads/registrar/aa-bb-cc-dd-ee-b1")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let blob = repo
        .blob(b"kind: ClusterRoleBinding\nmetadata: {name: <b>own-everything</b>}\n")
        .unwrap();
    let mut dir = repo.treebuilder(None).unwrap();
    dir.insert("evil.yaml", blob, 0o100644).unwrap();
    let dir = dir.write().unwrap();
    let mut root = repo.treebuilder(Some(&head.tree().unwrap())).unwrap();
    root.insert("cluster", dir, 0o040000).unwrap();
    let tree = repo.find_tree(root.write().unwrap()).unwrap();
    let sig = git2::Signature::now("mallory", "mallory@example.com").unwrap();
    repo.commit(
        Some("refs/heads/registrar/aa-bb-cc-dd-ee-b1"),
        &sig,
        &sig,
        "more",
        &tree,
        &[&head],
    )
    .unwrap();

    let (cookie, _) = login(&r).await;
    let html = page(&r, &cookie, &format!("/machines/{mac}")).await;
    assert!(html.contains("id=\"foreign-files\""), "the reviewer is warned");
    assert!(
        html.contains("<code>cluster&#x2f;evil.yaml</code>"),
        "and told which file"
    );
    let html = html.replace("&#x2f;", "/");
    let diff = &html[html.find("id=\"diff\"").expect("the diff is shown")..];
    assert!(
        diff.contains("+kind: ClusterRoleBinding") && diff.contains("&lt;b&gt;own-everything&lt;/b&gt;"),
        "the diff shows the extra file, escaped: {}",
        &diff[..diff.len().min(1500)]
    );
}

#[tokio::test]
async fn without_ui_auth_only_this_machine_gets_in_and_the_api_still_wants_a_token() {
    let r = Registrar::start_with(|c| c.ui.auth = false).await;
    let resp = client().get(format!("{}/", r.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "on loopback, no login");
    // A page elsewhere whose name was rebound to 127.0.0.1 still says its own name.
    let resp = client()
        .get(format!("{}/", r.url))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = client().get(format!("{}/api/v1/machines", r.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, "server:\n  listen: 0.0.0.0:8080\nui:\n  auth: false\n").unwrap();
    let err = registrar::config::Config::load(Some(&config)).unwrap_err().to_string();
    assert!(err.contains("allowed only with server.listen on loopback"), "{err}");
}

#[tokio::test]
async fn live_update_streams_are_bounded_and_give_their_slot_back() {
    let r = Registrar::start().await;
    let (cookie, _) = login(&r).await;
    let open = || {
        client()
            .get(format!("{}/events", r.url))
            .header("cookie", &cookie)
            .send()
    };
    let mut streams = Vec::new();
    for _ in 0..registrar::server::console::MAX_STREAMS {
        let resp = open().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        streams.push(resp);
    }
    assert_eq!(open().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(streams.pop());
    let mut ok = false;
    for _ in 0..50 {
        let resp = open().await.unwrap();
        if resp.status() == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "a closed stream's slot is free again");
}

mod imports;
