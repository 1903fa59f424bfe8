//! Console actions on the GitHub forge: what a reviewer does in Registrar's console lands on
//! the pull request (a merge, a review left standing, a label).

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn approving_in_the_console_merges_the_pull_request_and_names_the_operator_there() {
    let (gh, r) = start().await;
    let number = propose_on_github(&gh, &r, MAC).await;
    let (cookie, csrf) = console_session(&r.url, MAC).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/machines/{MAC}/approve", r.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    r.wait_for_state(MAC, "approved").await;
    assert!(gh.pulls()[0].merged, "merged through the API");
    // The comment follows the merge on its own (the click does not wait for it).
    let mut comments = vec![];
    for _ in 0..100 {
        comments = gh.comments(number);
        if comments
            .iter()
            .any(|c| c.contains("in Registrar's console by **alice**"))
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no comment naming alice: {comments:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merge_that_branch_protection_refuses_leaves_the_review_on_the_pull_request() {
    let (gh, r) = start().await;
    propose_on_github(&gh, &r, MAC).await;
    gh.state.lock().unwrap().protected = true;
    let (cookie, csrf) = console_session(&r.url, MAC).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/machines/{MAC}/approve", r.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    // minijinja escapes '/' in text and attributes; a browser reads it back as '/'.
    let html = resp.text().await.unwrap().replace("&#x2f;", "/");
    let url = r.machine(MAC).await.unwrap()["proposal"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        html.contains(&format!("href=\"{url}\"")) && html.contains("Open the pull request"),
        "{html}"
    );
    assert!(html.contains("approving review is required"), "{html}");
    let m = r.machine(MAC).await.unwrap();
    assert_eq!(m["machine"]["state"], "proposed");
    assert_eq!(m["proposal"]["state"], "open", "the intent was rolled back");
    assert!(!gh.pulls()[0].merged);
    let metrics = metrics_text(&r).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("registrar_forge_errors_total{kind=\"error\"} ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn choosing_a_workflow_in_the_console_sets_the_pull_requests_label() {
    let (gh, r) = start().await;
    let number = propose_on_github(&gh, &r, MAC).await;
    assert!(gh.pulls()[0].labels.contains(&"workflow/ubuntu-2404".to_string()));
    let (cookie, csrf) = console_session(&r.url, MAC).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/machines/{MAC}/workflow", r.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("workflow", "ubuntu-2204")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let labels = eventually("the label swapped", || {
        let p = gh.pulls().into_iter().find(|p| p.number == number).unwrap();
        p.labels
            .contains(&"workflow/ubuntu-2204".to_string())
            .then_some(p.labels)
    })
    .await;
    assert!(!labels.contains(&"workflow/ubuntu-2404".to_string()), "{labels:?}");
    let yaml = gh.repo().read(BRANCH, "hardware/d5s0r8000105.yaml").unwrap();
    assert!(
        yaml.contains("templateRef: \"ubuntu-2204\""),
        "re-rendered with the chosen workflow"
    );
}
