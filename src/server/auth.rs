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
pub enum Access {
    /// A discovery machine posting its report (operators may too).
    Reporter,
    /// A person: reads machines and, by role, reviews proposals or administers.
    Operator,
}

pub use crate::config::Role;

/// A person a token names: `name` is None for the shared operator token, whose holder
/// says who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub name: Option<String>,
    pub role: Role,
}

/// What a presented token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    Reporter,
    Person(Person),
}

/// A named user's bearer token on an API request: who acts, for the record.
#[derive(Clone, Debug)]
pub struct Caller(pub String);

pub struct TokenSet {
    /// None when only per-machine tokens may report (`auth.shared_report_token: false`).
    report: Option<[u8; 32]>,
    operator: [u8; 32],
    metrics: Option<[u8; 32]>,
    /// `registrar snoop`'s: forwards DHCP sightings, and nothing else.
    snoop: Option<[u8; 32]>,
    people: Vec<([u8; 32], String, Role)>,
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
    pub fn new(
        report: Option<&SecretString>,
        operator: &SecretString,
        metrics: Option<&SecretString>,
        snoop: Option<&SecretString>,
        people: &[crate::config::secrets::PersonToken],
    ) -> anyhow::Result<Self> {
        let set = TokenSet {
            report: report.map(|r| digest(r.expose_secret())),
            operator: digest(operator.expose_secret()),
            metrics: metrics.map(|m| digest(m.expose_secret())),
            snoop: snoop.map(|s| digest(s.expose_secret())),
            people: people
                .iter()
                .map(|p| (digest(p.token.expose_secret()), p.name.clone(), p.role))
                .collect(),
        };
        // One token, one holder: otherwise who acted would depend on the list's order.
        let mut seen: Vec<[u8; 32]> = set.report.iter().copied().chain([set.operator]).collect();
        if let Some(m) = set.metrics {
            if seen.contains(&m) {
                anyhow::bail!("auth.metrics_token is also the report or operator token; give Prometheus its own");
            }
            seen.push(m);
        }
        if let Some(s) = set.snoop {
            if seen.contains(&s) {
                anyhow::bail!("auth.snoop_token is also another token; give the snooper its own");
            }
            seen.push(s);
        }
        for (d, name, _) in &set.people {
            if seen.contains(d) {
                anyhow::bail!("auth.users: {name:?}'s token is also another user's or the report or operator token");
            }
            seen.push(*d);
        }
        Ok(set)
    }

    /// What a presented token grants, if anything. Every candidate is compared, so the time
    /// taken does not tell which one matched.
    pub fn grant(&self, presented: &str) -> Option<Grant> {
        let d = digest(presented);
        let mut found = None;
        for (candidate, name, role) in &self.people {
            if bool::from(d.ct_eq(candidate)) {
                found = Some(Grant::Person(Person {
                    name: Some(name.clone()),
                    role: *role,
                }));
            }
        }
        if bool::from(d.ct_eq(&self.operator)) {
            found = Some(Grant::Person(Person {
                name: None,
                role: Role::Admin,
            }));
        }
        if self.report.is_some_and(|r| bool::from(d.ct_eq(&r))) {
            found = found.or(Some(Grant::Reporter));
        }
        found
    }

    /// Whether `presented` is the snooper's token, which forwards DHCP sightings and
    /// nothing else.
    pub fn is_snoop(&self, presented: &str) -> bool {
        let d = digest(presented);
        self.snoop.is_some_and(|s| bool::from(d.ct_eq(&s)))
    }

    /// Whether `presented` is Prometheus' token, which reads `/metrics` and nothing else.
    pub fn is_metrics(&self, presented: &str) -> bool {
        let d = digest(presented);
        self.metrics.is_some_and(|m| bool::from(d.ct_eq(&m)))
    }
}

/// The role a request needs: reading is for everyone signed in; reviewing (approve, reject,
/// choose a workflow, re-render, lift a suppression) for approvers; the rest (imports,
/// forgetting machines) for admins. One table, so a new route cannot slip past it unnoticed:
/// anything not listed needs an admin.
pub fn needed_role(method: &axum::http::Method, path: &str) -> Role {
    use axum::http::Method;
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || path == "/logout" {
        return Role::Viewer;
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if path == "/machines/bulk"
        || matches!(
            last,
            "approve"
                | "reject"
                | "workflow"
                | "rerender"
                | "unsuppress"
                | "decommission"
                | "reinventory"
                | "reprovision"
        )
    {
        Role::Approver
    } else {
        Role::Admin
    }
}

/// The answer to someone whose role does not allow what they asked.
pub fn refusal(user: &str, role: Role, needed: Role) -> String {
    let article = if role == Role::Viewer { "a" } else { "an" };
    format!("{user} is {article} {role}; this needs the {needed} role (auth.users in Registrar's configuration)")
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn require(state: &AppState, mut req: Request, next: Next, needed: Access) -> Result<Response, ApiError> {
    let presented = bearer(&req).map(str::to_string);
    let mut grant = presented.as_deref().and_then(|t| state.tokens.grant(t));
    // A per-machine token (from a discovery Workflow) may report for its own MAC only.
    if grant.is_none()
        && needed == Access::Reporter
        && let Some(token) = presented
    {
        let store = state.proposer.store().clone();
        let hash = digest_hex(&token);
        if let Ok(Ok(Some(mac))) =
            tokio::task::spawn_blocking(move || store.report_token_mac(&hash, chrono::Utc::now())).await
        {
            req.extensions_mut().insert(MachineToken(mac));
            grant = Some(Grant::Reporter);
        }
    }
    match (grant, needed) {
        (Some(Grant::Person(person)), _) => {
            // A person may post a report too (an admin's own script), or read its answer.
            let wanted = needed_role(req.method(), req.uri().path());
            if person.role < wanted {
                state.metrics.auth_failures.inc();
                let who = person.name.as_deref().unwrap_or("this token's holder");
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    refusal(who, person.role, wanted),
                ));
            }
            if let Some(name) = person.name {
                req.extensions_mut().insert(Caller(name));
            }
            Ok(next.run(req).await)
        }
        (Some(Grant::Reporter), Access::Reporter) => Ok(next.run(req).await),
        (Some(Grant::Reporter), Access::Operator) => {
            state.metrics.auth_failures.inc();
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may post reports only; use an operator's token",
            ))
        }
        (None, _) => {
            state.metrics.auth_failures.inc();
            let which = if needed == Access::Reporter {
                "report"
            } else {
                "operator"
            };
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("missing or wrong token: send 'Authorization: Bearer <{which} token>'"),
            ))
        }
    }
}

pub async fn reporter(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    require(&state, req, next, Access::Reporter).await
}

/// Forwarded DHCP sightings come from `registrar snoop`, with its own token and no other.
pub async fn snooper(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    match bearer(&req) {
        Some(token) if state.tokens.is_snoop(token) => Ok(next.run(req).await),
        presented => {
            state.metrics.auth_failures.inc();
            let message = match presented {
                Some(_) => "this token may not forward DHCP sightings: registrar snoop sends auth.snoop_token",
                None => {
                    "missing token: send 'Authorization: Bearer <snoop token>' (auth.snoop_token_file, REGISTRAR_SNOOP_TOKEN)"
                }
            };
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message))
        }
    }
}

/// `/metrics` tells how many machines there are, in which states, and how Registrar fares
/// with GitHub: not for anyone on the provisioning network. Prometheus comes with the
/// metrics token; a person with any role may read it too.
pub async fn metrics(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    match bearer(&req) {
        Some(token) if state.tokens.is_metrics(token) => Ok(next.run(req).await),
        Some(_) => require(&state, req, next, Access::Operator).await,
        None => {
            state.metrics.auth_failures.inc();
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing token: send 'Authorization: Bearer <metrics token>' (auth.metrics_token_file, REGISTRAR_METRICS_TOKEN) or a person's token",
            ))
        }
    }
}

/// Operators come with the operator token, or from the console with a session (and then
/// a CSRF token on anything that changes state).
pub async fn operator(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    if bearer(&req).is_none() {
        return super::console::session::checked_session(&state, req, next).await;
    }
    require(&state, req, next, Access::Operator).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn each_route_needs_the_least_role_that_may_do_it_and_unknown_writes_need_an_admin() {
        for (method, path, role) in [
            (Method::GET, "/api/v1/machines", Role::Viewer),
            (Method::GET, "/machines/0c:c4:7a:00:00:01", Role::Viewer),
            (Method::POST, "/logout", Role::Viewer),
            (
                Method::POST,
                "/api/v1/machines/0c:c4:7a:00:00:01/approve",
                Role::Approver,
            ),
            (
                Method::POST,
                "/api/v1/proposals/0c:c4:7a:00:00:01/reject",
                Role::Approver,
            ),
            (Method::POST, "/machines/0c:c4:7a:00:00:01/workflow", Role::Approver),
            (Method::POST, "/machines/0c:c4:7a:00:00:01/rerender", Role::Approver),
            (Method::POST, "/machines/0c:c4:7a:00:00:01/unsuppress", Role::Approver),
            (Method::POST, "/machines/bulk", Role::Approver),
            (Method::POST, "/machines/0c:c4:7a:00:00:01/forget", Role::Admin),
            (Method::POST, "/api/v1/imports", Role::Admin),
            (Method::POST, "/import", Role::Admin),
            (Method::POST, "/api/v1/reports", Role::Admin),
            (Method::DELETE, "/api/v1/machines/0c:c4:7a:00:00:01", Role::Admin),
            (Method::POST, "/api/v1/something-new", Role::Admin),
        ] {
            assert_eq!(needed_role(&method, path), role, "{method} {path}");
        }
    }

    #[test]
    fn a_personal_token_names_its_holder_and_the_shared_one_is_an_unnamed_admin() {
        let person = |name: &str, role, token: &str| crate::config::secrets::PersonToken {
            name: name.into(),
            role,
            token: SecretString::from(token.to_string()),
        };
        let tokens = TokenSet::new(
            None,
            &SecretString::from("operator-token-0123456789".to_string()),
            None,
            None,
            &[person("vera", Role::Viewer, "vera-token-0123456789")],
        )
        .unwrap();
        assert_eq!(
            tokens.grant("vera-token-0123456789"),
            Some(Grant::Person(Person {
                name: Some("vera".into()),
                role: Role::Viewer
            }))
        );
        assert_eq!(
            tokens.grant("operator-token-0123456789"),
            Some(Grant::Person(Person {
                name: None,
                role: Role::Admin
            }))
        );
        assert_eq!(tokens.grant("nobody-0123456789"), None);
        let clash = TokenSet::new(
            None,
            &SecretString::from("operator-token-0123456789".to_string()),
            None,
            None,
            &[person("eve", Role::Viewer, "operator-token-0123456789")],
        );
        assert!(clash.is_err(), "one token, one holder");
    }
}
