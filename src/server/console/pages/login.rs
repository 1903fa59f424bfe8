//! The login page, signing in and signing out.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

use super::{PageResult, page};
use crate::server::AppState;
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
    page(
        &state,
        "login.html",
        context! { title => "Log in", next => local_path(q.next.as_deref()) },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    name: Option<String>,
    next: Option<String>,
}

pub async fn login(State(state): State<AppState>, axum::Form(form): axum::Form<LoginForm>) -> PageResult {
    if state.tokens.role(form.token.trim()) != Some(crate::server::auth::Role::Operator) {
        state.metrics.auth_failures.inc();
        let mut r = page(
            &state,
            "login.html",
            context! { title => "Log in", next => local_path(form.next.as_deref()), error => "That is not the operator token." },
        )?;
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(r);
    }
    let name: String = form
        .name
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
        .take(64)
        .collect();
    let user = if name.is_empty() { "operator".to_string() } else { name };
    let (id, _) = state.console.sessions.start(&user);
    tracing::info!(user, "console login");
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
