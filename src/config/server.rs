//! The HTTP server, its bearer tokens, and the web console's login.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (a big server's `lshw -json` is ~300 KiB).
    pub max_body_bytes: usize,
    /// After SIGTERM, in-flight requests and the current proposal get this long to finish;
    /// then the process exits anyway (everything is persisted before it is acted on, so the
    /// next start resumes it). Keep it below the pod's terminationGracePeriodSeconds.
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".parse().expect("valid"),
            max_body_bytes: 4 << 20,
            shutdown_grace_seconds: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether one shared report token is accepted beside the per-machine tokens the
    /// discovery Workflows carry. Weaker: whoever holds it reports for any MAC. Needed for
    /// discovery scripts of one's own (no cluster discovery).
    pub shared_report_token: bool,
    /// Bearer token discovery machines send with reports. Prefer `report_token_file`.
    pub report_token: Option<SecretString>,
    pub report_token_file: Option<PathBuf>,
    /// The shared operator token (API, CLI and console login): an admin whose name is
    /// whatever the caller says. Break-glass and single-operator setups; teams list `users`.
    pub operator_token: Option<SecretString>,
    pub operator_token_file: Option<PathBuf>,
    /// The token Prometheus sends to read `/metrics`, and nothing else. People's tokens
    /// read `/metrics` too; without any token it answers 401.
    pub metrics_token: Option<SecretString>,
    pub metrics_token_file: Option<PathBuf>,
    /// The token `registrar snoop` forwards DHCP sightings with, and nothing else: the
    /// snooper runs on the node's network, the API behind a Service. Without it, the API
    /// takes no forwarded sightings.
    pub snoop_token: Option<SecretString>,
    pub snoop_token_file: Option<PathBuf>,
    /// Named people and their roles. A user with a `token_file` logs in (console) or calls
    /// the API with that token, under that name; a user without one is known by the name a
    /// trusted proxy sends in `ui.proxy_header`.
    pub users: Vec<UserConfig>,
    /// The role of someone a trusted proxy names who is not in `users`.
    pub proxy_role: Role,
}

/// What a person may do, each role including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads machines, proposals, imports and status.
    Viewer,
    /// Also approves, rejects, chooses a workflow, re-renders, lifts a suppression.
    Approver,
    /// Also imports and forgets machines.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub role: Role,
    /// A file holding this person's token (at least 16 characters).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            shared_report_token: true,
            report_token: None,
            report_token_file: None,
            operator_token: None,
            operator_token_file: None,
            metrics_token: None,
            metrics_token_file: None,
            snoop_token: None,
            snoop_token_file: None,
            users: vec![],
            proxy_role: Role::Viewer,
        }
    }
}

/// The web console at `/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Reading and acting need a login: the operator token in the login form, or a trusted
    /// reverse proxy's header. Off only for a console bound to loopback on a workstation.
    pub auth: bool,
    /// A header naming the user, set by a reverse proxy such as oauth2-proxy
    /// (`X-Forwarded-Email`); honoured only from `trusted_proxies`.
    pub proxy_header: Option<String>,
    /// Addresses or CIDRs of the reverse proxies allowed to set `proxy_header`.
    pub trusted_proxies: Vec<String>,
    /// A session lasts this long after login.
    pub session_hours: u64,
    /// Mark the session cookie `Secure` (set when the console is served over TLS, directly
    /// or behind a TLS-terminating ingress).
    pub secure_cookie: bool,
    /// Console login through an OpenID Connect provider (Keycloak, Dex, Entra ID, Google…).
    pub oidc: Option<OidcConfig>,
}

/// A login through an OpenID Connect provider: authorization code flow with PKCE, the ID
/// token's signature, issuer, audience, expiry and nonce checked. The person is named by
/// `user_claim`; their role is the one `auth.users` gives that name, else `auth.proxy_role`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL; its `/.well-known/openid-configuration` is read.
    pub issuer_url: String,
    pub client_id: String,
    /// The client secret, if the provider gave one (a confidential client).
    pub client_secret_file: Option<PathBuf>,
    /// This console's callback as the provider knows it: `https://<console>/login/oidc/callback`.
    pub redirect_url: String,
    /// Which claim names the person: `email` (default), `preferred_username` or `sub`.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Shown on the login page's button.
    #[serde(default = "default_provider_name")]
    pub provider_name: String,
}

fn default_user_claim() -> String {
    "email".into()
}

fn default_provider_name() -> String {
    "single sign-on".into()
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            auth: true,
            proxy_header: None,
            trusted_proxies: vec![],
            session_hours: 12,
            secure_cookie: false,
            oidc: None,
        }
    }
}
