//! Secrets: tokens, the GitHub credentials and the git password, from the configuration,
//! a file, or generated once into the state directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

use super::Config;

impl Config {
    /// The report and operator tokens: configured, or generated once into the state
    /// directory (mode 0600) so the embedded default is never open. The metrics token and
    /// people's tokens only when configured.
    pub fn tokens(&self) -> anyhow::Result<Tokens> {
        Ok(Tokens {
            report: resolve_secret(
                &self.auth.report_token,
                &self.auth.report_token_file,
                &self.state_dir.join("report-token"),
            )?,
            operator: resolve_secret(
                &self.auth.operator_token,
                &self.auth.operator_token_file,
                &self.state_dir.join("operator-token"),
            )?,
            metrics: optional_secret(
                "auth.metrics_token",
                &self.auth.metrics_token,
                &self.auth.metrics_token_file,
            )?,
            snoop: self.snoop_token()?,
            people: self
                .auth
                .users
                .iter()
                .filter_map(|u| {
                    let file = u.token_file.as_ref()?;
                    Some(read_secret(file).map(|token| PersonToken {
                        name: u.name.clone(),
                        role: u.role,
                        token,
                    }))
                })
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// The token sightings are forwarded with (`registrar snoop`) and accepted by (the API).
    pub fn snoop_token(&self) -> anyhow::Result<Option<SecretString>> {
        optional_secret("auth.snoop_token", &self.auth.snoop_token, &self.auth.snoop_token_file)
    }

    pub fn github_token(&self) -> anyhow::Result<SecretString> {
        let g = &self.forge.github;
        match (&g.token, &g.token_file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(f)) => read_secret(f),
            (None, None) => bail!("no GitHub token configured"),
        }
    }

    pub fn github_webhook_secret(&self) -> anyhow::Result<SecretString> {
        let g = &self.forge.github;
        optional_secret("forge.github.webhook_secret", &g.webhook_secret, &g.webhook_secret_file)?
            .ok_or_else(|| anyhow::anyhow!("no GitHub webhook secret configured"))
    }

    /// The API token of the on-premises forge in use (Forgejo/Gitea or GitLab).
    pub fn forge_token(&self) -> anyhow::Result<SecretString> {
        let (token, file, forge) = match self.forge.kind.as_str() {
            "gitlab" => (&self.forge.gitlab.token, &self.forge.gitlab.token_file, "GitLab"),
            _ => (&self.forge.gitea.token, &self.forge.gitea.token_file, "Forgejo/Gitea"),
        };
        match (token, file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(f)) => read_secret(f),
            (None, None) => bail!("no {forge} token configured"),
        }
    }

    /// The webhook secret of the on-premises forge in use (Forgejo/Gitea or GitLab). At
    /// least 16 characters wherever it comes from: an empty one would let anyone in.
    pub fn forge_webhook_secret(&self) -> anyhow::Result<SecretString> {
        let (secret, file, key) = match self.forge.kind.as_str() {
            "gitlab" => (
                &self.forge.gitlab.webhook_secret,
                &self.forge.gitlab.webhook_secret_file,
                "forge.gitlab.webhook_secret",
            ),
            _ => (
                &self.forge.gitea.webhook_secret,
                &self.forge.gitea.webhook_secret_file,
                "forge.gitea.webhook_secret",
            ),
        };
        optional_secret(key, secret, file)?.ok_or_else(|| anyhow::anyhow!("{key} is not configured"))
    }

    pub fn github_previous_webhook_secret(&self) -> anyhow::Result<Option<SecretString>> {
        self.forge
            .github
            .webhook_previous_secret_file
            .as_ref()
            .map(|f| read_secret(f))
            .transpose()
    }

    /// The PostgreSQL store's URL, if one is configured.
    pub fn postgres_url(&self) -> anyhow::Result<Option<SecretString>> {
        match (&self.store.postgres_url, &self.store.postgres_url_file) {
            (Some(url), _) => Ok(Some(url.clone())),
            (None, Some(f)) => Ok(Some(read_secret(f)?)),
            (None, None) => Ok(None),
        }
    }

    pub fn git_password(&self) -> anyhow::Result<Option<SecretString>> {
        if let Some(p) = &self.gitops.password {
            return Ok(Some(p.clone()));
        }
        if self.forge.kind == "github" && self.gitops.username.is_none() {
            // Git over HTTPS with a GitHub token: user `x-access-token`, the token as password.
            // An App's installation token is fetched at start and refreshed.
            if self.forge.github.app_id.is_some() {
                return Ok(None);
            }
            return self.github_token().map(Some);
        }
        match &self.gitops.password_file {
            Some(f) => Ok(Some(read_secret(f)?)),
            // Forgejo, Gitea and GitLab take the API token as the password over HTTPS.
            None if matches!(self.forge.kind.as_str(), "gitea" | "gitlab") => self.forge_token().map(Some),
            None => Ok(None),
        }
    }
}

/// A secret given in the configuration (at least 16 characters) or in a file, if any.
fn optional_secret(
    key: &str,
    value: &Option<SecretString>,
    file: &Option<PathBuf>,
) -> anyhow::Result<Option<SecretString>> {
    match (value, file) {
        (Some(t), _) if t.expose_secret().len() < 16 => bail!("{key} must be at least 16 characters"),
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(f)) => Ok(Some(read_secret(f)?)),
        (None, None) => Ok(None),
    }
}

#[derive(Clone)]
pub struct Tokens {
    pub report: SecretString,
    pub operator: SecretString,
    /// Prometheus' token: reads `/metrics` only.
    pub metrics: Option<SecretString>,
    /// `registrar snoop`'s token: forwards DHCP sightings only.
    pub snoop: Option<SecretString>,
    /// The tokens of `auth.users` that have one.
    pub people: Vec<PersonToken>,
}

#[derive(Clone)]
pub struct PersonToken {
    pub name: String,
    pub role: super::Role,
    pub token: SecretString,
}

pub(crate) fn read_secret(path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading secret {}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        bail!("secret in {} is shorter than 16 characters", path.display());
    }
    Ok(SecretString::from(token.to_string()))
}

fn resolve_secret(
    value: &Option<SecretString>,
    file: &Option<PathBuf>,
    generated: &Path,
) -> anyhow::Result<SecretString> {
    if let Some(v) = value {
        if v.expose_secret().len() < 16 {
            bail!("tokens must be at least 16 characters");
        }
        return Ok(v.clone());
    }
    if let Some(f) = file {
        return read_secret(f);
    }
    if generated.exists() {
        return read_secret(generated);
    }
    if let Some(dir) = generated.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    write_private(generated, &token)?;
    tracing::info!(path = %generated.display(), "generated a token; read it from this file");
    Ok(SecretString::from(token))
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config {
            state_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let a = c.tokens().unwrap();
        let b = c.tokens().unwrap();
        assert_eq!(a.report.expose_secret(), b.report.expose_secret());
        assert_ne!(a.report.expose_secret(), a.operator.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("report-token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
