//! The REST API of an on-premises forge (Forgejo/Gitea, GitLab): one root, the token in one
//! header, and what counts as an error the same way for both.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::ForgeError;

pub(crate) struct RestApi {
    http: reqwest::Client,
    /// `https://git.example/api/v1/repos/<owner>/<repo>`, say.
    root: String,
    /// The header the token goes in, and its whole value.
    auth: (&'static str, SecretString),
}

impl RestApi {
    pub(crate) fn new(
        root: String,
        auth_header: &'static str,
        auth_value: SecretString,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(RestApi {
            // No redirects: reqwest would carry a token header it does not know to another host.
            http: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            root,
            auth: (auth_header, auth_value),
        })
    }

    /// One request below the root; the status and the JSON answer (Null when there is none).
    /// What no retry of the same request can change, and what says to wait — a server
    /// error, a redirect, a refused token, a rate limit — is an error; any other status is
    /// the caller's to read.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), ForgeError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.root))
            .header(self.auth.0, self.auth.1.expose_secret())
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ForgeError::Other(format!("{method} {path}: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let refused = [
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::TOO_MANY_REQUESTS,
        ];
        if status.is_server_error() || status.is_redirection() || refused.contains(&status) {
            return Err(ForgeError::Other(format!(
                "{method} {path}: {status}: {}",
                snippet(&text)
            )));
        }
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

/// The start of an answer, for an error message.
pub(crate) fn snippet(text: &str) -> String {
    text.chars().take(200).collect()
}
