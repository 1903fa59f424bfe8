//! Passive DHCP snooping: a machine that powers on broadcasts DHCPDISCOVER long before
//! anything else happens. Registrar listens and never answers.
//!
//! `Snooper::observe` is the whole per-packet path — parse, filter, debounce, known-MAC
//! check — and allocates only for a machine it has not seen in the debounce window.

pub mod forward;
pub mod listener;
pub mod packet;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::facts::clean;
use crate::domain::{KnownMacs, Mac, Relay, Sighting};
use packet::{BOOTREQUEST, Packet};

/// Which requests count, beyond being well-formed Ethernet BOOTREQUESTs.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Only PXE, UEFI HTTP boot and iPXE clients (not an installed OS renewing a lease).
    pub only_netboot: bool,
    /// If non-empty, only these OUIs (first three octets).
    pub oui_allow: Vec<[u8; 3]>,
    pub oui_deny: Vec<[u8; 3]>,
    /// If non-empty, only requests relayed from these subnets (by giaddr).
    pub relay_subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    net: u32,
    mask: u32,
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, len) = s.split_once('/').unwrap_or((s, "32"));
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 CIDR such as 10.0.0.0/24"))?;
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0-32"))?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Ok(Subnet {
            net: u32::from(ip) & mask,
            mask,
        })
    }
}

impl Subnet {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask == self.net
    }
}

pub fn parse_oui(s: &str) -> Result<[u8; 3], String> {
    let mac =
        Mac::parse(&format!("{}:00:00:01", s.trim())).map_err(|_| format!("{s:?} is not an OUI such as 3c:ec:ef"))?;
    let o = mac.octets();
    Ok([o[0], o[1], o[2]])
}

/// What became of one datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Did not parse; the reason is a metric label.
    Malformed(&'static str),
    /// Parsed but not a machine asking to boot, or filtered out; the reason is a label.
    Ignored(&'static str),
    /// Seen within the debounce window already.
    Repeat,
    /// Has a Hardware or a manifest already.
    Known,
    /// A machine to note, with what its request revealed.
    Seen(Mac, Sighting),
}

/// Remembers which MACs were passed on recently, in bounded memory: two generations of at
/// most `capacity` MACs each, rotated every window (or early, when one fills up under a
/// storm). A MAC is passed on at most once per window while it keeps asking.
pub struct Debouncer {
    window: Duration,
    capacity: usize,
    current: HashSet<Mac>,
    previous: HashSet<Mac>,
    rotated_at: Instant,
}

impl Debouncer {
    pub fn new(window: Duration, capacity: usize, now: Instant) -> Self {
        let capacity = capacity.max(1);
        Debouncer {
            window,
            capacity,
            current: HashSet::with_capacity(capacity.min(4096)),
            previous: HashSet::new(),
            rotated_at: now,
        }
    }

    /// True when `mac` was not passed on in the current or the previous generation.
    pub fn admit(&mut self, mac: Mac, now: Instant) -> bool {
        if now.saturating_duration_since(self.rotated_at) >= self.window || self.current.len() >= self.capacity {
            self.previous = std::mem::take(&mut self.current);
            self.rotated_at = now;
        }
        if self.current.contains(&mac) || self.previous.contains(&mac) {
            return false;
        }
        self.current.insert(mac);
        true
    }

    /// Forgets that `mac` was passed on, so its next request is: it was not, after all.
    pub fn forget(&mut self, mac: &Mac) {
        self.current.remove(mac);
        self.previous.remove(mac);
    }

    pub fn tracked(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

pub struct Snooper {
    filters: Filters,
    debounce: Debouncer,
    known: Arc<KnownMacs>,
}

impl Snooper {
    pub fn new(filters: Filters, debounce: Debouncer, known: Arc<KnownMacs>) -> Self {
        Snooper {
            filters,
            debounce,
            known,
        }
    }

    pub fn observe(&mut self, datagram: &[u8], now: Instant) -> Outcome {
        let p = match packet::parse(datagram) {
            Ok(p) => p,
            Err(e) => return Outcome::Malformed(e.reason()),
        };
        if p.op != BOOTREQUEST {
            return Outcome::Ignored("reply");
        }
        if p.htype != 1 || p.hlen != 6 {
            return Outcome::Ignored("not_ethernet");
        }
        // DISCOVER, REQUEST, INFORM, or plain BOOTP: a client asking.
        if p.msg_type.is_some_and(|t| !matches!(t, 1 | 3 | 8)) {
            return Outcome::Ignored("message_type");
        }
        let mut octets = [0u8; 6];
        octets.copy_from_slice(p.chaddr);
        let Ok(mac) = Mac::from_bytes(octets) else {
            return Outcome::Ignored("invalid_mac");
        };
        if let Some(reason) = self.filtered(&p, &octets) {
            return Outcome::Ignored(reason);
        }
        if !self.debounce.admit(mac, now) {
            return Outcome::Repeat;
        }
        if self.known.contains(&mac) {
            return Outcome::Known;
        }
        Outcome::Seen(mac, sighting(&p))
    }

    fn filtered(&self, p: &Packet, mac: &[u8; 6]) -> Option<&'static str> {
        let f = &self.filters;
        if f.only_netboot && !p.is_netboot() {
            return Some("not_netboot");
        }
        let oui = [mac[0], mac[1], mac[2]];
        if f.oui_deny.contains(&oui) || (!f.oui_allow.is_empty() && !f.oui_allow.contains(&oui)) {
            return Some("oui");
        }
        if !f.relay_subnets.is_empty()
            && !p
                .relay_agent()
                .is_some_and(|ip| f.relay_subnets.iter().any(|s| s.contains(ip)))
        {
            return Some("relay_subnet");
        }
        None
    }

    /// A machine `observe` admitted that could not be passed on (the recorder's backlog
    /// was full): its next request is admitted again, rather than ignored for a window.
    pub fn forget(&mut self, mac: &Mac) {
        self.debounce.forget(mac);
    }

    pub fn tracked(&self) -> usize {
        self.debounce.tracked()
    }
}

/// Bytes as text when they are printable ASCII, else as colon-separated hex.
fn text_or_hex(b: &[u8]) -> Option<String> {
    if b.is_empty() {
        return None;
    }
    let b = &b[..b.len().min(64)];
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        clean(&String::from_utf8_lossy(b))
    } else {
        Some(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"))
    }
}

fn sighting(p: &Packet) -> Sighting {
    let arch = p.arch_code().and_then(packet::tinkerbell_arch);
    Sighting {
        arch: arch.map(|(a, _)| a.to_string()),
        uefi: arch.map(|(_, u)| u),
        // Option 97: a type byte (0) then 16 bytes of UUID.
        uuid: p
            .uuid
            .filter(|u| u.len() == 17 && u[0] == 0)
            .map(|u| format_uuid(&u[1..]))
            .filter(|u| !crate::domain::facts::is_placeholder(u)),
        hostname: p.hostname.and_then(text_or_hex),
        vendor_class: p.vendor_class.and_then(text_or_hex),
        user_class: p.user_class.and_then(text_or_hex),
        netboot: p.is_netboot(),
        relay: p.relay_agent().map(|ip| Relay {
            address: ip.to_string(),
            circuit_id: p.circuit_id.and_then(text_or_hex),
            remote_id: p.remote_id.and_then(text_or_hex),
        }),
    }
}

fn format_uuid(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::packet::testing::Builder;
    use super::*;

    const MAC: [u8; 6] = [0x3c, 0xec, 0xef, 0x4c, 0x4f, 0x54];

    fn snooper(filters: Filters) -> (Snooper, Arc<KnownMacs>) {
        let known = Arc::new(KnownMacs::default());
        (
            Snooper::new(
                filters,
                Debouncer::new(Duration::from_secs(60), 1000, Instant::now()),
                known.clone(),
            ),
            known,
        )
    }

    fn discover(mac: [u8; 6]) -> Vec<u8> {
        Builder::request(mac)
            .option(53, &[1])
            .option(60, b"PXEClient:Arch:00007:UNDI:003016")
            .build()
    }

    #[test]
    fn a_machine_the_backlog_could_not_take_is_admitted_on_its_next_request() {
        let (mut s, _) = snooper(Filters::default());
        let t0 = Instant::now();
        let Outcome::Seen(mac, _) = s.observe(&discover(MAC), t0) else {
            panic!()
        };
        s.forget(&mac);
        assert!(matches!(
            s.observe(&discover(MAC), t0 + Duration::from_secs(1)),
            Outcome::Seen(..)
        ));
        assert_eq!(s.observe(&discover(MAC), t0 + Duration::from_secs(2)), Outcome::Repeat);
    }

    #[test]
    fn a_booting_machine_is_seen_once_per_window() {
        let (mut s, _) = snooper(Filters::default());
        let t0 = Instant::now();
        let Outcome::Seen(mac, sighting) = s.observe(&discover(MAC), t0) else {
            panic!()
        };
        assert_eq!(mac.to_string(), "3c:ec:ef:4c:4f:54");
        assert_eq!(sighting.arch.as_deref(), Some("x86_64"));
        assert_eq!(sighting.uefi, Some(true));
        assert!(sighting.netboot);
        for i in 1..100 {
            assert_eq!(
                s.observe(&discover(MAC), t0 + Duration::from_millis(i * 100)),
                Outcome::Repeat
            );
        }
        // After two windows without being passed on, it is passed on again (last seen moves).
        assert_eq!(s.observe(&discover(MAC), t0 + Duration::from_secs(61)), Outcome::Repeat);
        assert!(matches!(
            s.observe(&discover(MAC), t0 + Duration::from_secs(122)),
            Outcome::Seen(..)
        ));
    }

    #[test]
    fn known_macs_replies_and_filters() {
        let (mut s, known) = snooper(Filters::default());
        known.replace("gitops", [Mac::from_bytes(MAC).unwrap()].into());
        assert_eq!(s.observe(&discover(MAC), Instant::now()), Outcome::Known);
        let mut reply = discover([2, 0, 0, 0, 0, 1]);
        reply[0] = 2;
        assert_eq!(s.observe(&reply, Instant::now()), Outcome::Ignored("reply"));
        let offer = Builder::request([2, 0, 0, 0, 0, 2]).option(53, &[2]).build();
        assert_eq!(s.observe(&offer, Instant::now()), Outcome::Ignored("message_type"));
        assert_eq!(s.observe(&[0u8; 10], Instant::now()), Outcome::Malformed("truncated"));

        let (mut pxe_only, _) = snooper(Filters {
            only_netboot: true,
            ..Default::default()
        });
        let os_renewal = Builder::request([2, 0, 0, 0, 0, 3])
            .option(53, &[3])
            .option(60, b"udhcp 1.35.0")
            .build();
        assert_eq!(
            pxe_only.observe(&os_renewal, Instant::now()),
            Outcome::Ignored("not_netboot")
        );

        let (mut oui, _) = snooper(Filters {
            oui_allow: vec![parse_oui("3c:ec:ef").unwrap()],
            ..Default::default()
        });
        assert!(matches!(oui.observe(&discover(MAC), Instant::now()), Outcome::Seen(..)));
        assert_eq!(
            oui.observe(&discover([2, 0, 0, 0, 0, 4]), Instant::now()),
            Outcome::Ignored("oui")
        );

        let (mut relayed, _) = snooper(Filters {
            relay_subnets: vec!["10.1.0.0/16".parse().unwrap()],
            ..Default::default()
        });
        let inside = Builder::request(MAC).giaddr([10, 1, 2, 1]).option(53, &[1]).build();
        let outside = Builder::request([2, 0, 0, 0, 0, 5])
            .giaddr([10, 2, 0, 1])
            .option(53, &[1])
            .build();
        let direct = Builder::request([2, 0, 0, 0, 0, 6]).option(53, &[1]).build();
        assert!(matches!(relayed.observe(&inside, Instant::now()), Outcome::Seen(..)));
        assert_eq!(
            relayed.observe(&outside, Instant::now()),
            Outcome::Ignored("relay_subnet")
        );
        assert_eq!(
            relayed.observe(&direct, Instant::now()),
            Outcome::Ignored("relay_subnet")
        );
    }

    #[test]
    fn the_sighting_carries_relay_uuid_and_hostname() {
        let (mut s, _) = snooper(Filters::default());
        let mut uuid = vec![0u8];
        uuid.extend_from_slice(&[
            0x4c, 0x4f, 0x54, 0x00, 0x3c, 0xec, 0x11, 0xee, 0x80, 0x00, 0x3c, 0xec, 0xef, 0x4c, 0x4f, 0x54,
        ]);
        let pkt = Builder::request(MAC)
            .giaddr([10, 0, 0, 1])
            .option(53, &[1])
            .option(12, b"node01\n<b>")
            .option(93, &[0, 11])
            .option(97, &uuid)
            .option(82, &[1, 4, b'e', b't', b'1', b'2', 2, 3, 0xaa, 0xbb, 0xcc])
            .build();
        let Outcome::Seen(_, s) = s.observe(&pkt, Instant::now()) else {
            panic!()
        };
        assert_eq!(s.arch.as_deref(), Some("aarch64"));
        assert_eq!(s.uuid.as_deref(), Some("4c4f5400-3cec-11ee-8000-3cecef4c4f54"));
        assert_eq!(
            s.hostname.as_deref(),
            Some("6e:6f:64:65:30:31:0a:3c:62:3e"),
            "non-printable bytes are shown as hex"
        );
        assert_eq!(
            s.location().as_deref(),
            Some("relay 10.0.0.1, port et12, switch aa:bb:cc")
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_storm() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_secs(60), 1000, t0);
        for i in 0..100_000u32 {
            let b = i.to_be_bytes();
            d.admit(Mac::from_bytes([2, 0, b[0], b[1], b[2], b[3]]).unwrap(), t0);
            assert!(d.tracked() <= 2000);
        }
    }
}
