//! DHCP requests as machines on the provisioning network send them.

/// A PXE DISCOVER from `mac`.
pub fn discover(mac: [u8; 6]) -> Vec<u8> {
    request(mac, b"PXEClient", None)
}

/// A BOOTREQUEST as a PXE ROM sends it: its vendor class, and where a relay forwarded it,
/// the relay's address and option 82's circuit id.
pub fn request(mac: [u8; 6], vendor_class: &[u8], relay: Option<([u8; 4], &[u8])>) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[28..34].copy_from_slice(&mac);
    b.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1]);
    b.push(60);
    b.push(vendor_class.len() as u8);
    b.extend_from_slice(vendor_class);
    if let Some((giaddr, port)) = relay {
        b[24..28].copy_from_slice(&giaddr);
        b.extend_from_slice(&[82, port.len() as u8 + 2, 1, port.len() as u8]);
        b.extend_from_slice(port);
    }
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
