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
    let Some(Grant::Person(person)) = state.tokens.grant(form.token.trim()) else {
        state.metrics.auth_failures.inc();
        let mut r = page(
            &state,
            "login.html",
            context! { title => "Log in", next => local_path(form.next.as_deref()), error => "That is not an operator's token." },
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
