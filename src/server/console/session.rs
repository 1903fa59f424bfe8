//! Console sessions: who is looking, and proof that a form came from a page we served.
//!
//! A session starts with the operator token typed into the login form, or with a trusted
//! reverse proxy's user header (oauth2-proxy's `X-Forwarded-Email`), or, with `ui.auth`
//! off, by itself. The cookie holds a random id; the server keeps only its SHA-256, so a
//! leaked memory dump or log names no live session. Sessions live in memory: a restart
//! asks everyone to log in again, which is cheaper than a session table to keep safe.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::server::AppState;
use crate::server::auth::{Role, needed_role, refusal};
use crate::server::error::ApiError;

pub const COOKIE: &str = "registrar_session";
/// Most sessions kept at once; the oldest go first. Bounds memory under a login storm.
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    expires: Instant,
}

/// The acting user of a request that came with a session.
#[derive(Clone, Debug)]
pub struct Operator {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

impl From<Session> for Operator {
    fn from(s: Session) -> Self {
        Operator {
            user: s.user,
            role: s.role,
            csrf: s.csrf,
        }
    }
}

pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
    pub auth: bool,
    pub secure_cookie: bool,
    proxy_header: Option<header::HeaderName>,
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Roles of the people a proxy may name (by lower-case name), and everyone else's.
    proxy_roles: HashMap<String, Role>,
    proxy_role: Role,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash(id: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(config: &crate::config::UiConfig, auth: &crate::config::AuthConfig) -> anyhow::Result<Self> {
        let proxy_header = config
            .proxy_header
            .as_deref()
            .map(|h| {
                header::HeaderName::from_bytes(h.as_bytes()).map_err(|e| anyhow::anyhow!("ui.proxy_header {h:?}: {e}"))
            })
            .transpose()?;
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .map(|p| trusted_net(p).ok_or_else(|| anyhow::anyhow!("ui.trusted_proxies {p:?}: not an address or CIDR")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if proxy_header.is_some() && trusted_proxies.is_empty() {
            anyhow::bail!("ui.proxy_header needs ui.trusted_proxies: the header is honoured only from those addresses");
        }
        Ok(Sessions {
            by_hash: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(config.session_hours.max(1) * 3600),
            auth: config.auth,
            secure_cookie: config.secure_cookie,
            proxy_header,
            trusted_proxies,
            proxy_roles: auth
                .users
                .iter()
                .map(|u| (u.name.trim().to_lowercase(), u.role))
                .collect(),
            proxy_role: auth.proxy_role,
        })
    }

    /// Starts a session for `user`; returns the cookie id (shown to the browser only).
    pub fn start(&self, user: &str, role: Role) -> (String, Session) {
        let id = random_token();
        let session = Session {
            user: user.chars().filter(|c| !c.is_control()).take(128).collect(),
            role,
            csrf: random_token(),
            expires: Instant::now() + self.ttl,
        };
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(hash(&id), session.clone());
        (id, session)
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&hash(id)).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn end(&self, id: &str) {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner()).remove(&hash(id));
    }

    pub fn cookie(&self, id: &str) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.ttl.as_secs()
        ))
        .expect("hex and ascii")
    }

    pub fn clear_cookie(&self) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
        ))
        .expect("ascii")
    }

    /// The user a trusted reverse proxy names, if this request came through one, and their
    /// role: the one `auth.users` gives that name, or `auth.proxy_role`.
    fn proxy_user(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<(String, Role)> {
        let name = self.proxy_header.as_ref()?;
        let peer = peer?;
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        if !self.trusted_proxies.iter().any(|n| n.contains(&peer)) {
            return None;
        }
        let user = headers.get(name)?.to_str().ok()?.trim();
        if user.is_empty() {
            return None;
        }
        Some((user.to_string(), self.role_of(user)))
    }

    /// The role of someone an identity provider names (a trusted proxy, OIDC): the one
    /// `auth.users` gives that name, else `auth.proxy_role`.
    pub fn role_of(&self, user: &str) -> Role {
        self.proxy_roles
            .get(&user.to_lowercase())
            .copied()
            .unwrap_or(self.proxy_role)
    }
}

/// An address or a CIDR range, v4 or v6, as `ui.trusted_proxies` lists them (a bare
/// address is its own /32 or /128).
fn trusted_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

pub fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty()).then(|| v.to_string())
        })
}

fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// Whether the request names this machine as its host: without a login, a page on another
/// site that rebinds its name to 127.0.0.1 must still not reach the console.
fn addressed_to_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// The session a request carries, starting one where the configuration allows that
/// without a login (pages only: the API always wants a token or a real session). Returns a
/// cookie to set when a session was started.
pub fn resolve(state: &AppState, req: &Request, pages: bool) -> (Option<Operator>, Option<HeaderValue>) {
    let sessions = &state.console.sessions;
    let id = cookie_id(req.headers());
    let existing = id.as_deref().and_then(|id| sessions.get(id));
    if let Some((proxy_user, role)) = sessions.proxy_user(req.headers(), peer(req)) {
        // The proxy is the authority: a session for someone else is replaced.
        if let Some(s) = existing.filter(|s| s.user == proxy_user && s.role == role) {
            return (Some(s.into()), None);
        }
        let (id, s) = sessions.start(&proxy_user, role);
        return (Some(s.into()), Some(sessions.cookie(&id)));
    }
    if let Some(s) = existing {
        return (Some(s.into()), None);
    }
    if !sessions.auth && pages && addressed_to_loopback(req.headers()) {
        let (id, s) = sessions.start("local", Role::Admin);
        return (Some(s.into()), Some(sessions.cookie(&id)));
    }
    (None, None)
}

fn csrf_matches(expected: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes())))
}

/// The CSRF token a state-changing request presents: the `X-CSRF-Token` header, or the
/// `csrf` field of a form (the query string for uploads, whose body the handler streams).
async fn presented_csrf(req: Request) -> (Option<String>, Request) {
    if let Some(h) = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        let h = h.to_string();
        return (Some(h), req);
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if content_type.starts_with("multipart/form-data") {
        // An upload's body is streamed by its handler, so its form carries the token in the
        // action's query string; nothing else may.
        let from_query = req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned())
        });
        return (from_query, req);
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return (None, req);
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return (None, Request::from_parts(parts, axum::body::Body::empty()));
    };
    let field = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    (field, Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Guards console pages: no session → the login page; a state-changing request without
/// the session's CSRF token → 403.
pub async fn page_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (operator, set_cookie) = resolve(&state, &req, true);
    let Some(operator) = operator else {
        let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let next_param: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
        return Redirect::to(&format!("/login?next={next_param}")).into_response();
    };
    guarded(req, next, operator, set_cookie).await
}

/// Guards the API for browser sessions: no bearer token and no session → 401; a session
/// without the CSRF token on a state-changing request → 403. Bearer tokens are checked by
/// the API's own middleware.
pub async fn checked_session(state: &AppState, req: Request, next: Next) -> Result<Response, ApiError> {
    let (operator, set_cookie) = resolve(state, &req, false);
    let Some(operator) = operator else {
        state.metrics.auth_failures.inc();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong token: send 'Authorization: Bearer <operator token>', or log in to the console",
        ));
    };
    Ok(guarded(req, next, operator, set_cookie).await)
}

async fn guarded(req: Request, next: Next, operator: Operator, set_cookie: Option<HeaderValue>) -> Response {
    let mut req = req;
    let needed = needed_role(req.method(), req.uri().path());
    if operator.role < needed {
        tracing::info!(user = operator.user, role = %operator.role, path = req.uri().path(), "refused: role");
        let why = refusal(&operator.user, operator.role, needed);
        return (StatusCode::FORBIDDEN, format!("403 Forbidden: {why}.\n")).into_response();
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        let (presented, r) = presented_csrf(req).await;
        req = r;
        if !csrf_matches(&operator.csrf, presented.as_deref()) {
            return (StatusCode::FORBIDDEN, "403 Forbidden: this form is stale or did not come from Registrar's console (CSRF token missing or wrong). Reload the page and try again.\n")
                .into_response();
        }
    }
    req.extensions_mut().insert(operator);
    let mut response = next.run(req).await;
    if let Some(c) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}
