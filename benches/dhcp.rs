//! DHCP snooping throughput: parse + filter + debounce + known-MAC check, on one core, over a
//! generated capture of 1,000,000 requests from 10,000 MACs; beside it, tshark decoding the
//! same capture (when installed). Run: `cargo bench --bench dhcp` (see docs/benchmarks.md).
//! Options: `-- --packets N --macs N`.

#[path = "support/args.rs"]
mod args;

use args::arg;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registrar::domain::KnownMacs;
use registrar::sources::dhcp::{Debouncer, Filters, Outcome, Snooper};

/// A request as clients send them, varied the way a rack is: BIOS, UEFI and ARM PXE ROMs,
/// iPXE, an installed OS renewing; a third relayed with option 82.
fn request(i: usize, mac_index: usize) -> Vec<u8> {
    let mac = [
        0x02,
        0x42,
        0,
        (mac_index >> 16) as u8,
        (mac_index >> 8) as u8,
        mac_index as u8,
    ];
    let mut b = vec![0u8; 236];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&(i as u32).to_be_bytes());
    b[28..34].copy_from_slice(&mac);
    b.extend_from_slice(&[99, 130, 83, 99, 53, 1, if i % 4 == 3 { 3 } else { 1 }]);
    let class: &[u8] = match mac_index % 4 {
        0 => b"PXEClient:Arch:00000:UNDI:002001",
        1 => b"PXEClient:Arch:00007:UNDI:003016",
        2 => b"PXEClient:Arch:00011:UNDI:003000",
        _ => b"udhcp 1.35.0",
    };
    b.extend_from_slice(&[60, class.len() as u8]);
    b.extend_from_slice(class);
    b.extend_from_slice(&[61, 7, 1]);
    b.extend_from_slice(&mac);
    if mac_index % 4 != 3 {
        b.extend_from_slice(&[93, 2, 0, [0, 7, 11][mac_index % 3], 77, 4, b'i', b'P', b'X', b'E']);
    }
    b.extend_from_slice(&[12, 10]);
    b.extend_from_slice(format!("node{:06}", mac_index % 1_000_000).as_bytes());
    if mac_index.is_multiple_of(3) {
        b[24..28].copy_from_slice(&[10, 0, (mac_index >> 8) as u8, 1]);
        let port = format!("Ethernet1/{}", mac_index % 48);
        b.extend_from_slice(&[82, port.len() as u8 + 2, 1, port.len() as u8]);
        b.extend_from_slice(port.as_bytes());
    }
    b.extend_from_slice(&[55, 4, 1, 3, 6, 15, 255]);
    b
}

/// Ethernet + IPv4 + UDP around each payload, in a classic pcap file.
fn write_pcap(path: &std::path::Path, payloads: &[Vec<u8>]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&[
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ])
    .unwrap();
    for (i, p) in payloads.iter().enumerate() {
        let udp_len = 8 + p.len();
        let ip_len = 20 + udp_len;
        let frame_len = 14 + ip_len;
        let mut rec = Vec::with_capacity(16 + frame_len);
        rec.extend_from_slice(&((i / 1000) as u32).to_le_bytes());
        rec.extend_from_slice(&((i % 1000 * 1000) as u32).to_le_bytes());
        rec.extend_from_slice(&(frame_len as u32).to_le_bytes());
        rec.extend_from_slice(&(frame_len as u32).to_le_bytes());
        rec.extend_from_slice(&[0xff; 6]);
        rec.extend_from_slice(&p[28..34]);
        rec.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            0,
            0,
            0,
            0,
            255,
            255,
            255,
            255,
        ];
        let sum = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        rec.extend_from_slice(&ip);
        rec.extend_from_slice(&[0, 68, 0, 67, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
        rec.extend_from_slice(p);
        f.write_all(&rec).unwrap();
    }
    f.flush().unwrap();
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let packets = arg("--packets", 1_000_000);
    let macs = arg("--macs", 10_000);
    // Interleaved as a storm looks: every machine retrying, in turn.
    let payloads: Vec<Vec<u8>> = (0..packets).map(|i| request(i, i % macs)).collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();

    let mut best = Duration::MAX;
    let mut seen = 0;
    let mut tracked = 0;
    let rss_before = rss_mb();
    for _ in 0..3 {
        let mut snooper = Snooper::new(
            Filters::default(),
            Debouncer::new(Duration::from_secs(60), 65_536, Instant::now()),
            Arc::new(KnownMacs::default()),
        );
        let started = Instant::now();
        let mut new = 0;
        for p in &payloads {
            if let Outcome::Seen(..) = std::hint::black_box(snooper.observe(p, Instant::now())) {
                new += 1;
            }
        }
        best = best.min(started.elapsed());
        seen = new;
        tracked = snooper.tracked();
    }
    let rate = packets as f64 / best.as_secs_f64();
    println!("| what | packets | distinct MACs | time (s) | packets/s |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| Registrar parse + filter + debounce (1 core, best of 3) | {packets} | {macs} | {:.3} | {:.0} |",
        best.as_secs_f64(),
        rate
    );
    assert_eq!(seen, macs, "each MAC passed on exactly once");

    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("dhcp.pcap");
    write_pcap(&pcap, &payloads);
    let has_tshark = std::process::Command::new("sh")
        .args(["-c", "command -v tshark"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if has_tshark {
        let started = Instant::now();
        let out = std::process::Command::new("tshark")
            .args([
                "-r",
                pcap.to_str().unwrap(),
                "-n",
                "-T",
                "fields",
                "-e",
                "dhcp.hw.mac_addr",
            ])
            .output()
            .unwrap();
        let took = started.elapsed();
        let decoded = out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
        assert_eq!(
            decoded,
            packets,
            "tshark decoded every packet: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "| tshark -T fields -e dhcp.hw.mac_addr (same capture) | {packets} | {macs} | {:.3} | {:.0} |",
            took.as_secs_f64(),
            packets as f64 / took.as_secs_f64()
        );
    } else {
        println!("| tshark | not installed (apt-get install tshark) | | | |");
    }
    println!();
    println!(
        "Payload bytes: {:.1} MB; MACs passed on: {seen}; MACs the debounce holds at the end: {tracked} (bound: 2 × 65,536)",
        bytes as f64 / 1e6
    );
    println!(
        "Resident memory: {:.1} MB with the capture in memory ({:.1} MB before the snooping runs)",
        rss_mb(),
        rss_before
    );
}
