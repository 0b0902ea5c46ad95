//! Allocation bounds, measured with a counting allocator in this test binary only: hostile
//! lengths in a prefix or inside a body never reserve memory the input does not back.

mod common;

use hsm_protocol::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Records the largest single allocation made by the current thread since the last reset.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.with(|largest| largest.set(largest.get().max(layout.size())));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.with(|largest| largest.set(largest.get().max(new_size)));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// The largest allocation `work` makes on this thread.
fn largest_allocation(work: impl FnOnce()) -> usize {
    LARGEST.with(|largest| largest.set(0));
    work();
    LARGEST.with(|largest| largest.get())
}

#[test]
fn the_counter_sees_allocations() {
    let largest = largest_allocation(|| drop(std::hint::black_box(vec![0u8; 100_000])));
    assert!(largest >= 100_000);
}

#[test]
fn a_u32_max_prefix_is_refused_without_allocating() {
    let mut decoder = FrameDecoder::new();
    let largest = largest_allocation(|| {
        let err = decoder.push(&u32::MAX.to_be_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    len: 0xffff_ffff,
                    ..
                }
            ),
            "{err:?}"
        );
    });
    // The four prefix bytes themselves are all the decoder ever held.
    assert!(largest <= PREFIX_LEN, "largest allocation {largest} bytes");
    assert_eq!(decoder.capacity(), 0);
}

#[test]
fn an_announced_but_unsent_frame_costs_only_what_arrived() {
    let mut decoder = FrameDecoder::new();
    let largest = largest_allocation(|| {
        decoder.push(&(MAX_FRAME as u32).to_be_bytes()).unwrap();
        for _ in 0..100 {
            decoder.push(&[0u8; 10]).unwrap();
            assert_eq!(decoder.next_frame().unwrap(), None);
        }
    });
    assert!(
        largest <= 2 * (PREFIX_LEN + 1000),
        "largest allocation {largest} bytes"
    );
}

#[test]
fn huge_lengths_inside_a_body_are_not_trusted() {
    // A map {"Submit": ...} whose value claims u32::MAX bytes or elements, with nothing behind.
    let prefix = [0x81, 0xa6, b'S', b'u', b'b', b'm', b'i', b't'];
    for marker in [0xc6u8, 0xc9, 0xdb, 0xdd, 0xdf] {
        let mut body = prefix.to_vec();
        body.extend([marker, 0xff, 0xff, 0xff, 0xff]);
        let largest = largest_allocation(|| {
            assert!(decode::<ToAgent>(&body).is_err());
        });
        assert!(
            largest <= 64 * 1024,
            "marker {marker:#x}: largest allocation {largest} bytes"
        );
    }
    // Deeper, a list that claims u32::MAX tasks: serde reserves at most 1 MiB for a claimed
    // length (its `size_hint::cautious`), then fails at the end of the input.
    let mut body = prefix.to_vec();
    body.extend([0x83, 0xa8]);
    body.extend(b"sweep_id");
    body.extend([0xa1, b's', 0xa9]);
    body.extend(b"templates");
    body.extend([0x90, 0xa5]);
    body.extend(b"tasks");
    body.extend([0xdd, 0xff, 0xff, 0xff, 0xff]);
    let largest = largest_allocation(|| {
        let err = decode::<ToAgent>(&body).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
    });
    assert!(largest <= 1024 * 1024, "largest allocation {largest} bytes");
    // The same claim for output bytes, where the body is raw data.
    let mut body = vec![0x81, 0xa6];
    body.extend(b"Events");
    body.extend([0x81, 0xa6]);
    body.extend(b"events");
    body.extend([0x91, 0x84, 0xa4]);
    body.extend(b"kind");
    body.extend([0x81, 0xa6]);
    body.extend(b"Output");
    body.extend([0x82, 0xa4]);
    body.extend(b"data");
    body.extend([0xc6, 0xff, 0xff, 0xff, 0xff]);
    let largest = largest_allocation(|| {
        assert!(decode::<FromAgent>(&body).is_err());
    });
    assert!(largest <= 64 * 1024, "largest allocation {largest} bytes");
}
