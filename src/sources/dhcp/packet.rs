//! BOOTP/DHCPv4 (RFC 2131/2132, 3046, 4578) parsing for passive snooping.
//!
//! Zero-copy: a `Packet` borrows the datagram, so the hot path allocates nothing. Any input
//! is accepted without panicking; what does not parse is an `Error` with a reason that
//! becomes a metric label.

use std::net::Ipv4Addr;

/// Fixed BOOTP header (236 bytes) plus the magic cookie.
const HEADER: usize = 236;
const COOKIE: [u8; 4] = [99, 130, 83, 99];

pub const BOOTREQUEST: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than a BOOTP header, or an option runs past the end.
    Truncated,
    /// No DHCP magic cookie (plain BOOTP without options is accepted as such).
    BadCookie,
    /// An option's content is malformed (e.g. option 53 not one byte).
    BadOption,
}

impl Error {
    pub fn reason(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadCookie => "bad_cookie",
            Error::BadOption => "bad_option",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet<'a> {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    pub giaddr: [u8; 4],
    pub chaddr: &'a [u8],
    /// Option 53.
    pub msg_type: Option<u8>,
    /// Option 12.
    pub hostname: Option<&'a [u8]>,
    /// Option 60, e.g. `PXEClient:Arch:00007:UNDI:003016`.
    pub vendor_class: Option<&'a [u8]>,
    /// Option 61.
    pub client_id: Option<&'a [u8]>,
    /// Option 77, e.g. `iPXE`.
    pub user_class: Option<&'a [u8]>,
    /// Option 93: the first client system architecture type (RFC 4578).
    pub client_arch: Option<u16>,
    /// Option 97: type byte then the machine's UUID/GUID.
    pub uuid: Option<&'a [u8]>,
    /// Option 82 sub-option 1: which switch port the relay heard the client on.
    pub circuit_id: Option<&'a [u8]>,
    /// Option 82 sub-option 2: which relay (switch) that is.
    pub remote_id: Option<&'a [u8]>,
}

/// DHCP message types worth a log line.
pub fn msg_type_name(t: u8) -> &'static str {
    match t {
        1 => "DISCOVER",
        2 => "OFFER",
        3 => "REQUEST",
        4 => "DECLINE",
        5 => "ACK",
        6 => "NAK",
        7 => "RELEASE",
        8 => "INFORM",
        _ => "OTHER",
    }
}

pub fn parse(buf: &[u8]) -> Result<Packet<'_>, Error> {
    if buf.len() < HEADER {
        return Err(Error::Truncated);
    }
    let hlen = buf[2];
    let mut p = Packet {
        op: buf[0],
        htype: buf[1],
        hlen,
        xid: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        giaddr: [buf[24], buf[25], buf[26], buf[27]],
        chaddr: &buf[28..28 + (hlen as usize).min(16)],
        ..Packet::default()
    };
    if buf.len() < HEADER + 4 {
        return Ok(p); // BOOTP without a vendor area
    }
    if buf[HEADER..HEADER + 4] != COOKIE {
        return Err(Error::BadCookie);
    }
    let mut i = HEADER + 4;
    while i < buf.len() {
        let code = buf[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = *buf.get(i + 1).ok_or(Error::Truncated)? as usize;
        let data = buf.get(i + 2..i + 2 + len).ok_or(Error::Truncated)?;
        match code {
            53 => {
                if len != 1 {
                    return Err(Error::BadOption);
                }
                p.msg_type = Some(data[0]);
            }
            12 => p.hostname = Some(data),
            60 => p.vendor_class = Some(data),
            61 => p.client_id = Some(data),
            77 => p.user_class = Some(data),
            93 => {
                if len < 2 || !len.is_multiple_of(2) {
                    return Err(Error::BadOption);
                }
                p.client_arch = Some(u16::from_be_bytes([data[0], data[1]]));
            }
            97 => p.uuid = Some(data),
            82 => parse_relay(data, &mut p)?,
            _ => {}
        }
        i += 2 + len;
    }
    Ok(p)
}

fn parse_relay<'a>(data: &'a [u8], p: &mut Packet<'a>) -> Result<(), Error> {
    let mut i = 0;
    while i < data.len() {
        let code = data[i];
        let len = *data.get(i + 1).ok_or(Error::Truncated)? as usize;
        let sub = data.get(i + 2..i + 2 + len).ok_or(Error::Truncated)?;
        match code {
            1 => p.circuit_id = Some(sub),
            2 => p.remote_id = Some(sub),
            _ => {}
        }
        i += 2 + len;
    }
    Ok(())
}

impl Packet<'_> {
    pub fn relay_agent(&self) -> Option<Ipv4Addr> {
        (self.giaddr != [0; 4]).then(|| Ipv4Addr::from(self.giaddr))
    }

    /// A PXE ROM (`PXEClient`), UEFI HTTP boot (`HTTPClient`) or iPXE.
    pub fn is_netboot(&self) -> bool {
        self.vendor_class
            .is_some_and(|v| v.starts_with(b"PXEClient") || v.starts_with(b"HTTPClient"))
            || self.user_class.is_some_and(|u| u.windows(4).any(|w| w == b"iPXE"))
    }

    /// The architecture from option 93, or from `PXEClient:Arch:NNNNN` in option 60.
    pub fn arch_code(&self) -> Option<u16> {
        self.client_arch.or_else(|| {
            let v = self.vendor_class?;
            let pos = v.windows(5).position(|w| w == b"Arch:")?;
            let digits = v.get(pos + 5..pos + 10)?;
            std::str::from_utf8(digits).ok()?.parse().ok()
        })
    }
}

/// RFC 4578 / IANA processor architecture types → Tinkerbell's `arch` and `uefi`.
/// 32-bit ARM and the rest have no Tinkerbell arch: `None`.
pub fn tinkerbell_arch(code: u16) -> Option<(&'static str, bool)> {
    match code {
        0 => Some(("x86_64", false)),        // x86 BIOS
        6 | 7 | 9 => Some(("x86_64", true)), // x86/x64 UEFI, EBC (x64 firmware in practice)
        15 | 16 => Some(("x86_64", true)),   // x86/x64 UEFI HTTP boot
        11 | 19 => Some(("aarch64", true)),  // ARM64 UEFI, ARM64 UEFI HTTP boot
        _ => None,
    }
}

#[cfg(test)]
pub mod testing {
    //! Builds packets the way clients send them.

    pub struct Builder {
        buf: Vec<u8>,
    }

    impl Builder {
        pub fn request(mac: [u8; 6]) -> Self {
            let mut buf = vec![0u8; 236];
            buf[0] = 1;
            buf[1] = 1;
            buf[2] = 6;
            buf[4..8].copy_from_slice(&0x3d45_4949u32.to_be_bytes());
            buf[28..34].copy_from_slice(&mac);
            buf.extend_from_slice(&[99, 130, 83, 99]);
            Builder { buf }
        }
        pub fn giaddr(mut self, ip: [u8; 4]) -> Self {
            self.buf[24..28].copy_from_slice(&ip);
            self
        }
        pub fn option(mut self, code: u8, data: &[u8]) -> Self {
            self.buf.push(code);
            self.buf.push(data.len() as u8);
            self.buf.extend_from_slice(data);
            self
        }
        pub fn build(mut self) -> Vec<u8> {
            self.buf.push(255);
            self.buf
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Builder;
    use super::*;

    const MAC: [u8; 6] = [0x3c, 0xec, 0xef, 0x4c, 0x4f, 0x54];

    #[test]
    fn every_option_snooping_reads() {
        let uuid = [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        let pkt = Builder::request(MAC)
            .option(53, &[1])
            .option(12, b"node01")
            .option(60, b"PXEClient:Arch:00007:UNDI:003016")
            .option(61, &[1, 0x3c, 0xec, 0xef, 0x4c, 0x4f, 0x54])
            .option(77, b"iPXE")
            .option(93, &[0, 7])
            .option(97, &uuid)
            .build();
        let p = parse(&pkt).unwrap();
        assert_eq!((p.op, p.htype, p.hlen, p.xid), (1, 1, 6, 0x3d45_4949));
        assert_eq!(p.chaddr, &MAC);
        assert_eq!(p.msg_type, Some(1));
        assert_eq!(p.hostname, Some(&b"node01"[..]));
        assert_eq!(p.client_id.unwrap()[0], 1);
        assert_eq!(p.user_class, Some(&b"iPXE"[..]));
        assert_eq!(p.client_arch, Some(7));
        assert_eq!(p.uuid, Some(&uuid[..]));
        assert!(p.is_netboot());
        assert_eq!(p.relay_agent(), None);
    }

    #[test]
    fn relayed_requests_carry_switch_and_port() {
        let relay = [
            1u8, 12, b'E', b't', b'h', b'e', b'r', b'n', b'e', b't', b'1', b'/', b'1', b'2', 2, 6, 0xaa, 0xbb, 0xcc, 0,
            0, 1,
        ];
        let pkt = Builder::request(MAC)
            .giaddr([10, 0, 0, 1])
            .option(53, &[1])
            .option(82, &relay)
            .build();
        let p = parse(&pkt).unwrap();
        assert_eq!(p.relay_agent(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(p.circuit_id, Some(&b"Ethernet1/12"[..]));
        assert_eq!(p.remote_id, Some(&[0xaa, 0xbb, 0xcc, 0, 0, 1][..]));
    }

    #[test]
    fn pxe_vendor_classes_map_to_tinkerbell_arch() {
        for (class, code, expected) in [
            (&b"PXEClient:Arch:00000:UNDI:002001"[..], 0, ("x86_64", false)),
            (b"PXEClient:Arch:00007:UNDI:003016", 7, ("x86_64", true)),
            (b"PXEClient:Arch:00011:UNDI:003000", 11, ("aarch64", true)),
            (b"HTTPClient:Arch:00016:UNDI:003001", 16, ("x86_64", true)),
        ] {
            // Option 60 alone (some firmware sends no option 93).
            let pkt = Builder::request(MAC).option(53, &[1]).option(60, class).build();
            let p = parse(&pkt).unwrap();
            assert_eq!(p.arch_code(), Some(code));
            assert_eq!(tinkerbell_arch(code), Some(expected));
            assert!(p.is_netboot());
        }
        assert_eq!(tinkerbell_arch(10), None, "32-bit ARM has no Tinkerbell arch");
        let pkt = Builder::request(MAC)
            .option(53, &[1])
            .option(60, b"udhcp 1.35.0")
            .build();
        let udhcpc = parse(&pkt).unwrap();
        assert!(!udhcpc.is_netboot());
        assert_eq!(udhcpc.arch_code(), None);
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        assert_eq!(parse(&[1, 1, 6]), Err(Error::Truncated));
        let mut bad_cookie = Builder::request(MAC).build();
        bad_cookie[236] = 0;
        assert_eq!(parse(&bad_cookie), Err(Error::BadCookie));
        let mut runs_past = Builder::request(MAC).option(12, b"abc").build();
        runs_past.truncate(runs_past.len() - 2);
        assert_eq!(parse(&runs_past), Err(Error::Truncated));
        assert_eq!(
            parse(&Builder::request(MAC).option(53, &[1, 2]).build()),
            Err(Error::BadOption)
        );
        assert_eq!(
            parse(&Builder::request(MAC).option(93, &[7]).build()),
            Err(Error::BadOption)
        );
        let relay_past = Builder::request(MAC).option(82, &[1, 50, b'x']).build();
        assert_eq!(parse(&relay_past), Err(Error::Truncated));
        // hlen larger than chaddr is capped, not trusted.
        let mut big_hlen = Builder::request(MAC).build();
        big_hlen[2] = 255;
        assert_eq!(parse(&big_hlen).unwrap().chaddr.len(), 16);
        // BOOTP without options.
        assert_eq!(parse(&[0u8; 236]).unwrap().msg_type, None);
    }
}
