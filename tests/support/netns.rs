//! Two network namespaces joined by a veth pair, for tests that put real DHCP traffic on a
//! wire of their own: nothing they send leaves the namespaces they created, and both are
//! removed on drop, also when the test fails. Needs root and `ip` (iproute2).

use std::os::fd::AsFd;
use std::process::Command;

/// Namespaces and the veth pair, removed on drop — also when the test fails.
pub struct Netns {
    pub server: String,
    pub client: String,
    vsrv: String,
    vcli: String,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Netns {
    pub fn create() -> Netns {
        // Unique per process and per test (tests run in parallel); interface names ≤ 15 bytes.
        let id = format!(
            "{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let (vsrv, vcli) = (format!("rs{id}"), format!("rc{id}"));
        let n = Netns {
            server: format!("regsrv{id}"),
            client: format!("regcli{id}"),
            vsrv: vsrv.clone(),
            vcli: vcli.clone(),
        };
        n.run(&["netns", "add", &n.server]);
        n.run(&["netns", "add", &n.client]);
        n.run(&["link", "add", &vsrv, "type", "veth", "peer", "name", &vcli]);
        n.run(&["link", "set", &vsrv, "netns", &n.server]);
        n.run(&["link", "set", &vcli, "netns", &n.client]);
        n.run(&["-n", &n.server, "link", "set", "lo", "up"]);
        n.run(&["-n", &n.server, "link", "set", &vsrv, "up"]);
        n.run(&["-n", &n.client, "link", "set", &vcli, "up"]);
        n
    }

    pub fn run(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn client_if(&self) -> String {
        self.vcli.clone()
    }

    pub fn client_mac(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.client, "-j", "link", "show", &self.client_if()])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["address"].as_str().unwrap().to_string()
    }

    /// Runs `f` on a thread inside namespace `ns`. Sockets stay in the namespace they were
    /// created in, so this is how one is made there while the test itself stays outside.
    pub fn inside<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// Binds Registrar's snooping socket inside the server namespace.
    pub fn bind_in_server(&self) -> std::net::UdpSocket {
        Self::inside(&self.server, || {
            registrar::sources::dhcp::listener::bind("0.0.0.0:67".parse().unwrap(), None).unwrap()
        })
    }

    pub fn server_if(&self) -> String {
        self.vsrv.clone()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespaces removes the veth pair with them.
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

pub fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
