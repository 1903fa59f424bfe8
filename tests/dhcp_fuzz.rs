//! Any datagram, however broken, is parsed without panicking and without allocating.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use registrar::sources::dhcp::packet;

/// Counts this thread's allocations, so parallel tests do not disturb the count.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// A well-formed relayed PXE DISCOVER to mutate.
fn seed() -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[24..28].copy_from_slice(&[10, 0, 0, 1]);
    b[28..34].copy_from_slice(&[0x3c, 0xec, 0xef, 0x4c, 0x4f, 0x54]);
    b.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 12, 3, b'a', b'b', b'c']);
    b.extend_from_slice(&[60, 32]);
    b.extend_from_slice(b"PXEClient:Arch:00007:UNDI:003016");
    b.extend_from_slice(&[93, 2, 0, 7, 97, 17, 0]);
    b.extend_from_slice(&[7; 16]);
    b.extend_from_slice(&[82, 8, 1, 2, b'p', b'1', 2, 2, 0xaa, 0xbb, 255]);
    b
}

fn check(datagram: &[u8]) {
    let before = allocations();
    let parsed = packet::parse(datagram);
    if let Ok(p) = &parsed {
        let _ = (p.arch_code(), p.is_netboot(), p.relay_agent());
    }
    assert_eq!(allocations(), before, "parsing allocated");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        check(&data);
    }

    #[test]
    fn mutated_packets(flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..12), cut in 0usize..400) {
        let mut p = seed();
        for (i, v) in flips {
            if let Some(b) = p.get_mut(i) {
                *b = v;
            }
        }
        p.truncate(cut.max(1).min(p.len()));
        check(&p);
    }
}

#[test]
fn the_seed_itself_parses() {
    let p = seed();
    let parsed = packet::parse(&p).unwrap();
    assert_eq!(parsed.circuit_id, Some(&b"p1"[..]));
    check(&p);
    // The counter does see allocations on this thread.
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(allocations() > before);
    drop(v);
}
