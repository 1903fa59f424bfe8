//! Console login through an OpenID Connect provider: the authorization code flow with
//! PKCE. The provider's metadata and keys are read at each login (a key rotation needs no
//! restart); the ID token's signature, issuer, audience, expiry and nonce are checked by
//! the openidconnect crate. A login started here is remembered by its `state` for ten
//! minutes and can be finished once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use secrecy::ExposeSecret;

use crate::config::OidcConfig;

/// How long a started login may take, and how many may be under way at once (a bound on
/// memory whoever hits `/login/oidc`).
const LOGIN_TTL: Duration = Duration::from_secs(600);
const MAX_PENDING: usize = 1024;

struct Started {
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    next: String,
    at: Instant,
}

pub struct Oidc {
    config: OidcConfig,
    secret: Option<ClientSecret>,
    http: openidconnect::reqwest::Client,
    started: Mutex<HashMap<String, Started>>,
}

impl Oidc {
    pub fn new(config: &OidcConfig) -> anyhow::Result<Self> {
        IssuerUrl::new(config.issuer_url.clone()).context("ui.oidc.issuer_url is not a URL")?;
        RedirectUrl::new(config.redirect_url.clone()).context("ui.oidc.redirect_url is not a URL")?;
        if !matches!(config.user_claim.as_str(), "email" | "preferred_username" | "sub") {
            anyhow::bail!(
                "ui.oidc.user_claim must be email, preferred_username or sub, not {:?}",
                config.user_claim
            );
        }
        let secret = config
            .client_secret_file
            .as_ref()
            .map(|f| crate::config::secrets::read_secret(f).map(|s| ClientSecret::new(s.expose_secret().to_string())))
            .transpose()
            .context("ui.oidc.client_secret_file")?;
        let http = openidconnect::reqwest::Client::builder()
            // Following redirects would let a provider's answer send requests anywhere.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Oidc {
            config: config.clone(),
            secret,
            http,
            started: Mutex::new(HashMap::new()),
        })
    }

    pub fn provider_name(&self) -> &str {
        &self.config.provider_name
    }

    async fn metadata(&self) -> anyhow::Result<CoreProviderMetadata> {
        let issuer = IssuerUrl::new(self.config.issuer_url.clone())?;
        CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| anyhow!("the OpenID provider's metadata ({}): {e}", self.config.issuer_url))
    }

    /// Where to send the browser to log in; `next` is where it goes afterwards.
    pub async fn begin(&self, next: String) -> anyhow::Result<String> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone(),
        )
        .set_redirect_uri(RedirectUrl::new(self.config.redirect_url.clone())?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in ["email", "profile"] {
            request = request.add_scope(Scope::new(scope.into()));
        }
        let (url, state, nonce) = request.url();
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        started.retain(|_, s| s.at.elapsed() < LOGIN_TTL);
        if started.len() >= MAX_PENDING {
            anyhow::bail!("too many logins under way; try again in a few minutes");
        }
        started.insert(
            state.secret().clone(),
            Started {
                verifier,
                nonce,
                next,
                at: Instant::now(),
            },
        );
        Ok(url.to_string())
    }

    /// Finishes a login the provider sent back: the person's name (by `user_claim`) and
    /// where to go next. A state not started here, or used before, is refused.
    pub async fn finish(&self, code: &str, state: &str) -> anyhow::Result<(String, String)> {
        let started = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(state)
            .filter(|s| s.at.elapsed() < LOGIN_TTL)
            .ok_or_else(|| anyhow!("this login was not started here, has expired, or was used already"))?;
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone(),
        )
        .set_redirect_uri(RedirectUrl::new(self.config.redirect_url.clone())?);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_string()))?
            .set_pkce_verifier(started.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| anyhow!("the provider refused the code: {e}"))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| anyhow!("the provider sent no ID token"))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &started.nonce)
            .map_err(|e| anyhow!("the ID token is not valid: {e}"))?;
        let user = match self.config.user_claim.as_str() {
            "email" => claims.email().map(|e| e.to_string()),
            "preferred_username" => claims.preferred_username().map(|u| u.to_string()),
            _ => Some(claims.subject().to_string()),
        }
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| anyhow!("the ID token has no {} claim", self.config.user_claim))?;
        let user: String = user.chars().filter(|c| !c.is_control()).take(128).collect();
        Ok((user, started.next))
    }
}
