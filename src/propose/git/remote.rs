//! Reaching the remote: credentials, fetching, and updating refs in place or by a checked push.

use git2::{Cred, FetchOptions, PushOptions, RemoteCallbacks};
use secrecy::ExposeSecret;

use super::{Ctx, GitError, GitRepo, REMOTE, RefUpdate, Result, Transport};

/// The refusal when a ref is no longer what Registrar read: its next look sees the change.
fn moved(refname: String, expected: Option<git2::Oid>, found: Option<git2::Oid>) -> GitError {
    let show = |o: Option<git2::Oid>| o.map_or("absent".to_string(), |o| o.to_string());
    GitError::Refused {
        refname,
        message: format!(
            "it changed since Registrar read it (expected {}, found {}); nothing was overwritten, and the change is looked at on the next pass",
            show(expected),
            show(found)
        ),
    }
}

impl GitRepo {
    pub(super) fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        let user = self.settings.username.clone();
        let pass = self.settings.password.get();
        let ssh = self.settings.ssh.as_ref();
        if let Some(ssh) = ssh {
            // No trust on first use: only a host key known_hosts pins is accepted.
            cb.certificate_check(move |cert, _host| ssh.check(cert));
        }
        let mut tries = 0;
        cb.credentials(move |_url, username_from_url, allowed| {
            tries += 1;
            // libgit2 asks again after a refusal; answering forever would loop.
            if tries > 1 {
                return Err(git2::Error::from_str("the remote refused the configured credentials"));
            }
            if let Some(ssh) = ssh.filter(|_| allowed.contains(git2::CredentialType::SSH_KEY)) {
                return ssh.credentials(username_from_url);
            }
            match &pass {
                Some(p) => Cred::userpass_plaintext(
                    user.as_deref().or(username_from_url).unwrap_or("registrar"),
                    p.expose_secret(),
                ),
                None => Err(git2::Error::from_str(
                    "the remote asks for credentials; set gitops.username and gitops.password_file",
                )),
            }
        });
        cb
    }

    /// The reason an SSH server's host key was refused, to go with libgit2's own words.
    pub(super) fn ssh_refusal(&self) -> String {
        self.settings
            .ssh
            .as_ref()
            .and_then(|s| s.refusal())
            .map(|why| format!(" ({why})"))
            .unwrap_or_default()
    }

    /// Brings the base branch and Registrar's branches up to date from the remote.
    pub fn fetch(&self) -> Result<()> {
        if let Transport::InPlace = self.transport {
            return Ok(());
        }
        let repo = self.lock();
        let mut remote = repo.find_remote(REMOTE).ctx(|| "finding remote".into())?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        opts.prune(git2::FetchPrune::On);
        let base = &self.settings.base;
        let specs = [
            format!("+refs/heads/{base}:refs/remotes/origin/{base}"),
            // This Registrar's branches only: another site's are none of its business.
            format!(
                "+refs/heads/{ours}*:refs/remotes/origin/{ours}*",
                ours = crate::domain::branch_prefix()
            ),
        ];
        remote
            .fetch(&specs, Some(&mut opts), None)
            .ctx(|| format!("fetching from {}{}", self.settings.remote_url, self.ssh_refusal()))?;
        Ok(())
    }

    pub(super) fn update_refs(&self, updates: &[RefUpdate]) -> Result<()> {
        match self.transport {
            Transport::InPlace => self.update_in_place(updates),
            Transport::Mirror => self.push(updates),
        }
    }

    fn update_in_place(&self, updates: &[RefUpdate]) -> Result<()> {
        let repo = self.lock();
        for u in updates {
            let name = format!("refs/heads/{}", u.branch);
            let current = repo.refname_to_id(&name).ok();
            if current != u.old {
                return Err(moved(name, u.old, current));
            }
            match (u.new, current) {
                (Some(new), Some(cur)) => {
                    repo.reference_matching(&name, new, true, cur, "registrar")
                        .map_err(|e| GitError::Refused {
                            refname: name.clone(),
                            message: e.message().to_string(),
                        })?;
                }
                (Some(new), None) => {
                    // Created only if still absent.
                    repo.reference(&name, new, false, "registrar")
                        .map_err(|e| GitError::Refused {
                            refname: name.clone(),
                            message: e.message().to_string(),
                        })?;
                }
                (None, Some(_)) => {
                    repo.find_reference(&name)
                        .and_then(|mut r| r.delete())
                        .ctx(|| format!("deleting {name}"))?;
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    fn push(&self, updates: &[RefUpdate]) -> Result<()> {
        let repo = self.lock();
        let mut specs = Vec::new();
        for u in updates {
            let local = format!("refs/heads/{}", u.branch);
            match u.new {
                Some(new) => {
                    repo.reference(&local, new, true, "registrar: to push")
                        .ctx(|| format!("updating {local}"))?;
                    specs.push(format!("{}{local}:{local}", if u.force { "+" } else { "" }));
                }
                None => specs.push(format!(":{local}")),
            }
        }
        let mut remote = repo.find_remote(REMOTE).ctx(|| "finding remote".into())?;
        // Compare-and-swap over the wire: connect, compare what the remote advertises with
        // what Registrar last read, and push on the same connection. The push sends the
        // advertised ids as each ref's old value, and the server moves a ref only if it
        // still holds that value: someone else's change is refused, never overwritten.
        let mut connection = remote
            .connect_auth(git2::Direction::Push, Some(self.callbacks()), None)
            .ctx(|| format!("connecting to {}{}", self.settings.remote_url, self.ssh_refusal()))?;
        let advertised: std::collections::HashMap<String, git2::Oid> = connection
            .list()
            .ctx(|| format!("listing refs of {}", self.settings.remote_url))?
            .iter()
            .map(|head| (head.name().to_string(), head.oid()))
            .collect();
        for u in updates {
            let name = format!("refs/heads/{}", u.branch);
            let current = advertised.get(&name).copied();
            if current != u.old {
                return Err(moved(name, u.old, current));
            }
        }
        let remote = connection.remote();
        let refused = std::cell::RefCell::new(Vec::new());
        let mut cb = self.callbacks();
        cb.push_update_reference(|refname, status| {
            if let Some(msg) = status {
                refused.borrow_mut().push((refname.to_string(), msg.to_string()));
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        remote.push(&specs, Some(&mut opts)).map_err(|e| match e.code() {
            // The server's compare failed after all (a change between listing and pushing).
            git2::ErrorCode::NotFastForward => GitError::Refused {
                refname: specs.join(" "),
                message: e.message().to_string(),
            },
            _ => GitError::Git {
                context: format!("pushing {} to {}", specs.join(" "), self.settings.remote_url),
                source: e,
            },
        })?;
        drop(opts);
        if let Some((refname, message)) = refused.into_inner().into_iter().next() {
            return Err(GitError::Refused { refname, message });
        }
        // The remote took it: record what it now holds.
        for u in updates {
            let tracking = self.tracking(u.branch);
            match u.new {
                Some(new) => {
                    repo.reference(&tracking, new, true, "registrar: pushed")
                        .ctx(|| format!("updating {tracking}"))?;
                }
                None => {
                    for name in [tracking, format!("refs/heads/{}", u.branch)] {
                        if let Ok(mut r) = repo.find_reference(&name) {
                            r.delete().ctx(|| format!("deleting {name}"))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
