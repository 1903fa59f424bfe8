//! People and their roles, on the shipped binary: viewers read, approvers review, admins
//! import and forget. Names come from personal tokens or a trusted proxy's header, never from
//! what a caller says of itself; a refusal is 403 with the reason, and changes nothing.
//! On GitHub, approving in Registrar is off unless switched on: reviews happen on GitHub.

mod support;

use serde_json::{Value, json};
use support::binary::{Process, example, set, start_on_github, token_env};
use support::fake_github::FakeGithub;
use support::journey::{post_report, state_reached};
use support::*;

const VIEWER: &str = "vera-viewer-token-0123456789";
const APPROVER: &str = "abe-approver-token-0123456789";
const ADMIN: &str = "ada-admin-token-0123456789";
const METRICS: &str = "prometheus-metrics-token-0123456789";
const MAC: &str = "0c:c4:7a:21:00:01";

/// Registrar on examples/local.yaml with three named users, each with a token file, one
/// person a proxy may name as an approver, and everyone else a proxy names a viewer.
async fn start_with_people(dir: &std::path::Path) -> Process {
    let mut config = example("local.yaml");
    let mut users = vec![];
    for (name, role, token) in [
        ("vera", "viewer", VIEWER),
        ("abe", "approver", APPROVER),
        ("ada", "admin", ADMIN),
    ] {
        let file = dir.join(format!("{name}.token"));
        std::fs::write(&file, format!("{token}\n")).unwrap();
        users.push(json!({"name": name, "role": role, "token_file": file.display().to_string()}));
    }
    users.push(json!({"name": "pat@example.com", "role": "approver"}));
    set(&mut config, "auth.users", json!(users));
    let metrics = dir.join("metrics.token");
    std::fs::write(&metrics, format!("{METRICS}\n")).unwrap();
    set(
        &mut config,
        "auth.metrics_token_file",
        json!(metrics.display().to_string()),
    );
    set(&mut config, "ui.proxy_header", json!("X-Forwarded-Email"));
    set(&mut config, "ui.trusted_proxies", json!(["127.0.0.1/32"]));
    let mut p = Process::start(dir, config, &token_env());
    p.wait_ready().await;
    p
}

async fn call(p: &Process, method: reqwest::Method, path: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .request(method, format!("{}{path}", p.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn transitions(p: &Process, mac: &str) -> Vec<Value> {
    let (status, m) = call(
        p,
        reqwest::Method::GET,
        &format!("/api/v1/machines/{mac}"),
        OPERATOR_TOKEN,
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{m}");
    m["transitions"].as_array().unwrap().clone()
}

async fn propose(p: &Process, mac: &str) {
    let resp = post_report(&p.url, mac, "supermicro-ssg-6029p-x11dph-t.json").await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    state_reached(p, mac, "proposed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_reads_an_approver_approves_an_admin_imports_each_under_their_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = start_with_people(dir.path()).await;
    propose(&p, MAC).await;
    let before = transitions(&p, MAC).await;

    // A viewer reads, and may not approve, whatever name the body claims.
    let (status, list) = call(&p, reqwest::Method::GET, "/api/v1/machines", VIEWER, Value::Null).await;
    assert_eq!(status, 200, "{list}");
    let approve = format!("/api/v1/machines/{MAC}/approve");
    let (status, err) = call(&p, reqwest::Method::POST, &approve, VIEWER, json!({"actor": "ada"})).await;
    assert_eq!(status, 403, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("vera is a viewer; this needs the approver role"),
        "{err}"
    );
    let rows = "mac,hostname\n0c:c4:7a:21:00:02,web-2\n";
    let import = |token: &'static str| {
        let url = format!("{}/api/v1/imports", p.url);
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "text/csv")
                .body(rows)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, text) = import(VIEWER).await;
    assert_eq!(status, 403, "{text}");
    // An approver reviews but does not import.
    let (status, text) = import(APPROVER).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("abe is an approver; this needs the admin role"), "{text}");
    // Nothing the refusals asked for happened.
    assert_eq!(transitions(&p, MAC).await, before, "a refusal changes nothing");
    let (_, imports) = call(&p, reqwest::Method::GET, "/api/v1/imports", VIEWER, Value::Null).await;
    assert_eq!(imports["imports"].as_array().map(Vec::len), Some(0), "{imports}");

    // The approver approves; the record names abe, not what the body says.
    let (status, m) = call(
        &p,
        reqwest::Method::POST,
        &approve,
        APPROVER,
        json!({"actor": "someone-else"}),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    state_reached(&p, MAC, "approved").await;
    let last = transitions(&p, MAC).await.last().cloned().unwrap();
    assert_eq!(last["actor"], "api:abe", "{last}");
    let (status, text) = import(ADMIN).await;
    assert!(status == 200 || status == 201, "{status} {text}");
}

/// Logs in with `token` (claiming to be mallory) and returns the session cookie and the
/// CSRF token of the machine's page, and its HTML.
async fn console_login(p: &Process, token: &str) -> (String, String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/login", p.url))
        .form(&[("token", token), ("name", "mallory")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = session_cookie(&resp);
    let html = console_get(&p.url, &format!("/machines/{MAC}"), &cookie).await;
    (cookie, csrf_token(&html), html)
}

async fn console_post(p: &Process, path: &str, cookie: &str, csrf: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client.post(format!("{}{path}", p.url)).header("cookie", cookie);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.form(&[("csrf", csrf)]).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Opens the machine's page through the trusted proxy as `user`: the session cookie and
/// the page's CSRF token.
async fn through_proxy(p: &Process, user: &str) -> (String, String) {
    let resp = reqwest::Client::new()
        .get(format!("{}/machines/{MAC}", p.url))
        .header("X-Forwarded-Email", user)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = session_cookie(&resp);
    (cookie, csrf_token(&resp.text().await.unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn in_the_console_names_come_from_the_token_or_the_proxy_and_roles_hold() {
    let dir = tempfile::tempdir().unwrap();
    let p = start_with_people(dir.path()).await;
    propose(&p, MAC).await;
    let before = transitions(&p, MAC).await;

    // A personal token names its holder: the name typed beside it is not taken.
    let (cookie, csrf, html) = console_login(&p, VIEWER).await;
    assert!(html.contains("vera") && !html.contains("mallory"), "{html}");
    assert!(
        !html.contains("id=\"approve\"") && !html.contains("id=\"reject\""),
        "a viewer is shown no review buttons: {html}"
    );
    let (status, text) = console_post(&p, &format!("/machines/{MAC}/reject"), &cookie, &csrf, &[]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("vera is a viewer"), "{text}");

    // Someone the proxy names but nobody listed is a viewer; a listed name has its role.
    let (cookie, csrf) = through_proxy(&p, "stranger@example.com").await;
    let header = [("X-Forwarded-Email", "stranger@example.com")];
    let (status, text) = console_post(&p, &format!("/machines/{MAC}/reject"), &cookie, &csrf, &header).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("stranger@example.com is a viewer"), "{text}");
    assert_eq!(transitions(&p, MAC).await, before, "refusals change nothing");

    let (cookie, csrf) = through_proxy(&p, "pat@example.com").await;
    let header = [("X-Forwarded-Email", "pat@example.com")];
    let (status, text) = console_post(&p, &format!("/machines/{MAC}/reject"), &cookie, &csrf, &header).await;
    assert_eq!(status, 303, "{text}");
    state_reached(&p, MAC, "rejected").await;
    let last = transitions(&p, MAC).await.last().cloned().unwrap();
    assert_eq!(last["actor"], "console:pat@example.com", "{last}");
}

/// The machine counts and Registrar's dealings with GitHub are not for whoever reaches the
/// port (on a hostNetwork pod, any booted machine): Prometheus reads `/metrics` with its
/// own token, which opens nothing else; people read it with theirs.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_a_token_and_prometheus_token_opens_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let p = start_with_people(dir.path()).await;
    let scrape = |token: Option<&'static str>| {
        let url = format!("{}/metrics", p.url);
        async move {
            let mut request = reqwest::Client::new().get(url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let resp = request.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, text) = scrape(None).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("metrics token"), "the refusal says what to send: {text}");
    assert!(!text.contains("registrar_machines"), "{text}");
    let (status, text) = scrape(Some("not-a-token-of-anyone-0123")).await;
    assert_eq!(status, 401, "{text}");

    let (status, text) = scrape(Some(METRICS)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("registrar_machines"), "{text}");
    let (status, text) = scrape(Some(VIEWER)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("registrar_auth_failures"), "{text}");

    // Prometheus' token reads no machine and reports none.
    let (status, body) = call(&p, reqwest::Method::GET, "/api/v1/machines", METRICS, Value::Null).await;
    assert_eq!(status, 401, "{body}");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/reports", p.url))
        .bearer_auth(METRICS)
        .json(&report_body(MAC, lshw("supermicro-ssg-6029p-x11dph-t.json")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, list) = call(
        &p,
        reqwest::Method::GET,
        "/api/v1/machines",
        OPERATOR_TOKEN,
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["machines"], json!([]), "refused requests store nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_github_approving_in_registrar_is_off_by_default_and_merging_there_approves() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let p = start_on_github(dir.path(), &gh, |_| {}).await;
    propose(&p, MAC).await;
    let before = transitions(&p, MAC).await;
    let (status, err) = call(
        &p,
        reqwest::Method::POST,
        &format!("/api/v1/machines/{MAC}/approve"),
        OPERATOR_TOKEN,
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    let message = err["message"].as_str().unwrap();
    let number = gh.pulls()[0].number;
    assert!(
        message.contains("approving in Registrar is off for GitHub") && message.contains(&format!("/pull/{number}")),
        "{message}"
    );
    assert!(!gh.pulls()[0].merged, "nothing merged");
    assert_eq!(transitions(&p, MAC).await, before, "nothing recorded");
    // The console sends the reviewer to the pull request instead of offering Approve.
    let (cookie, _) = console_session(&p.url, MAC).await;
    // minijinja escapes '/' in attributes; a browser reads it back as '/'.
    let html = console_get(&p.url, &format!("/machines/{MAC}"), &cookie)
        .await
        .replace("&#x2f;", "/");
    assert!(!html.contains("id=\"approve\""), "{html}");
    assert!(
        html.contains("id=\"approve-on-forge\"") && html.contains(&format!("/pull/{number}")),
        "{html}"
    );
    // The review happens on GitHub: a merge there approves.
    assert!(gh.merge(number, "octocat").await.status().is_success());
    state_reached(&p, MAC, "approved").await;
}

/// Follows one login through the fake provider as a browser would: Registrar's redirect to
/// the provider, the provider's back to the callback, and the callback's answer.
async fn sso_login(p: &Process) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let to_provider = client
        .get(format!("{}/login/oidc?next=/machines/{MAC}", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(to_provider.status(), 303, "{}", to_provider.text().await.unwrap());
    let authorize = to_provider.headers()["location"].to_str().unwrap().to_string();
    let back = client.get(&authorize).send().await.unwrap();
    assert!(back.status().is_redirection(), "the provider: {}", back.status());
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    assert!(
        callback.starts_with(&format!("{}/login/oidc/callback?", p.url)),
        "{callback}"
    );
    client.get(&callback).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn single_sign_on_names_the_person_and_their_role_holds() {
    use support::fake_oidc::{CLIENT_ID, CLIENT_SECRET, FakeOidc};
    let dir = tempfile::tempdir().unwrap();
    let idp = FakeOidc::start().await;
    let mut config = example("local.yaml");
    let url = support::binary::listen_on(&mut config);
    let secret = dir.path().join("oidc-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    set(
        &mut config,
        "ui.oidc",
        json!({
            "issuer_url": idp.url, "client_id": CLIENT_ID, "client_secret_file": secret.display().to_string(),
            "redirect_url": format!("{url}/login/oidc/callback"), "provider_name": "Example SSO"
        }),
    );
    set(
        &mut config,
        "auth.users",
        json!([{"name": "pat@example.com", "role": "approver"}]),
    );
    let mut p = Process::start(dir.path(), config, &token_env());
    p.wait_ready().await;
    propose(&p, MAC).await;
    let login_page = reqwest::get(format!("{url}/login"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login_page.contains("Log in with Example SSO"), "{login_page}");

    // Someone the provider names but nobody listed: a viewer, refused a review.
    idp.log_in_as("stranger@example.com");
    let landed = sso_login(&p).await;
    assert_eq!(landed.status(), 303, "{}", landed.text().await.unwrap());
    assert_eq!(landed.headers()["location"], format!("/machines/{MAC}"));
    let cookie = session_cookie(&landed);
    let html = console_get(&url, &format!("/machines/{MAC}"), &cookie).await;
    assert!(html.contains("stranger@example.com"), "{html}");
    let (status, text) = console_post(&p, &format!("/machines/{MAC}/reject"), &cookie, &csrf_token(&html), &[]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("stranger@example.com is a viewer"), "{text}");

    // A listed person has their role, and their name goes on the record.
    idp.log_in_as("pat@example.com");
    let landed = sso_login(&p).await;
    let cookie = session_cookie(&landed);
    let html = console_get(&url, &format!("/machines/{MAC}"), &cookie).await;
    let (status, text) = console_post(&p, &format!("/machines/{MAC}/reject"), &cookie, &csrf_token(&html), &[]).await;
    assert_eq!(status, 303, "{text}");
    state_reached(&p, MAC, "rejected").await;
    assert_eq!(
        transitions(&p, MAC).await.last().unwrap()["actor"],
        "console:pat@example.com"
    );

    // An ID token signed with a key the provider does not publish is refused, no session.
    idp.forge_signatures(true);
    let refused = sso_login(&p).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());
    assert!(refused.text().await.unwrap().contains("ID token is not valid"));
    idp.forge_signatures(false);

    // A callback for a login never started here (or replayed) is refused.
    let (status, text) = {
        let resp = reqwest::get(format!("{url}/login/oidc/callback?code=code-1&state=made-up"))
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("was not started here"), "{text}");
    assert!(p.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_trail_names_who_did_what_and_outlives_a_forgotten_machine() {
    let dir = tempfile::tempdir().unwrap();
    let p = start_with_people(dir.path()).await;
    propose(&p, MAC).await;
    let post = |path: String, token: &'static str, body: Value| {
        let p = &p;
        async move { call(p, reqwest::Method::POST, &path, token, body).await }
    };
    let (status, m) = post(
        format!("/api/v1/machines/{MAC}/reject"),
        APPROVER,
        json!({"reason": "not ours"}),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    // The shared operator token's holder says who they are: recorded as said, escaped on the page.
    let (status, m) = post(
        format!("/api/v1/machines/{MAC}/unsuppress"),
        OPERATOR_TOKEN,
        json!({"actor": "<b>night-shift</b>"}),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    state_reached(&p, MAC, "proposed").await;
    let (status, m) = post(format!("/api/v1/machines/{MAC}/reject"), APPROVER, json!({})).await;
    assert_eq!(status, 200, "{m}");
    console_forget(&p.url, MAC).await;
    let (status, _) = call(
        &p,
        reqwest::Method::GET,
        &format!("/api/v1/machines/{MAC}"),
        VIEWER,
        Value::Null,
    )
    .await;
    assert_eq!(status, 404, "forgotten: its timeline is gone");

    // The trail keeps every person's step, newest first; Registrar's own steps are not in it.
    let (status, trail) = call(&p, reqwest::Method::GET, "/api/v1/audit", VIEWER, Value::Null).await;
    assert_eq!(status, 200, "{trail}");
    let steps: Vec<(String, String)> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let actors: Vec<&str> = steps.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actors,
        ["console:alice", "api:abe", "api:<b>night-shift</b>", "api:abe"],
        "{steps:?}"
    );
    assert!(steps[0].1.starts_with("forgotten"), "{steps:?}");
    assert_eq!(steps[3].1, "not ours");
    let (_, abe) = call(
        &p,
        reqwest::Method::GET,
        "/api/v1/audit?actor=api:abe",
        VIEWER,
        Value::Null,
    )
    .await;
    assert_eq!(abe["entries"].as_array().map(Vec::len), Some(2), "{abe}");

    // The console shows it to a viewer, as text.
    let (cookie, _, _) = console_login(&p, VIEWER).await;
    let page = console_get(&p.url, "/audit", &cookie).await;
    assert!(page.contains("api:&lt;b&gt;night-shift&lt;&#x2f;b&gt;"), "{page}");
    assert!(!page.contains("<b>night-shift"), "{page}");
    assert!(page.contains("not ours"), "{page}");
}
