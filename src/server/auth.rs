//! Bearer tokens, checked before a body is read. Tokens are compared as SHA-256 digests in
//! constant time, so neither their content nor their length leaks through timing.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// A discovery machine posting its report (operators may too).
    Reporter,
    /// An operator: reads machines and reviews proposals.
    Operator,
}

pub struct TokenSet {
    /// None when only per-machine tokens may report (`auth.shared_report_token: false`).
    report: Option<[u8; 32]>,
    operator: [u8; 32],
}

/// A per-machine token's MAC, set on requests that carried one.
#[derive(Clone, Copy, Debug)]
pub struct MachineToken(pub crate::domain::Mac);

pub fn digest_hex(s: &str) -> String {
    hex::encode(digest(s))
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl TokenSet {
    pub fn new(report: Option<&SecretString>, operator: &SecretString) -> Self {
        TokenSet {
            report: report.map(|r| digest(r.expose_secret())),
            operator: digest(operator.expose_secret()),
        }
    }

    /// The role a presented token grants, if any.
    pub fn role(&self, presented: &str) -> Option<Role> {
        let d = digest(presented);
        if bool::from(d.ct_eq(&self.operator)) {
            Some(Role::Operator)
        } else if self.report.is_some_and(|r| bool::from(d.ct_eq(&r))) {
            Some(Role::Reporter)
        } else {
            None
        }
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn require(state: &AppState, mut req: Request, next: Next, needed: Role) -> Result<Response, ApiError> {
    let presented = bearer(&req).map(str::to_string);
    let mut role = presented.as_deref().and_then(|t| state.tokens.role(t));
    // A per-machine token (from a discovery Workflow) may report for its own MAC only.
    if role.is_none()
        && needed == Role::Reporter
        && let Some(token) = presented
    {
        let store = state.proposer.store().clone();
        let hash = digest_hex(&token);
        if let Ok(Ok(Some(mac))) =
            tokio::task::spawn_blocking(move || store.report_token_mac(&hash, chrono::Utc::now())).await
        {
            req.extensions_mut().insert(MachineToken(mac));
            role = Some(Role::Reporter);
        }
    }
    match (role, needed) {
        (Some(Role::Operator), _) | (Some(Role::Reporter), Role::Reporter) => Ok(next.run(req).await),
        (Some(Role::Reporter), Role::Operator) => {
            state.metrics.auth_failures.inc();
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may post reports only; use the operator token",
            ))
        }
        (None, _) => {
            state.metrics.auth_failures.inc();
            let which = if needed == Role::Reporter { "report" } else { "operator" };
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("missing or wrong token: send 'Authorization: Bearer <{which} token>'"),
            ))
        }
    }
}

pub async fn reporter(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    require(&state, req, next, Role::Reporter).await
}

/// Operators come with the operator token, or from the console with a session (and then
/// a CSRF token on anything that changes state).
pub async fn operator(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    if bearer(&req).is_none() {
        return super::console::session::checked_session(&state, req, next).await;
    }
    require(&state, req, next, Role::Operator).await
}
