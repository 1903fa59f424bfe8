//! The login page, signing in and signing out.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

use super::{PageResult, page};
use crate::server::AppState;
use crate::server::auth::Grant;
use crate::server::console::session::cookie_id;

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path on this server: a crafted `next` must not send anyone elsewhere.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

pub async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> PageResult {
    login_form(&state, &local_path(q.next.as_deref()), None)
}

fn login_form(state: &AppState, next: &str, error: Option<&str>) -> PageResult {
    let sso = state.console.oidc.as_ref().map(|o| o.provider_name());
    let sso_href = format!(
        "/login/oidc?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish()
    );
    page(
        state,
        "login.html",
        context! { title => "Log in", next, error, sso, sso_href },
    )
}

/// Sends the browser to the OpenID provider.
pub async fn oidc_begin(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> PageResult {
    let Some(oidc) = state.console.oidc.as_ref() else {
        return Ok((StatusCode::NOT_FOUND, "no single sign-on is configured (ui.oidc)").into_response());
    };
    match oidc.begin(local_path(q.next.as_deref())).await {
        Ok(url) => Ok(Redirect::to(&url).into_response()),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "single sign-on could not start");
            let mut r = login_form(&state, "/", Some(&format!("Single sign-on could not start: {e:#}")))?;
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(r)
        }
    }
}

#[derive(Deserialize)]
pub struct OidcCallback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The provider sent the browser back: check everything, then start a session for the
/// person the ID token names, with the role `auth.users` gives them.
pub async fn oidc_callback(State(state): State<AppState>, Query(q): Query<OidcCallback>) -> PageResult {
    let Some(oidc) = state.console.oidc.as_ref() else {
        return Ok((StatusCode::NOT_FOUND, "no single sign-on is configured (ui.oidc)").into_response());
    };
    let finished = match (q.code.as_deref(), q.state.as_deref(), q.error.as_deref()) {
        (Some(code), Some(login), None) => oidc.finish(code, login).await,
        (_, _, Some(error)) => Err(anyhow::anyhow!(
            "the provider said {:?}",
            error.chars().take(100).collect::<String>()
        )),
        _ => Err(anyhow::anyhow!("the provider sent no code")),
    };
    let (user, next) = match finished {
        Ok(found) => found,
        Err(e) => {
            state.metrics.auth_failures.inc();
            tracing::warn!(error = %format!("{e:#}"), "single sign-on refused");
            let mut r = login_form(&state, "/", Some(&format!("Single sign-on failed: {e:#}")))?;
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            return Ok(r);
        }
    };
    let role = state.console.sessions.role_of(&user);
    let (id, _) = state.console.sessions.start(&user, role);
    tracing::info!(user, role = %role, "console login (single sign-on)");
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, state.console.sessions.cookie(&id));
    Ok(r)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    name: Option<String>,
    next: Option<String>,
}

pub async fn login(State(state): State<AppState>, axum::Form(form): axum::Form<LoginForm>) -> PageResult {
    let Some(Grant::Person(person)) = state.tokens.grant(form.token.trim()) else {
        state.metrics.auth_failures.inc();
        let mut r = login_form(
            &state,
            &local_path(form.next.as_deref()),
            Some("That is not an operator's token."),
        )?;
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(r);
    };
    // A personal token names its holder; the shared operator token's holder says who they are.
    let user = match person.name {
        Some(name) => name,
        None => {
            let name: String = form
                .name
                .unwrap_or_default()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
                .take(64)
                .collect();
            if name.is_empty() { "operator".to_string() } else { name }
        }
    };
    let (id, _) = state.console.sessions.start(&user, person.role);
    tracing::info!(user, role = %person.role, "console login");
    let mut r = Redirect::to(&local_path(form.next.as_deref())).into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, state.console.sessions.cookie(&id));
    Ok(r)
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_id(&headers) {
        state.console.sessions.end(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, state.console.sessions.clear_cookie());
    r
}
