//! The shipped dashboards and alert rules query only metrics Registrar exports, with
//! label values it uses.

use super::*;

/// What a scrape of this registry can contain: each family's samples by type.
fn exposition_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => names.insert(format!("{family}_total")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{family}{suffix}"));
                }
                true
            }
            _ => names.insert(family.to_string()),
        };
    }
    names
}

fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|r| r.split(' ').next().unwrap().to_string())
        .collect()
}

/// Every PromQL expression in the dashboards and the PrometheusRule, by where it is.
fn shipped_promql() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rules in yaml_documents(&read("deploy/components/servicemonitor/prometheusrule.yaml")) {
        assert_eq!(rules["kind"], "PrometheusRule");
        for group in rules["spec"]["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                out.push((
                    format!("alert {}", rule["alert"].as_str().unwrap()),
                    rule["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    fn walk(v: &Value, file: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr" | "definition", Value::String(s)) => out.push((file.to_string(), s.clone())),
                        ("query", Value::String(s)) if s.contains("registrar_") => {
                            out.push((file.to_string(), s.clone()))
                        }
                        _ => walk(x, file, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, file, out)),
            _ => {}
        }
    }
    let mut dashboards = 0;
    for entry in std::fs::read_dir(manifest_dir().join("deploy/grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            dashboards += 1;
            let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            walk(&dash, &path.file_name().unwrap().to_string_lossy(), &mut out);
        }
    }
    assert!(dashboards > 0, "no dashboard in deploy/grafana");
    out
}

/// The registry with every labelled family given a series, so that each family shows.
fn full_registry() -> String {
    let m = registrar::metrics::Metrics::new();
    m.report("x");
    m.sync("x");
    m.webhook("x");
    m.dhcp_dropped("x");
    m.forge_error("x");
    m.pipeline_up("x").set(1);
    m.pipeline_restarts("x").inc();
    m.machines
        .get_or_create(&registrar::metrics::StateLabel { state: "x".into() })
        .set(0);
    let pool = registrar::metrics::PoolLabel { pool: "x".into() };
    m.pool_size.get_or_create(&pool).set(1);
    m.pool_used.get_or_create(&pool).set(0);
    m.pool_exhausted.get_or_create(&pool).inc();
    m.encode()
}

/// Dashboards and alerts name only metrics Registrar exports, with label values it uses;
/// the exposition is the live server's.
#[tokio::test(flavor = "multi_thread")]
async fn dashboards_and_alerts_use_exported_metrics() {
    // The live server: a report (reports, proposal syncs), a refused request, probes.
    // Scraped as the ServiceMonitor does: with the metrics token.
    const METRICS_TOKEN: &str = "prometheus-metrics-token-0123";
    let r = Registrar::start_with(|c| c.auth.metrics_token = Some(METRICS_TOKEN.to_string().into())).await;
    assert_eq!(
        r.report(&report_body(
            "ac:1f:6b:dc:19:c2",
            lshw("supermicro-ssg-6029p-x11dph-t.json")
        ))
        .await
        .status(),
        202
    );
    r.wait_for_state("ac:1f:6b:dc:19:c2", "proposed").await;
    let refused = r
        .client
        .get(format!("{}/api/v1/machines", r.url))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            r.client.get(format!("{}{path}", r.url)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let live = r
        .client
        .get(format!("{}/metrics", r.url))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let full = full_registry();
    let live_families = families(&live);
    assert!(
        live_families.is_subset(&families(&full)),
        "the server exports the registry of src/metrics.rs"
    );
    for family in [
        "registrar_reports",
        "registrar_proposal_syncs",
        "registrar_queue_length",
        "registrar_auth_failures",
        "registrar_machines",
    ] {
        assert!(
            live_families.contains(family),
            "{family} is not in the live exposition:\n{live}"
        );
    }
    assert!(
        live.contains("registrar_reports_total{result=\"accepted\"} 1"),
        "{live}"
    );

    let exported = exposition_names(&full);
    let metric = Regex::new(r"\bregistrar_[a-z0-9_]+").unwrap();
    let selector = Regex::new(r#"\b(registrar_[a-z0-9_]+)\{([^}]*)\}"#).unwrap();
    let matcher = Regex::new(r#"([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)""#).unwrap();
    let sources: String = walk_rs(&manifest_dir().join("src"))
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut problems = Vec::new();
    let mut referenced = BTreeSet::new();
    for (where_, expr) in shipped_promql() {
        for m in metric.find_iter(&expr) {
            referenced.insert(m.as_str().to_string());
            if !exported.contains(m.as_str()) {
                problems.push(format!("{where_}: {} is not exported", m.as_str()));
            }
        }
        // Label values a selector insists on must be values Registrar uses (a typo in one
        // makes an alert that can never fire).
        for s in selector.captures_iter(&expr) {
            for m in matcher.captures_iter(&s[2]) {
                let (label, op, value) = (&m[1], &m[2], &m[3]);
                if matches!(label, "job" | "instance") || op.starts_with('!') || value.contains('$') {
                    continue;
                }
                for v in value.split('|') {
                    if !Regex::new(&format!(r"\b{}\b", regex::escape(v)))
                        .unwrap()
                        .is_match(&sources)
                    {
                        problems.push(format!(
                            "{where_}: {}{{{label}{op}\"{value}\"}}: Registrar never uses {v:?}",
                            &s[1]
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboards and alerts out of step with src/metrics.rs:\n{}",
        problems.join("\n")
    );
    // And the dashboard shows every metric there is.
    let dashboard = read("deploy/grafana/registrar-dashboard.json");
    let unshown: Vec<_> = families(&full)
        .into_iter()
        .filter(|f| !dashboard.contains(f.as_str()))
        .collect();
    assert!(
        unshown.is_empty(),
        "deploy/grafana/registrar-dashboard.json shows no panel for {unshown:?}: add one"
    );
    assert!(referenced.len() > 10, "{referenced:?}");
}

/// `/metrics` takes a token: wherever a ServiceMonitor scrapes Registrar, it sends the token
/// from the same Secret key the Deployment gives Registrar as `REGISTRAR_METRICS_TOKEN`.
#[test]
fn every_servicemonitor_scrapes_with_the_token_registrar_is_given() {
    if kubectl_missing() {
        return;
    }
    let mut checked = 0;
    for (name, objects) in installs() {
        let monitors = find(objects, "ServiceMonitor");
        if monitors.is_empty() {
            continue;
        }
        let env = container(deployment(objects))["env"].as_array().unwrap();
        let given = env
            .iter()
            .find(|e| e["name"] == "REGISTRAR_METRICS_TOKEN")
            .unwrap_or_else(|| panic!("{name}: a ServiceMonitor, but Registrar has no metrics token"));
        let given = &given["valueFrom"]["secretKeyRef"];
        for monitor in monitors {
            for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
                let auth = &endpoint["authorization"];
                assert_eq!(auth["type"], "Bearer", "{name}: {endpoint}");
                assert_eq!(auth["credentials"]["name"], given["name"], "{name}: {endpoint}");
                assert_eq!(auth["credentials"]["key"], given["key"], "{name}: {endpoint}");
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no shipped installation has a ServiceMonitor");
}
