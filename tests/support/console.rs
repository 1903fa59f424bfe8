//! The console as a person uses it: logged in as alice, with the page's CSRF token.

use super::OPERATOR_TOKEN;

/// Logs in to the console as an operator named alice and opens `mac`'s page: the session
/// cookie and the page's CSRF token, for the forms a person would submit.
pub async fn console_session(url: &str, mac: &str) -> (String, String) {
    let (cookie, html) = console_page(url, mac).await;
    (cookie, csrf_token(&html))
}

/// The session cookie an answer sets, as a browser sends it back.
pub fn session_cookie(resp: &reqwest::Response) -> String {
    resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// The CSRF token of a console page's forms.
pub fn csrf_token(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF token on the page");
    html[at + 19..].split('"').next().unwrap().to_string()
}

/// Logs in to the console as alice and loads `mac`'s page: the session cookie and the HTML.
pub async fn console_page(url: &str, mac: &str) -> (String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{url}/login"))
        .form(&[("token", OPERATOR_TOKEN), ("name", "alice")])
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(&resp);
    let html = console_get(url, &format!("/machines/{mac}"), &cookie).await;
    (cookie, html)
}

/// A console page as the session `cookie` sees it.
pub async fn console_get(url: &str, path: &str, cookie: &str) -> String {
    reqwest::Client::new()
        .get(format!("{url}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The machine page's Forget button, as an operator presses it.
pub async fn console_forget(url: &str, mac: &str) {
    let (cookie, csrf) = console_session(url, mac).await;
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{url}/machines/{mac}/forget"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "forget: {}", resp.status());
}
