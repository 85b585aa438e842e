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

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// The default cap on one allocation while the kit or the fuzzer reads: 1 GiB. A request above
/// it is refused by the metering allocator (see [`allocation_meter!`](crate::allocation_meter))
/// instead of being passed to the system, so that a lying length field fails at once, with a
/// report, rather than swapping or asking the system for petabytes.
pub const DEFAULT_ALLOCATION_CAP: usize = 1 << 30;

thread_local! {
    /// Whether this thread is metering, the largest request seen since it started, and the
    /// largest request the allocator may pass on while metering.
    static METER: (Cell<bool>, Cell<usize>, Cell<usize>) =
        const { (Cell::new(false), Cell::new(0), Cell::new(usize::MAX)) };
    /// What this thread is reading, printed if the allocator refuses a request (the process
    /// aborts right after: this is the only report that survives).
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// What is being read: a description and the files (empty when the caller keeps the input,
/// as libFuzzer does).
pub(crate) struct Context {
    pub(crate) what: String,
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// Set once a metering allocator has reported an allocation made while metering.
static SEEN: AtomicBool = AtomicBool::new(false);

/// Called by the allocator that [`allocation_meter!`](crate::allocation_meter) defines, for
/// every allocation or reallocation of `size` bytes. Returns `false` when the request must be
/// refused: the thread is metering and `size` is over its cap. Never allocates. Not meant to be
/// called by hand.
#[doc(hidden)]
#[inline]
pub fn record_allocation(size: usize) -> bool {
    // `try_with`: during thread teardown the slot may be gone; such allocations are not metered.
    METER
        .try_with(|(on, largest, cap)| {
            if !on.get() {
                return true;
            }
            if size > largest.get() {
                largest.set(size);
            }
            size <= cap.get()
        })
        .unwrap_or(true)
}

/// Called by the allocator that [`allocation_meter!`](crate::allocation_meter) defines when it
/// refuses a request (see [`record_allocation`]), just before it returns null and the process
/// aborts: writes to stderr what was being read, with the input's files in hex, so that a
/// parent process (the kit runs its checks in one, see
/// [`FormatCheck::with_isolation`](crate::testing::FormatCheck::with_isolation)) or a person can report it.
/// Writes from buffers that already exist. Not meant to be called by hand.
#[doc(hidden)]
#[cold]
pub fn allocation_refused(size: usize) {
    let cap = METER
        .try_with(|(on, _, cap)| {
            // Whatever is written below must not be refused in turn.
            on.set(false);
            cap.get()
        })
        .unwrap_or(0);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "{REFUSED_PREFIX} one allocation of {size} bytes (cap {cap}): a length field was trusted"
    );
    let _ = CONTEXT.try_with(|c| {
        if let Ok(c) = c.try_borrow() {
            if let Some(c) = c.as_ref() {
                let _ = writeln!(err, "{CONTEXT_PREFIX} {}", c.what);
                for (name, bytes) in &c.files {
                    let _ = write!(err, "{FILE_PREFIX} {} ", bytes.len());
                    let _ = write_hex(&mut err, name.as_bytes());
                    let _ = err.write_all(b" ");
                    let _ = write_hex(&mut err, bytes);
                    let _ = err.write_all(b"\n");
                }
            }
        }
    });
    let _ = err.flush();
}

/// The first line the allocator writes when it refuses a request.
pub(crate) const REFUSED_PREFIX: &str = "milonga-kit: refused";
/// The line that says what was being read.
pub(crate) const CONTEXT_PREFIX: &str = "milonga-kit: while reading";
/// One line per input file: its length, its name in hex, its bytes in hex.
pub(crate) const FILE_PREFIX: &str = "milonga-kit: file";

/// Hex without allocating: 64 bytes at a time through a stack buffer.
fn write_hex(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(64) {
        for (i, b) in chunk.iter().enumerate() {
            buf[2 * i] = DIGITS[usize::from(b >> 4)];
            buf[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        out.write_all(&buf[..2 * chunk.len()])?;
    }
    Ok(())
}

/// Runs `f` with `context` as what this thread is reading (printed if the allocator refuses a
/// request in `f`).
pub(crate) fn with_context<R>(context: Context, f: impl FnOnce() -> R) -> R {
    /// Puts the previous context back, also when `f` unwinds.
    struct Restore(Option<Context>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            let _ = CONTEXT.try_with(|c| *c.borrow_mut() = prev);
        }
    }
    let _restore = Restore(CONTEXT.with(|c| c.replace(Some(context))));
    f()
}

/// Runs `f` with metering on for this thread and returns its result and the largest single
/// allocation it made on this thread (0 if no meter is installed). Requests over `cap` are
/// refused by the meter (which aborts the process).
pub(crate) fn metered_capped<R>(cap: usize, f: impl FnOnce() -> R) -> (R, usize) {
    /// Puts the previous meter state back, also when `f` unwinds; keeps the largest request.
    struct Restore((bool, usize, usize));
    impl Drop for Restore {
        fn drop(&mut self) {
            let (on, largest, cap) = self.0;
            let _ = METER.try_with(|(o, l, c)| {
                o.set(on);
                l.set(largest.max(l.get()));
                c.set(cap);
            });
        }
    }
    let prev = METER.with(|(on, largest, c)| {
        let prev = (on.get(), largest.get(), c.get());
        on.set(true);
        largest.set(0);
        c.set(cap);
        prev
    });
    let restore = Restore(prev);
    let result = f();
    let largest = METER.with(|(_, largest, _)| largest.get());
    drop(restore);
    if largest > 0 {
        SEEN.store(true, Ordering::Relaxed);
    }
    (result, largest)
}

/// [`metered_capped`] with no cap.
pub(crate) fn metered<R>(f: impl FnOnce() -> R) -> (R, usize) {
    metered_capped(usize::MAX, f)
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
/// The meter only looks at the thread that runs a check, and only while the kit (or
/// [`FormatFuzzer`](crate::testing::fuzz::FormatFuzzer)) decodes; it costs one thread-local read
/// per allocation otherwise. While metering it also caps a single request (1 GiB by default,
/// [`DEFAULT_ALLOCATION_CAP`]): a bigger one is refused, after writing what was being read to
/// stderr, and Rust's allocation-failure handler aborts the process. The kit runs its checks in
/// a child process, so that abort becomes a reported failure with the input; under libFuzzer it
/// is a crash with the input saved.
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
                    if !$crate::testing::record_allocation(layout.size()) {
                        $crate::testing::allocation_refused(layout.size());
                        return ::std::ptr::null_mut();
                    }
                    // SAFETY: the caller's contract for `alloc` is passed on unchanged.
                    unsafe { System.alloc(layout) }
                }
                unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                    if !$crate::testing::record_allocation(layout.size()) {
                        $crate::testing::allocation_refused(layout.size());
                        return ::std::ptr::null_mut();
                    }
                    // SAFETY: as above.
                    unsafe { System.alloc_zeroed(layout) }
                }
                unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                    // SAFETY: `ptr` was allocated by `System` through this allocator.
                    unsafe { System.dealloc(ptr, layout) }
                }
                unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                    if !$crate::testing::record_allocation(new_size) {
                        $crate::testing::allocation_refused(new_size);
                        // The old block stays allocated, as `realloc`'s contract says on failure.
                        return ::std::ptr::null_mut();
                    }
                    // SAFETY: `ptr` was allocated by `System` with `layout`.
                    unsafe { System.realloc(ptr, layout, new_size) }
                }
            }

            #[global_allocator]
            static METER: Meter = Meter;
        }
    };
}
