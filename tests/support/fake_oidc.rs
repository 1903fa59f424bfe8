//! A stateful fake OpenID Connect provider over real HTTP, as Keycloak or Dex answer:
//! discovery, a key set, an authorization endpoint that logs in whoever the test says is at
//! the keyboard, and a token endpoint that checks the code, the client and the PKCE
//! verifier before it signs an ID token (RS256, the test key). A test can make it sign with
//! a key the key set does not hold, as a forger would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

pub const CLIENT_ID: &str = "registrar-console";
pub const CLIENT_SECRET: &str = "oidc-client-secret-for-tests";

#[derive(Default)]
struct Provider {
    /// Who logs in at the next authorization.
    user: Option<String>,
    /// Sign ID tokens with a key the key set does not hold.
    forge_signature: bool,
    /// Issued codes: (client_id, redirect_uri, nonce, PKCE challenge, user).
    codes: HashMap<String, (String, String, String, String, String)>,
    issued: u64,
}

#[derive(Clone)]
pub struct FakeOidc {
    pub url: String,
    state: Arc<Mutex<Provider>>,
}

impl FakeOidc {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeOidc {
            url: format!("http://{}", listener.local_addr().unwrap()),
            state: Arc::default(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// The person who logs in at the provider next.
    pub fn log_in_as(&self, user: &str) {
        self.state.lock().unwrap().user = Some(user.to_string());
    }

    pub fn forge_signatures(&self, forge: bool) {
        self.state.lock().unwrap().forge_signature = forge;
    }
}

async fn discovery(State(p): State<FakeOidc>) -> Json<Value> {
    Json(json!({
        "issuer": p.url,
        "authorization_endpoint": format!("{}/authorize", p.url),
        "token_endpoint": format!("{}/token", p.url),
        "jwks_uri": format!("{}/jwks", p.url),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "code_challenge_methods_supported": ["S256"]
    }))
}

async fn jwks() -> Json<Value> {
    let path = super::manifest_dir().join("tests/fixtures/oidc-test-key.jwk.json");
    Json(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
}

async fn authorize(State(p): State<FakeOidc>, Query(q): Query<HashMap<String, String>>) -> Response {
    let field = |k: &str| q.get(k).cloned().unwrap_or_default();
    if field("response_type") != "code" || field("code_challenge_method") != "S256" {
        return (StatusCode::BAD_REQUEST, "code flow with S256 PKCE only").into_response();
    }
    let mut st = p.state.lock().unwrap();
    let Some(user) = st.user.clone() else {
        return (StatusCode::UNAUTHORIZED, "nobody is logged in at the provider").into_response();
    };
    st.issued += 1;
    let code = format!("code-{}", st.issued);
    st.codes.insert(
        code.clone(),
        (
            field("client_id"),
            field("redirect_uri"),
            field("nonce"),
            field("code_challenge"),
            user,
        ),
    );
    let redirect = format!("{}?code={code}&state={}", field("redirect_uri"), field("state"));
    Redirect::to(&redirect).into_response()
}

async fn token(
    State(p): State<FakeOidc>,
    headers: axum::http::HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    // The client authenticates with HTTP Basic (client_secret_basic), as openidconnect does.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {basic}"));
    if !authorized {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
    }
    let (forge, issued) = {
        let mut st = p.state.lock().unwrap();
        (st.forge_signature, st.codes.remove(&field("code")))
    };
    let Some((client_id, redirect_uri, nonce, challenge, user)) = issued else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    };
    let verified = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(field("code_verifier").as_bytes()));
    if client_id != CLIENT_ID || redirect_uri != field("redirect_uri") || verified != challenge {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": p.url, "sub": format!("sub-{user}"), "aud": CLIENT_ID, "iat": now, "exp": now + 300,
        "nonce": nonce, "email": user, "email_verified": true
    });
    let key = if forge {
        "oidc-forger-key.pem"
    } else {
        "github-app-test-key.pem"
    };
    let pem = std::fs::read(super::manifest_dir().join("tests/fixtures").join(key)).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("test-key".into());
    let id_token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    Json(
        json!({"access_token": "opaque-access-token", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}),
    )
    .into_response()
}
