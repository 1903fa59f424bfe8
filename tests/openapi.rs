//! The API's OpenAPI description (issue 20), on the shipped binary: served at
//! /api/v1/openapi.json, the same as `registrar openapi` prints and as the copy in
//! docs/openapi.json (regenerate it with `registrar openapi > docs/openapi.json`); every
//! operation it lists is a route the binary serves, and the routes a script needs are in it.

mod support;

use std::process::Command;

use serde_json::Value;
use support::binary::{binary, start_on_github};
use support::fake_github::FakeGithub;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_description_matches_the_routes_the_binary_serves() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGithub::start().await;
    let mut p = start_on_github(dir.path(), &gh, |_| {}).await;
    let client = reqwest::Client::new();
    let served: Value = client
        .get(format!("{}/api/v1/openapi.json", p.url))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let out = Command::new(binary()).arg("openapi").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(served, printed);
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(manifest_dir().join("docs/openapi.json")).unwrap()).unwrap();
    assert!(
        committed == served,
        "docs/openapi.json is not what the binary serves: run `registrar openapi > docs/openapi.json`"
    );

    // OpenAPI 3, and every security scheme an operation names is declared.
    assert!(
        served["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        served["openapi"]
    );
    let schemes = served["components"]["securitySchemes"].as_object().unwrap();
    let paths = served["paths"].as_object().unwrap();
    for required in [
        "/api/v1/reports",
        "/api/v1/reports/{mac}",
        "/api/v1/sightings",
        "/api/v1/machines",
        "/api/v1/machines/{mac}",
        "/api/v1/machines/{mac}/approve",
        "/api/v1/machines/{mac}/reject",
        "/api/v1/imports",
        "/api/v1/openapi.json",
        "/webhooks/github",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(required), "{required} is not described");
    }
    // Each operation is served: without a token it is refused or answered, never "no such
    // route" — while a path nobody serves is.
    let mut asked = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            for needs in operation["security"].as_array().into_iter().flatten() {
                for name in needs.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path}: undeclared scheme {name}");
                }
            }
            let url = format!(
                "{}{}",
                p.url,
                path.replace("{mac}", "0c:c4:7a:00:00:01").replace("{id}", "1")
            );
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let status = client.request(method.clone(), &url).send().await.unwrap().status();
            assert!(status != 404 && status != 405, "{method} {path}: {status}");
            asked += 1;
        }
    }
    assert!(asked >= 24, "{asked} operations");
    let status = client
        .get(format!("{}/api/v1/no-such-thing", p.url))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "a path nobody serves");
    assert!(p.stop().success());
}
