//! The UDP socket: bound to port 67 (by default on 0.0.0.0, which receives broadcast
//! DISCOVERs even with no address on the interface), optionally to one interface. It only
//! ever receives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

use super::{Outcome, Snooper};
use crate::domain::{Mac, Sighting};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Binds the snooping socket, explaining what to do when that is not allowed.
pub fn bind(addr: SocketAddr, interface: Option<&str>) -> anyhow::Result<std::net::UdpSocket> {
    let explain = |what: &str, e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " — ports below 1024 need root or CAP_NET_BIND_SERVICE (binding to an interface needs CAP_NET_RAW)"
            }
            std::io::ErrorKind::AddrInUse => " — another DHCP server or snooper holds it; Registrar shares it only with SO_REUSEADDR sockets",
            _ => "",
        };
        anyhow::anyhow!("DHCP listener: cannot {what} {addr}: {e}{hint}")
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| explain("create a socket for", e))?;
    socket.set_reuse_address(true).map_err(|e| explain("set SO_REUSEADDR on", e))?;
    socket.set_broadcast(true).map_err(|e| explain("set SO_BROADCAST on", e))?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(ifname) = interface {
        socket.bind_device(Some(ifname.as_bytes())).map_err(|e| explain(&format!("bind to interface {ifname:?} for"), e))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    if interface.is_some() {
        anyhow::bail!("DHCP listener: binding to an interface is supported on Linux only");
    }
    socket.bind(&addr.into()).map_err(|e| explain("bind", e))?;
    socket.set_nonblocking(true).map_err(|e| explain("configure", e))?;
    Ok(socket.into())
}

/// Receives until shutdown, passing each newly seen machine to `sink`. A full sink drops
/// the sighting (counted): the machine asks again within seconds, and the debounce window
/// lets it through then.
pub async fn run(
    socket: std::net::UdpSocket,
    mut snooper: Snooper,
    sink: mpsc::Sender<(Mac, Sighting)>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let local = socket.local_addr()?;
    tracing::info!(%local, "DHCP snooping: listening (receive only)");
    metrics.dhcp_listener_up.set(1);
    let mut buf = vec![0u8; 2048];
    let result = loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.wait() => break Ok(()),
        };
        let (len, _peer) = match received {
            Ok(r) => r,
            Err(e) => break Err(anyhow::anyhow!("DHCP listener on {local}: {e}")),
        };
        metrics.dhcp_packets.inc();
        match snooper.observe(&buf[..len], Instant::now()) {
            Outcome::Malformed(reason) => metrics.dhcp_dropped(reason),
            Outcome::Ignored(reason) => {
                metrics.dhcp_parsed.inc();
                metrics.dhcp_dropped(reason);
            }
            Outcome::Repeat => {
                metrics.dhcp_parsed.inc();
                metrics.dhcp_dropped("repeat");
            }
            Outcome::Known => {
                metrics.dhcp_parsed.inc();
                metrics.dhcp_dropped("known");
            }
            Outcome::Seen(mac, sighting) => {
                metrics.dhcp_parsed.inc();
                if sink.try_send((mac, sighting)).is_err() {
                    metrics.dhcp_dropped("backlog");
                }
            }
        }
        metrics.dhcp_tracked_macs.set(snooper.tracked() as i64);
    };
    metrics.dhcp_listener_up.set(0);
    result
}
