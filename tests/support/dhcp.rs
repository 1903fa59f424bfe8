//! DHCP requests as machines on the provisioning network send them.

/// A PXE DISCOVER from `mac`.
pub fn discover(mac: [u8; 6]) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[28..34].copy_from_slice(&mac);
    b.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1]);
    b.extend_from_slice(&[60, 9]);
    b.extend_from_slice(b"PXEClient");
    b.push(255);
    b
}

pub fn spoofed(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x66, b[0], b[1], b[2], b[3]]
}

pub fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
