//! A throwaway PostgreSQL server for one test: its own data directory under /tmp, a free
//! loopback port, trust authentication (URLs carry no password) and a database `registrar`;
//! stopped and removed on drop, also when the test fails. The server binaries come from PATH,
//! else from the newest Debian /usr/lib/postgresql/VERSION/bin (the `postgresql` package puts
//! them there only). PostgreSQL refuses to run as root, so under root (CI) it runs as nobody.
//! Without the binaries, or when the server does not start, `start` says why and returns None,
//! except under REGISTRAR_CI=1, where it panics.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

const NOBODY: u32 = 65534;

pub struct Postgres {
    port: u16,
    psql: PathBuf,
    server: Child,
    // Declared after `server`, and dropped only after `Drop::drop` has stopped it.
    dir: TempDir,
}

impl Postgres {
    /// A running server with an empty database `registrar`, or None (having said why).
    pub fn start() -> Option<Postgres> {
        match Self::try_start() {
            Ok(pg) => Some(pg),
            Err(why) => {
                // libtest names each test's thread after the test.
                let test = std::thread::current().name().unwrap_or("postgres").to_string();
                super::skip_unless_ci(&test, Some(format!("needs PostgreSQL: {why}")));
                None
            }
        }
    }

    /// `postgres://registrar@127.0.0.1:PORT/registrar?sslmode=disable`.
    pub fn url(&self) -> String {
        self.url_of("registrar")
    }

    /// A fresh, empty database `name` on the same server, and its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name:?}: letters, digits and _ keep the URL and the SQL free of quoting"
        );
        self.sql(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("{e}"));
        self.url_of(name)
    }

    /// `psql` on `url`, from the server's own installation: no ~/.psqlrc, no password
    /// prompt, and the first failing statement fails the command.
    pub fn psql(&self, url: &str) -> Command {
        let mut cmd = Command::new(&self.psql);
        cmd.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", url])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null());
        cmd
    }

    fn url_of(&self, db: &str) -> String {
        format!("postgres://registrar@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    fn sql(&self, sql: &str) -> Result<(), String> {
        let out = self.psql(&self.url_of("postgres")).args(["-c", sql]).output();
        match out.map_err(|e| format!("{}: {e}", self.psql.display()))? {
            out if out.status.success() => Ok(()),
            out => Err(format!(
                "psql -c {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    fn try_start() -> Result<Postgres, String> {
        let initdb = on_path("initdb")
            .or_else(|| newest_debian().map(|d| d.join("initdb")))
            .ok_or("initdb is neither on PATH nor in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")?;
        // PATH often holds a symlink into the versioned directory, and psql a version-picking
        // wrapper: the tools beside the real initdb are the ones that match it.
        let bin = initdb
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let tool = |name: &str| {
            bin.as_ref()
                .map(|b| b.join(name))
                .filter(|p| p.is_file())
                .or_else(|| on_path(name))
                .ok_or_else(|| format!("{name} is neither beside {} nor on PATH", initdb.display()))
        };
        let (postgres, psql) = (tool("postgres")?, tool("psql")?);

        // Under /tmp rather than TMPDIR: nobody must be able to reach the data directory.
        let dir = tempfile::Builder::new()
            .prefix("registrar-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // PostgreSQL insists that only its own user can read the data directory.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            nix::unistd::chown(&data, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
        }
        let as_server = |program: &Path| {
            let mut cmd = Command::new(program);
            // PG* variables of the caller must not redirect initdb or the server.
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .current_dir(dir.path())
                .stdin(Stdio::null());
            if root {
                // std drops root's supplementary groups when it changes the uid.
                cmd.uid(NOBODY).gid(NOBODY);
            }
            cmd
        };

        let out = as_server(&initdb)
            .args("-A trust -U registrar --no-sync -E UTF8 --locale=C -D".split(' '))
            .arg(&data)
            .output()
            .map_err(|e| format!("{}: {e}", initdb.display()))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(format!("{} failed ({}): {}", initdb.display(), out.status, why.trim()));
        }

        let log_path = dir.path().join("postgres.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let port = super::binary::free_port();
        let server = as_server(&postgres)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            // A throwaway cluster: durability would only cost time.
            .args("-c fsync=off -c synchronous_commit=off -c full_page_writes=off".split(' '))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", postgres.display()))?;
        let mut pg = Postgres {
            port,
            psql,
            server,
            dir,
        };

        // Creating the database doubles as the readiness probe: until the server accepts
        // connections, psql fails and is retried.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Err(e) = pg.sql("CREATE DATABASE registrar") else {
                return Ok(pg);
            };
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Ok(Some(status)) = pg.server.try_wait() {
                return Err(format!("postgres exited ({status}):\n{}", log().trim_end()));
            }
            if Instant::now() > deadline {
                return Err(format!("no connection in 30 s: {e}\n{}", log().trim_end()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT is the postmaster's immediate shutdown (pg_ctl stop -m immediate): it takes
        // its backends down with it (SIGKILL after 5 s), where SIGKILL to it alone would leave
        // them and their shared memory behind.
        let _ = kill(Pid::from_raw(self.server.id() as i32), Signal::SIGQUIT);
        let _ = self.server.wait();
    }
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The newest `/usr/lib/postgresql/VERSION/bin` with an initdb (versions compare as numbers).
fn newest_debian() -> Option<PathBuf> {
    let version = |p: &Path| -> Vec<u32> {
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        name.split('.').map(|n| n.parse().unwrap_or(0)).collect()
    };
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("bin/initdb").is_file())
        .max_by_key(|p| version(p))
        .map(|p| p.join("bin"))
}
