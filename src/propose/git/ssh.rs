//! SSH remotes (`ssh://user@host[:port]/path`, `user@host:path`): a deploy key, and the
//! server's host key pinned by a known_hosts file. There is no trust on first use: a
//! server whose key is not in the file is refused, with the line to add.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use git2::{CertificateCheckStatus, Cred};

/// Whether `url` names an SSH remote: `ssh://…`, `git+ssh://…`, or scp-like `user@host:path`.
pub fn is_ssh(url: &str) -> bool {
    url.starts_with("ssh://") || url.starts_with("git+ssh://") || scp_like(url).is_some()
}

/// `user@host:path` (git's scp-like syntax): the host, if `url` is one.
fn scp_like(url: &str) -> Option<&str> {
    if url.contains("://") {
        return None;
    }
    let (before, _) = url.split_once(':')?;
    let host = before.rsplit_once('@').map_or(before, |(_, h)| h);
    // A path (`./x:y`, `/srv/x`) is no host; nor is a Windows drive letter.
    (!host.is_empty() && !before.contains('/') && host.len() > 1).then_some(host)
}

/// The name known_hosts lists the server under: `host`, or `[host]:port` off port 22.
pub fn known_hosts_name(url: &str) -> Option<String> {
    if let Some(host) = scp_like(url) {
        return Some(host.to_ascii_lowercase());
    }
    let rest = url.strip_prefix("ssh://").or_else(|| url.strip_prefix("git+ssh://"))?;
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let host = host.to_ascii_lowercase();
    Some(match port.filter(|p| *p != "22") {
        Some(port) => format!("[{host}]:{port}"),
        None => host,
    })
}

#[derive(Debug, Clone)]
pub struct SshSettings {
    key: PathBuf,
    /// `[host]:port` or `host`, as known_hosts names the remote.
    host: String,
    /// The host keys known_hosts pins for it: (type, key blob).
    pinned: Vec<(String, Vec<u8>)>,
    /// Why the last host key was refused: libgit2 reports only "unknown remote ssh
    /// hostkey", so the error names the reason from here.
    refused: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl SshSettings {
    /// The deploy key and the remote's pinned host keys; an error names what is missing.
    pub fn load(remote: &str, key: &Path, known_hosts: &Path) -> anyhow::Result<Self> {
        let host = known_hosts_name(remote).with_context(|| format!("no host in the SSH remote {remote:?}"))?;
        if !key.is_file() {
            bail!("gitops.ssh_key_file {} does not exist", key.display());
        }
        let text = std::fs::read_to_string(known_hosts)
            .with_context(|| format!("gitops.ssh_known_hosts_file {}", known_hosts.display()))?;
        let pinned: Vec<(String, Vec<u8>)> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let hosts = fields.next()?;
                let (kind, key) = (fields.next()?, fields.next()?);
                hosts
                    .split(',')
                    .any(|h| h.eq_ignore_ascii_case(&host))
                    .then(|| {
                        Some((
                            kind.to_string(),
                            base64::engine::general_purpose::STANDARD.decode(key).ok()?,
                        ))
                    })
                    .flatten()
            })
            .collect();
        if pinned.is_empty() {
            bail!(
                "{} pins no host key for {host} (hashed entries are not read): add the server's line, e.g. from `ssh-keyscan{} {}` checked against the server",
                known_hosts.display(),
                host.strip_prefix('[')
                    .and_then(|h| h.split_once("]:"))
                    .map(|(_, port)| format!(" -p {port}"))
                    .unwrap_or_default(),
                host.strip_prefix('[')
                    .and_then(|h| h.split_once(']'))
                    .map_or(host.as_str(), |(h, _)| h)
            );
        }
        Ok(SshSettings {
            key: key.to_path_buf(),
            host,
            pinned,
            refused: Default::default(),
        })
    }

    /// The deploy key, for the user the URL names (`git` if none).
    pub fn credentials(&self, username_from_url: Option<&str>) -> Result<Cred, git2::Error> {
        Cred::ssh_key(username_from_url.unwrap_or("git"), None, &self.key, None)
    }

    /// Accepts the server only if its host key is one known_hosts pins for it.
    pub fn check(&self, cert: &git2::cert::Cert<'_>) -> Result<CertificateCheckStatus, git2::Error> {
        let Some(presented) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
            return Err(git2::Error::from_str(&format!(
                "the SSH server {} showed no host key to check",
                self.host
            )));
        };
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if self.pinned.iter().any(|(_, key)| key.as_slice() == presented) {
            *refused = None;
            return Ok(CertificateCheckStatus::CertificateOk);
        }
        let why = format!(
            "the host key of {} (SHA256:{}) is not the one gitops.ssh_known_hosts_file pins for it: refused; if the server's key really changed, update the file",
            self.host,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2_256(presented))
        );
        *refused = Some(why.clone());
        Err(git2::Error::from_str(&why))
    }

    /// Why the server's host key was last refused, if it was.
    pub fn refusal(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn sha2_256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_are_named_as_known_hosts_names_them() {
        assert_eq!(
            known_hosts_name("git@github.com:acme/gitops.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            known_hosts_name("ssh://git@Git.Example:2222/x.git").as_deref(),
            Some("[git.example]:2222")
        );
        assert_eq!(
            known_hosts_name("ssh://git@git.example:22/x.git").as_deref(),
            Some("git.example")
        );
        assert_eq!(
            known_hosts_name("ssh://[::1]:2222/x.git").as_deref(),
            Some("[::1]:2222")
        );
        assert!(is_ssh("git@github.com:acme/gitops.git"));
        assert!(!is_ssh("/srv/git/gitops.git"));
        assert!(!is_ssh("./a:b"));
        assert!(!is_ssh("https://github.com/acme/gitops.git"));
        assert!(!is_ssh("C:/repos/x"));
    }
}
