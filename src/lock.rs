//! One Registrar per state directory. Two writers would interleave ref updates in the
//! GitOps mirror and race on the store, so the second one refuses to start. The lock is an
//! advisory `flock` on `<state_dir>/registrar.lock`: the kernel releases it when the process
//! dies, so a crash never leaves a stale lock behind. The file names the holder's pid for
//! the operator who reads the error.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct StateLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another Registrar is running against state directory {dir} ({holder}); two writers would corrupt the GitOps mirror and the store. Stop it first, or give this one its own state_dir"
    )]
    Held { dir: String, holder: String },
    #[error("locking {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join("registrar.lock");
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "pid unknown".to_string()
                } else {
                    format!("pid {holder}")
                };
                return Err(LockError::Held {
                    dir: state_dir.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("another Registrar is running against state directory"),
            "{err}"
        );
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
