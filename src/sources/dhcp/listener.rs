//! Where DHCP requests are read from. Either a UDP socket bound to port 67 (by default on
//! 0.0.0.0, which receives broadcast DISCOVERs even with no address on the interface), or —
//! to also see requests relayed or unicast to *another* DHCP server, e.g. on a mirror port —
//! an AF_PACKET capture of IPv4 datagrams to UDP port 67. Either way it only ever receives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

use super::{Outcome, Snooper};
use crate::domain::{Mac, Sighting};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Opens what `config` asks to read from: the bound port 67, or the capture.
pub fn open(config: &crate::config::DhcpConfig) -> anyhow::Result<Input> {
    Ok(match config.capture {
        false => Input::Socket(bind(config.listen, config.interface.as_deref())?),
        #[cfg(target_os = "linux")]
        true => Input::Capture(capture(config.interface.as_deref())?),
        #[cfg(not(target_os = "linux"))]
        true => anyhow::bail!("dhcp.capture needs Linux (AF_PACKET)"),
    })
}

/// Binds the snooping socket, explaining what to do when that is not allowed.
pub fn bind(addr: SocketAddr, interface: Option<&str>) -> anyhow::Result<std::net::UdpSocket> {
    let explain = |what: &str, e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " — ports below 1024 need root or CAP_NET_BIND_SERVICE (binding to an interface needs CAP_NET_RAW)"
            }
            std::io::ErrorKind::AddrInUse => {
                " — a DHCP server or relay on this node holds it. Registrar does not share the port: sharing it would take unicast requests (renewals, relayed DISCOVERs) away from that server. Use dhcp.capture: true, which copies packets and takes none"
            }
            _ => "",
        };
        anyhow::anyhow!("DHCP listener: cannot {what} {addr}: {e}{hint}")
    };
    // No SO_REUSEADDR: with it, a DHCP server on this node that set it too (Smee does) would
    // share port 67 with Registrar, and Linux gives each unicast datagram to one socket only
    // — often the newer one. Relayed requests meant for that server would end here, unanswered.
    let socket =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| explain("create a socket for", e))?;
    socket
        .set_broadcast(true)
        .map_err(|e| explain("set SO_BROADCAST on", e))?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(ifname) = interface {
        socket
            .bind_device(Some(ifname.as_bytes()))
            .map_err(|e| explain(&format!("bind to interface {ifname:?} for"), e))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    if interface.is_some() {
        anyhow::bail!("DHCP listener: binding to an interface is supported on Linux only");
    }
    socket.bind(&addr.into()).map_err(|e| explain("bind", e))?;
    socket.set_nonblocking(true).map_err(|e| explain("configure", e))?;
    Ok(socket.into())
}

/// An AF_PACKET socket receiving every IPv4 packet on `interface` (or all interfaces);
/// needs CAP_NET_RAW. Linux only.
#[cfg(target_os = "linux")]
pub fn capture(interface: Option<&str>) -> anyhow::Result<Socket> {
    const ETH_P_IP: u16 = 0x0800;
    let explain = |what: &str, e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " — a packet capture needs root or CAP_NET_RAW"
        } else {
            ""
        };
        anyhow::anyhow!("DHCP capture: cannot {what}: {e}{hint}")
    };
    let socket = Socket::new(
        Domain::PACKET,
        Type::DGRAM,
        Some(Protocol::from(i32::from(ETH_P_IP.to_be()))),
    )
    .map_err(|e| explain("open an AF_PACKET socket", e))?;
    if let Some(ifname) = interface {
        socket
            .bind_device(Some(ifname.as_bytes()))
            .map_err(|e| explain(&format!("bind to interface {ifname:?}"), e))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| explain("configure the socket", e))?;
    Ok(socket)
}

/// The UDP payload of an IPv4 packet to port 67, if that is what `ip` is.
pub fn dhcp_payload(ip: &[u8]) -> Option<&[u8]> {
    let first = *ip.first()?;
    let header = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header < 20 || ip.len() < header + 8 || ip[9] != 17 {
        return None;
    }
    // Fragments other than the first carry no UDP header; DHCP requests are never fragmented.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let udp = &ip[header..];
    if u16::from_be_bytes([udp[2], udp[3]]) != 67 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]])).clamp(8, udp.len());
    Some(&udp[8..len])
}

/// Where datagrams come from.
pub enum Input {
    Socket(std::net::UdpSocket),
    /// From `capture()`: IPv4 packets, of which those to UDP port 67 are DHCP requests.
    Capture(Socket),
}

enum Reader {
    Socket(tokio::net::UdpSocket),
    Capture(tokio::io::unix::AsyncFd<Socket>),
}

impl Reader {
    fn new(input: Input) -> std::io::Result<(Reader, String)> {
        Ok(match input {
            Input::Socket(s) => {
                let s = tokio::net::UdpSocket::from_std(s)?;
                let name = format!("udp {}", s.local_addr()?);
                (Reader::Socket(s), name)
            }
            Input::Capture(s) => {
                // SAFETY: a socket2::Socket owns its descriptor until dropped and always
                // returns that same descriptor; the AsyncFd owns the Socket.
                let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                (Reader::Capture(fd), "AF_PACKET capture".to_string())
            }
        })
    }

    /// The next DHCP payload's place in `buf`.
    async fn next(&self, buf: &mut [u8]) -> std::io::Result<std::ops::Range<usize>> {
        match self {
            Reader::Socket(s) => s.recv_from(buf).await.map(|(n, _)| 0..n),
            Reader::Capture(fd) => loop {
                let mut guard = fd.readable().await?;
                let n = match guard.try_io(|inner| std::io::Read::read(&mut inner.get_ref(), &mut *buf)) {
                    Ok(result) => result?,
                    Err(_would_block) => continue,
                };
                let base = buf.as_ptr() as usize;
                if let Some(payload) = dhcp_payload(&buf[..n]) {
                    let start = payload.as_ptr() as usize - base;
                    return Ok(start..start + payload.len());
                }
            },
        }
    }
}

/// Receives until shutdown, passing each newly seen machine to `sink`. A full sink drops
/// the sighting (counted): the machine asks again within seconds, and the debounce window
/// lets it through then.
pub async fn run(
    input: Input,
    mut snooper: Snooper,
    sink: mpsc::Sender<(Mac, Sighting)>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (reader, local) = Reader::new(input)?;
    tracing::info!(%local, "DHCP snooping: listening (receive only)");
    metrics.dhcp_listener_up.set(1);
    let mut buf = vec![0u8; 2048];
    let result = loop {
        let received = tokio::select! {
            r = reader.next(&mut buf) => r,
            _ = shutdown.wait() => break Ok(()),
        };
        let range = match received {
            Ok(r) => r,
            Err(e) => break Err(anyhow::anyhow!("DHCP listener on {local}: {e}")),
        };
        metrics.dhcp_packets.inc();
        match snooper.observe(&buf[range], Instant::now()) {
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
                    // A real machine asks again within seconds; a flood should not cost it a
                    // whole debounce window.
                    snooper.forget(&mac);
                }
            }
        }
        metrics.dhcp_tracked_macs.set(snooper.tracked() as i64);
    };
    metrics.dhcp_listener_up.set(0);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_udp_to_port_67_only() {
        let payload = b"dhcp!";
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        ip.extend_from_slice(&[0, 68, 0, 67, 0, 13, 0, 0]);
        ip.extend_from_slice(payload);
        ip.extend_from_slice(b"ethernet padding");
        assert_eq!(dhcp_payload(&ip), Some(&payload[..]));
        let mut to_68 = ip.clone();
        to_68[23] = 68;
        assert_eq!(dhcp_payload(&to_68), None);
        let mut tcp = ip.clone();
        tcp[9] = 6;
        assert_eq!(dhcp_payload(&tcp), None);
        let mut fragment = ip.clone();
        fragment[7] = 1;
        assert_eq!(dhcp_payload(&fragment), None);
        for n in 0..ip.len() {
            let _ = dhcp_payload(&ip[..n]);
        }
        assert_eq!(dhcp_payload(&[0x46, 0]), None);
    }

    #[test]
    fn a_port_a_dhcp_server_holds_is_not_shared_and_the_error_says_what_to_use() {
        // A DHCP server on the same node, bound with SO_REUSEADDR as Smee binds port 67.
        let server = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        server.set_reuse_address(true).unwrap();
        server
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let addr = server.local_addr().unwrap().as_socket().unwrap();
        let err = bind(addr, None)
            .expect_err("the server's port is not shared")
            .to_string();
        assert!(err.contains("dhcp.capture: true"), "{err}");
        // Unicast requests keep reaching the server.
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"renew", addr).unwrap();
        let server: std::net::UdpSocket = server.into();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"renew");
    }
}
