//! The console in a real headless Chromium, driven over WebDriver the way an operator
//! clicks through it. Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); where either is missing the test says so and does nothing else.
//!
//! Screenshots land in `target/screenshots/`; `docs/screenshots/` holds copies of two.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::{OPERATOR_TOKEN, Registrar, lshw, report_body};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver() -> Option<Driver> {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(tool).exists() {
            // .ci/run installs them and sets REGISTRAR_CI: there a missing browser is a failure.
            assert!(std::env::var_os("REGISTRAR_CI").is_none(), "{tool} is missing in CI");
            eprintln!("SKIPPED: {tool} is missing (apt-get install chromium chromium-driver; .ci/run does)");
            return None;
        }
    }
    let port = free_port();
    let mut child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(Driver {
                child,
                port,
                _profile: tempfile::tempdir().unwrap(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("chromedriver did not listen on {port}");
}

async fn browser(driver: &Driver) -> Client {
    // The flags keep Chromium off the network (this machine has none) and out of a sandbox
    // that needs privileges CI's container lacks.
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1500,1000",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }
    });
    let caps = match caps {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

fn screenshots() -> PathBuf {
    let dir = support::manifest_dir().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(name), png).unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Clicks the link reading `text` in the live machines table. The table re-renders rows as
/// machines change, so a link found a moment ago may be gone by the click ("stale"): find
/// it again.
async fn click_link(c: &Client, text: &str) {
    let mut last = String::new();
    for _ in 0..50 {
        match c.find(Locator::LinkText(text)).await {
            Ok(link) => match link.click().await {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale element") => last = e.to_string(),
                Err(e) => panic!("clicking {text}: {e}"),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not click the link {text} within 5 s: {last}");
}

/// Waits until `css` matches, polling the live page (no reloads).
async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    for _ in 0..150 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let html = c.source().await.unwrap_or_default();
    panic!(
        "{css} did not appear within 15 s; page:\n{}",
        &html[..html.len().min(3000)]
    );
}

async fn login(c: &Client, r: &Registrar) {
    c.goto(&format!("{}/", r.url)).await.unwrap();
    assert!(
        c.current_url().await.unwrap().path().starts_with("/login"),
        "the console asks for a login first"
    );
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(OPERATOR_TOKEN)
        .await
        .unwrap();
    c.find(Locator::Id("login")).await.unwrap().click().await.unwrap();
    wait_for(c, "table.machines").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reviews_a_machine_and_imports_expected_ones_in_a_real_browser() {
    let Some(driver) = start_driver().await else { return };
    let r = Registrar::start().await;
    let c = browser(&driver).await;
    login(&c, &r).await;
    assert_eq!(text(&c, "#user").await, "operator");

    // A machine reports while the list is open: it appears without a reload.
    c.execute("window.__noReload = true;", vec![]).await.unwrap();
    let mac = "3c:ec:ef:4c:4f:54";
    assert!(
        r.report(&report_body(mac, lshw("supermicro-ssg-6029p-x11dph-t.json")))
            .await
            .status()
            .is_success()
    );
    wait_for(&c, &format!("tr[data-mac=\"{mac}\"] .st-proposed")).await;
    assert_eq!(
        c.execute("return window.__noReload === true;", vec![]).await.unwrap(),
        json!(true),
        "the row came in without a reload"
    );
    screenshot(&c, "machines.png").await;

    // Open it: facts and manifest.
    click_link(&c, mac).await;
    wait_for(&c, "#manifest").await;
    assert_eq!(text(&c, "#vendor").await, "Supermicro");
    let manifest = text(&c, "#manifest").await;
    assert!(
        manifest.contains("kind: Hardware") && manifest.contains(mac),
        "{manifest}"
    );
    assert_eq!(text(&c, "#machine-state").await, "proposed");
    screenshot(&c, "machine.png").await;

    // Approve: the state says so and the manifest is on the base branch.
    c.find(Locator::Id("approve")).await.unwrap().click().await.unwrap();
    // While the form posts and the page reloads, the element may be briefly absent.
    for _ in 0..50 {
        if let Ok(e) = c.find(Locator::Css("#machine-state")).await
            && e.text().await.is_ok_and(|t| t == "approved")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(text(&c, "#machine-state").await, "approved");
    let path = r.machine(mac).await.unwrap()["proposal"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        r.remote.read("main", &path).unwrap().contains(mac),
        "the manifest is on main"
    );
    assert!(r.remote.message("main").contains("Approved-by: console:operator"));

    // Import three machines, one of them bad: the preview names the bad row.
    c.goto(&format!("{}/import", r.url)).await.unwrap();
    let csv = "mac,hostname,ip,location\naa:bb:cc:dd:ee:01,web-01,10.1.0.11,Rack 4\nnot-a-mac,web-02,10.1.0.12,Rack 4\naa:bb:cc:dd:ee:03,web-03,10.1.0.13,Rack 4\n";
    c.find(Locator::Id("csv")).await.unwrap().send_keys(csv).await.unwrap();
    c.find(Locator::Id("preview-import"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let bad = wait_for(&c, "#preview tr.bad").await;
    let bad_text = bad.text().await.unwrap();
    assert!(
        bad_text.contains("line 3") && bad_text.contains("not-a-mac"),
        "{bad_text}"
    );
    assert_eq!(c.find_all(Locator::Css("#preview tr.good")).await.unwrap().len(), 2);
    assert_eq!(r.machine_count().await, 1, "the preview stored nothing");
    screenshot(&c, "import-preview.png").await;
    c.find(Locator::Id("confirm-import"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let batch = wait_for(&c, "#batch-1").await;
    assert!(
        batch.text().await.unwrap().contains("skipped: mac"),
        "the batch keeps the bad row's fate"
    );

    // They show as expected.
    c.goto(&format!("{}/?expected=true", r.url)).await.unwrap();
    let rows = c.find_all(Locator::Css("#rows tr[data-mac]")).await.unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(row.text().await.unwrap().contains("expected"));
    }

    // One of them reports: its proposal carries the imported hostname and IP, and says
    // it was expected.
    assert!(
        r.report(&report_body(
            "aa:bb:cc:dd:ee:01",
            lshw("supermicro-ssg-6029p-x11dph-t.json")
        ))
        .await
        .status()
        .is_success()
    );
    wait_for(&c, "tr[data-mac=\"aa:bb:cc:dd:ee:01\"] .st-proposed").await;
    click_link(&c, "aa:bb:cc:dd:ee:01").await;
    wait_for(&c, "#manifest").await;
    let manifest = text(&c, "#manifest").await;
    assert!(
        manifest.contains("hostname: \"web-01\"") && manifest.contains("address: \"10.1.0.11\""),
        "{manifest}"
    );
    assert!(text(&c, "#expected").await.starts_with("expected — "));
    let m = r.machine("aa:bb:cc:dd:ee:01").await.unwrap();
    let summary = m["proposal"]["summary"].as_str().unwrap().replace('\\', "");
    assert!(
        summary.contains("Expected — ") && summary.contains("row 2"),
        "{summary}"
    );
    assert!(
        summary.contains("hostname web-01") && summary.contains("IP 10.1.0.11"),
        "{summary}"
    );

    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_product_name_is_shown_as_text_in_a_real_browser() {
    let Some(driver) = start_driver().await else { return };
    let r = Registrar::start().await;
    let c = browser(&driver).await;
    login(&c, &r).await;
    let evil = "<img src=x onerror=alert(1)>";
    let mac = "aa:bb:cc:dd:ee:66";
    let specs = json!({"class": "system", "vendor": "Evil Corp", "product": evil, "serial": "EVIL-1", "children": []});
    assert!(r.report(&report_body(mac, specs)).await.status().is_success());
    wait_for(&c, &format!("tr[data-mac=\"{mac}\"] .st-proposed")).await;

    for path in ["/".to_string(), format!("/machines/{mac}")] {
        c.goto(&format!("{}{path}", r.url)).await.unwrap();
        wait_for(&c, "main").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            c.find_all(Locator::Css("main img")).await.unwrap().is_empty(),
            "{path}: no element from a fact"
        );
        assert!(c.get_alert_text().await.is_err(), "{path}: no dialog");
        let body = text(&c, "main").await;
        assert!(body.contains(evil), "{path}: the text is visible");
    }
    assert_eq!(text(&c, "#product").await, evil);
    c.close().await.unwrap();
}
