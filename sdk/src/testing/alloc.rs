//! Allocation metering: how the kit sees an allocation driven by an unchecked length field.
//!
//! Counting allocations needs a global allocator, and a global allocator needs `unsafe`, which
//! this crate forbids. So the kit installs nothing itself: a test binary that wants the
//! allocation check says [`allocation_meter!`](crate::allocation_meter) once, which expands (in
//! the test crate) to a global allocator that forwards to [`std::alloc::System`] and reports
//! each request's size to [`record_allocation`]. The kit then meters every decode it runs on the
//! calling thread and fails a decode whose largest single allocation is bigger than the limit
//! ([`AllocationLimit`]). Without the macro the allocation check is skipped (and
//! [`meter_installed`] says so).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Whether this thread is metering, and the largest request seen since it started.
    static METER: (Cell<bool>, Cell<usize>) = const { (Cell::new(false), Cell::new(0)) };
}

/// Set once a metering allocator has reported an allocation made while metering.
static SEEN: AtomicBool = AtomicBool::new(false);

/// Called by the allocator that [`allocation_meter!`](crate::allocation_meter) defines, for
/// every allocation or reallocation of `size` bytes. Never allocates. Not meant to be called
/// by hand.
#[doc(hidden)]
#[inline]
pub fn record_allocation(size: usize) {
    // `try_with`: during thread teardown the slot may be gone; such allocations are not metered.
    let _ = METER.try_with(|(on, largest)| {
        if on.get() && size > largest.get() {
            largest.set(size);
        }
    });
}

/// Runs `f` with metering on for this thread and returns its result and the largest single
/// allocation it made on this thread (0 if no meter is installed).
pub(crate) fn metered<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let prev = METER.with(|(on, largest)| {
        let prev = (on.get(), largest.get());
        on.set(true);
        largest.set(0);
        prev
    });
    let result = f();
    let largest = METER.with(|(on, largest)| {
        let seen = largest.get();
        on.set(prev.0);
        largest.set(prev.1.max(seen));
        seen
    });
    if largest > 0 {
        SEEN.store(true, Ordering::Relaxed);
    }
    (result, largest)
}

/// Whether a metering allocator ([`allocation_meter!`](crate::allocation_meter)) is installed
/// in this process, so that the kit's allocation check is active.
pub fn meter_installed() -> bool {
    if SEEN.load(Ordering::Relaxed) {
        return true;
    }
    let (_, largest) = metered(|| std::hint::black_box(Vec::<u8>::with_capacity(64)));
    largest > 0
}

/// The largest single allocation a decode may make: `base` bytes plus `per_input_byte` for each
/// byte of input (the artifact's files, or the bytes given to a decoder).
///
/// The default, 4 MiB plus 64 bytes per input byte, lets decoders preallocate a bounded amount
/// (serde's cautious size hints stop at 1 MiB) and build values much bigger than their encoding
/// (a `Vec<String>` needs 24 bytes per 1-byte empty string), but refuses a length field that
/// claims gigabytes in a small file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationLimit {
    /// Bytes allowed whatever the input size.
    pub base: usize,
    /// Bytes allowed per byte of input.
    pub per_input_byte: usize,
}

impl Default for AllocationLimit {
    fn default() -> Self {
        AllocationLimit {
            base: 4 << 20,
            per_input_byte: 64,
        }
    }
}

impl AllocationLimit {
    /// The limit for `input_len` bytes of input.
    pub fn for_input(&self, input_len: usize) -> usize {
        self.base
            .saturating_add(self.per_input_byte.saturating_mul(input_len))
    }
}

/// Installs, in the test binary that invokes it, a global allocator that forwards to
/// [`std::alloc::System`] and reports allocation sizes to the test kit, which turns on the kit's
/// "no allocation driven by an unchecked length field" check.
///
/// Invoke it once, at the top level of an integration-test file (a crate that does not forbid
/// `unsafe_code`: the expansion contains the `unsafe impl GlobalAlloc`, the SDK itself stays
/// free of unsafe code):
///
/// ```ignore
/// milonga_sdk::allocation_meter!();
/// ```
///
/// The meter only looks at the thread that runs a check, and only while the kit decodes; it
/// costs one thread-local read per allocation otherwise. A request so large that the system
/// allocator refuses it still aborts the process (Rust's allocation-failure handler), which
/// fails the test run loudly rather than through the kit's report.
#[macro_export]
macro_rules! allocation_meter {
    () => {
        #[doc(hidden)]
        mod __milonga_allocation_meter {
            use ::std::alloc::{GlobalAlloc, Layout, System};

            pub struct Meter;

            // SAFETY: every method forwards to `System` with the caller's arguments unchanged;
            // `record_allocation` only reads and writes a const-initialized thread-local `Cell`
            // and never allocates, so it cannot re-enter the allocator.
            unsafe impl GlobalAlloc for Meter {
                unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                    $crate::testing::record_allocation(layout.size());
                    // SAFETY: the caller's contract for `alloc` is passed on unchanged.
                    unsafe { System.alloc(layout) }
                }
                unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                    $crate::testing::record_allocation(layout.size());
                    // SAFETY: as above.
                    unsafe { System.alloc_zeroed(layout) }
                }
                unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                    // SAFETY: `ptr` was allocated by `System` through this allocator.
                    unsafe { System.dealloc(ptr, layout) }
                }
                unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                    $crate::testing::record_allocation(new_size);
                    // SAFETY: `ptr` was allocated by `System` with `layout`.
                    unsafe { System.realloc(ptr, layout, new_size) }
                }
            }

            #[global_allocator]
            static METER: Meter = Meter;
        }
    };
}
