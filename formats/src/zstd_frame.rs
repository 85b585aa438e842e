//! The one bounded zstd decoder of the built-in formats (single values, chunk blocks, SQLite
//! values and blocks), and the contexts their encoders use.
//!
//! Decoding one frame: restore the magic number if the format does not store it, check the
//! size the frame will decompress to against what the caller trusts (a length field it read, or
//! an upper bound), decompress, and compare. Nothing is allocated from a length field alone:
//! the output starts at most 8 times the size of the frame and grows (doubling) only while zstd
//! actually produces bytes, never past the expected size plus one byte (which shows that the
//! frame holds more than expected). zstd's window is limited to the expected size.

use std::fmt;

use milonga_sdk::{Error, Result};
use zstd::zstd_safe::{
    self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer, ResetDirective,
};

/// The first bytes of every zstd frame (magic number `0xFD2FB528`, little-endian). Legacy and
/// skippable frames, which zstd would also accept, are refused.
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The most a zstd frame can expand: every block (at most 128 KiB of output) takes at least 4
/// bytes (a 3-byte header and one byte of an RLE block).
const MAX_RATIO: u64 = (128 << 10) / 4;

/// How much the output buffer grows at least when it is full.
const GROW_MIN: usize = 64 << 10;

/// The most bytes a zstd frame of `frame_len` bytes can decompress to, whatever its header
/// claims.
pub(crate) fn frame_capacity(frame_len: usize) -> u64 {
    (frame_len as u64).saturating_mul(MAX_RATIO)
}

/// Whether the stored bytes start with the zstd magic number or leave it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Magic {
    /// The stored bytes are a whole frame.
    Stored,
    /// The stored bytes are a frame without its 4 magic bytes (put back before decoding).
    Stripped,
}

/// What the caller trusts about the size a frame decompresses to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Exactly this many bytes, as a length field the caller read says.
    Exactly(u64),
    /// The size in the frame's header, which must be there and be at most this many bytes.
    AtMost(u64),
}

/// Why a frame does not decode: `at` is the offset in the stored bytes the problem was found
/// at, or `None` when the expected size is wrong (the caller's length field or bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameError {
    /// Offset in the stored bytes, or `None` for the expected size.
    pub(crate) at: Option<usize>,
    /// What is wrong.
    pub(crate) reason: String,
}

impl FrameError {
    fn at(at: usize, reason: impl Into<String>) -> Self {
        FrameError {
            at: Some(at),
            reason: reason.into(),
        }
    }

    fn size(reason: impl Into<String>) -> Self {
        FrameError {
            at: None,
            reason: reason.into(),
        }
    }

    /// A `Corrupt` error in `file`: at offset `start + at` for a problem in the frame (whose
    /// stored bytes start at `start`), at `size_at` for the expected size.
    pub(crate) fn corrupt(&self, file: &str, start: u64, size_at: u64) -> Error {
        let offset = match self.at {
            Some(at) => start.saturating_add(at as u64),
            None => size_at,
        };
        Error::corrupt(file, offset, self.reason.clone())
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A reusable zstd decompression context, with a dictionary or without.
pub(crate) struct FrameDecoder {
    dctx: Option<DCtx<'static>>,
    dictionary: Vec<u8>,
    /// The frame with its magic put back, for [`Magic::Stripped`].
    frame: Vec<u8>,
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("dictionary_len", &self.dictionary.len())
            .finish()
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder without a dictionary (its context is allocated on first use).
    pub(crate) fn new() -> Self {
        FrameDecoder {
            dctx: None,
            dictionary: Vec::new(),
            frame: Vec::new(),
        }
    }

    /// A decoder with `dictionary` (none if empty); an unusable dictionary (read from `file`)
    /// is `Corrupt`.
    pub(crate) fn with_dictionary(dictionary: &[u8], file: &str) -> Result<Self> {
        let mut d = FrameDecoder {
            dictionary: dictionary.to_vec(),
            ..Self::new()
        };
        d.context().map_err(|e| Error::corrupt(file, 0, e.reason))?;
        Ok(d)
    }

    fn context(&mut self) -> std::result::Result<&mut DCtx<'static>, FrameError> {
        let dctx = match &mut self.dctx {
            Some(d) => d,
            slot => {
                let mut d = DCtx::try_create()
                    .ok_or_else(|| FrameError::at(0, "cannot allocate a zstd context"))?;
                if !self.dictionary.is_empty() {
                    d.load_dictionary(&self.dictionary).map_err(|c| {
                        FrameError::at(
                            0,
                            format!(
                                "the zstd dictionary is unusable: {}",
                                zstd_safe::get_error_name(c)
                            ),
                        )
                    })?;
                }
                slot.insert(d)
            }
        };
        Ok(dctx)
    }

    /// Decompresses `stored`, which must be exactly one zstd frame of the expected size, and
    /// appends its bytes to `out` (on an error, `out` keeps its length but its spare capacity
    /// may have grown).
    pub(crate) fn decode(
        &mut self,
        stored: &[u8],
        magic: Magic,
        expect: Expect,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), FrameError> {
        let start = out.len();
        let r = self.decode_inner(stored, magic, expect, out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn decode_inner(
        &mut self,
        stored: &[u8],
        magic: Magic,
        expect: Expect,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), FrameError> {
        // Offsets in the frame, less `shift`, are offsets in the stored bytes.
        let shift = match magic {
            Magic::Stored => 0,
            Magic::Stripped => ZSTD_MAGIC.len(),
        };
        let mut frame = std::mem::take(&mut self.frame);
        let whole: &[u8] = match magic {
            Magic::Stored => stored,
            Magic::Stripped => {
                frame.clear();
                frame.extend_from_slice(&ZSTD_MAGIC);
                frame.extend_from_slice(stored);
                &frame
            }
        };
        let r = self.decode_frame(whole, expect, out).map_err(|mut e| {
            e.at = e.at.map(|at| at.saturating_sub(shift));
            e
        });
        self.frame = frame;
        r
    }

    fn decode_frame(
        &mut self,
        frame: &[u8],
        expect: Expect,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), FrameError> {
        if frame.len() < ZSTD_MAGIC.len() {
            return Err(FrameError::at(
                frame.len(),
                format!("truncated: the zstd frame has {} bytes", frame.len()),
            ));
        }
        if !frame.starts_with(&ZSTD_MAGIC) {
            return Err(FrameError::at(0, "not a zstd frame (bad magic number)"));
        }
        let possible = frame_capacity(frame.len());
        let header = zstd_safe::get_frame_content_size(frame);
        let declared = match expect {
            Expect::Exactly(n) => n,
            Expect::AtMost(bound) => match header {
                Ok(Some(n)) if n <= bound => n,
                Ok(Some(n)) => {
                    return Err(FrameError::size(format!(
                        "the zstd frame claims {n} bytes, more than the {bound} it may hold"
                    )))
                }
                Ok(None) => return Err(FrameError::at(0, "zstd frame without a content size")),
                Err(_) => {
                    return Err(FrameError::at(
                        0,
                        "not a zstd frame (its header is damaged or cut short)",
                    ))
                }
            },
        };
        let declared = match usize::try_from(declared) {
            Ok(n) if declared <= possible => n,
            _ => {
                return Err(FrameError::size(format!(
                    "the length field says {declared} bytes, more than a zstd frame of {} bytes \
                     can hold",
                    frame.len()
                )))
            }
        };
        let zstd_error = |at: usize, code| {
            FrameError::at(at, format!("zstd: {}", zstd_safe::get_error_name(code)))
        };
        let dctx = self.context()?;
        // Forget any frame an earlier error left half decoded; keeps the dictionary.
        dctx.reset(ResetDirective::SessionOnly)
            .map_err(|code| zstd_error(0, code))?;
        let start = out.len();
        let first_reservation = frame.len().saturating_mul(8);
        // The fast path, for a frame whose header agrees with the expected size and that fits
        // the output's first reservation (as a frame of a typical ratio does): one call, into
        // exactly that many bytes. Anything else takes the checked, growing path below.
        if matches!(header, Ok(Some(h)) if h == declared as u64)
            && declared <= first_reservation
            && zstd_safe::find_frame_compressed_size(frame) == Ok(frame.len())
        {
            out.reserve_exact(declared);
            let mut cursor = std::io::Cursor::new(&mut *out);
            cursor.set_position(start as u64);
            let produced = dctx
                .decompress(&mut cursor, frame)
                .map_err(|code| zstd_error(0, code))?;
            if produced == declared && out.len() == start + declared {
                return Ok(());
            }
            return Err(FrameError::size(format!(
                "the length field says {declared} bytes, the zstd frame holds {produced}"
            )));
        }
        // A frame of `declared` bytes needs a window of at most max(1 KiB, declared), and never
        // more than 2^27 (zstd's default limit, enough for level 22).
        let window_log = usize::BITS - declared.saturating_sub(1).leading_zeros();
        dctx.set_parameter(DParameter::WindowLogMax(window_log.clamp(10, 27)))
            .map_err(|code| zstd_error(0, code))?;

        let limit = declared + 1;
        out.reserve(limit.min(first_reservation));
        let mut input = InBuffer::around(frame);
        loop {
            let produced = out.len() - start;
            if out.len() == out.capacity() {
                let grow = produced.max(GROW_MIN).min(limit - produced);
                out.reserve_exact(grow);
            }
            let before = out.len();
            let hint = dctx
                .decompress_stream(&mut OutBuffer::around_pos(out, before), &mut input)
                .map_err(|code| zstd_error(input.pos(), code))?;
            if out.len() - start > declared {
                return Err(FrameError::size(format!(
                    "the zstd frame holds more than the {declared} bytes of the length field"
                )));
            }
            if hint == 0 {
                break; // The end of the frame.
            }
            if input.pos() == frame.len() && out.len() < out.capacity() {
                // All the input is in and zstd had room but wants more: the frame is cut short.
                return Err(FrameError::at(
                    frame.len(),
                    format!(
                        "truncated: the zstd frame ends early ({} of {declared} bytes decompressed)",
                        out.len() - start
                    ),
                ));
            }
        }
        if input.pos() < frame.len() {
            return Err(FrameError::at(
                input.pos(),
                format!(
                    "{} trailing bytes after the zstd frame",
                    frame.len() - input.pos()
                ),
            ));
        }
        let produced = out.len() - start;
        if produced != declared {
            return Err(FrameError::size(format!(
                "the length field says {declared} bytes, the zstd frame holds {produced}"
            )));
        }
        // zstd's streaming decoder does not always hold a frame to the size in its own header
        // (a last block that ends early is accepted): the header is a claim too.
        if let Ok(Some(claimed)) = header {
            if claimed != produced as u64 {
                return Err(FrameError::at(
                    0,
                    format!(
                        "the zstd frame's header says {claimed} bytes, its blocks hold {produced}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn zstd_err(file: &str, what: &str, code: usize) -> Error {
    Error::Encode {
        what: format!("{file} ({what})"),
        reason: zstd_safe::get_error_name(code).to_owned(),
    }
}

/// A zstd compression context at `level`, with a frame checksum if `checksum`, the content size
/// in the frame header, no dictionary id, and `dictionary` loaded if not empty.
pub(crate) fn zstd_cctx(
    level: i32,
    dictionary: &[u8],
    checksum: bool,
    file: &str,
) -> Result<CCtx<'static>> {
    let mut cctx = CCtx::try_create().ok_or_else(|| Error::Encode {
        what: file.to_owned(),
        reason: "cannot allocate a zstd context".into(),
    })?;
    for p in [
        CParameter::CompressionLevel(level),
        CParameter::ChecksumFlag(checksum),
        CParameter::ContentSizeFlag(true),
        CParameter::DictIdFlag(false),
    ] {
        cctx.set_parameter(p)
            .map_err(|c| zstd_err(file, "zstd parameter", c))?;
    }
    if !dictionary.is_empty() {
        cctx.load_dictionary(dictionary)
            .map_err(|c| zstd_err(file, "zstd dictionary", c))?;
    }
    Ok(cctx)
}

/// Compresses `raw` with `cctx` into `out` (cleared first) and returns the frame without its
/// magic number (which [`Magic::Stripped`] puts back).
pub(crate) fn compress_stripped<'a>(
    cctx: &mut CCtx<'static>,
    raw: &[u8],
    out: &'a mut Vec<u8>,
    file: &str,
) -> Result<&'a [u8]> {
    out.clear();
    out.reserve(zstd_safe::compress_bound(raw.len()));
    cctx.compress2(out, raw)
        .map_err(|c| zstd_err(file, "zstd", c))?;
    match out.get(ZSTD_MAGIC.len()..) {
        Some(rest) if out.starts_with(&ZSTD_MAGIC) => Ok(rest),
        _ => Err(Error::Encode {
            what: file.to_owned(),
            reason: "zstd produced a frame without its magic number".into(),
        }),
    }
}

/// The raw-content dictionary the fuzz entry point compresses with (when its control byte asks
/// for one).
const FUZZ_DICTIONARY: &[u8] = b"milonga zstd dictionary: the quick brown fox jumps over the \
    lazy dog, 0123456789, {\"key\":\"value\",\"n\":[1,2,3]}\n";

/// The fuzz entry point of the bounded zstd decoder (`milonga_formats::fuzz_zstd_frame`, which
/// the `chunk` fuzz target calls): checks `FrameDecoder::decode`'s promises on one input.
///
/// The first byte picks the case: bit 0 a frame stored without its magic number, bit 1 the
/// dictionary `FUZZ_DICTIONARY`, bit 2 a valid frame made here (bits 3-4 pick the zstd level,
/// bit 5 a frame checksum) from a body taken from the input and then patched by the rest of the
/// input (3 bytes per patch: a `u16` offset and a byte to XOR there), otherwise the rest of the
/// input after a `u16` expected length is the stored frame; bits 6-7 pick what the caller
/// expects (exactly the length, one more byte, at most the length, at most 1 GiB).
///
/// The promises: decoding never panics; on an error `out` is left as it was and a reported
/// offset is within the stored bytes; a decoded frame has the expected size, is what zstd's own
/// decoder makes of the same frame, and decodes the same again with the same (reused) context;
/// an unpatched frame decodes to its body whenever the expectation allows it.
///
/// # Panics
/// When one of the promises is broken: that is what the fuzzer looks for.
#[allow(clippy::missing_panics_doc)]
pub fn fuzz_frame(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let magic = if ctl & 1 == 1 {
        Magic::Stripped
    } else {
        Magic::Stored
    };
    let dictionary: &[u8] = if ctl & 2 == 2 { FUZZ_DICTIONARY } else { &[] };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len));
    // A valid frame of a body from the input, patched; or the input as it is.
    let (stored, body) = if ctl & 4 == 4 {
        let (body, patches) = rest.split_at(len.min(rest.len()));
        let level = match ctl >> 3 & 3 {
            0 => -1,
            1 => 1,
            2 => 3,
            _ => 9,
        };
        let Ok(mut cctx) = zstd_cctx(level, dictionary, ctl & 0x20 != 0, "fuzz") else {
            return;
        };
        let mut frame = Vec::new();
        if compress_stripped(&mut cctx, body, &mut frame, "fuzz").is_err() {
            return;
        }
        if magic == Magic::Stripped {
            frame.drain(..ZSTD_MAGIC.len());
        }
        let mut patched = false;
        if !frame.is_empty() {
            for p in patches.chunks_exact(3) {
                if let [a, b, x] = *p {
                    let at = usize::from(u16::from_le_bytes([a, b])) % frame.len();
                    if let Some(byte) = frame.get_mut(at) {
                        *byte ^= x;
                        patched |= x != 0;
                    }
                }
            }
        }
        (frame, (!patched).then_some(body))
    } else {
        (rest.to_vec(), None)
    };
    let want = body.map_or(len, <[u8]>::len) as u64;
    let expect = match ctl >> 6 {
        0 => Expect::Exactly(want),
        1 => Expect::Exactly(want + 1),
        2 => Expect::AtMost(want),
        _ => Expect::AtMost(1 << 30),
    };
    let Ok(mut decoder) = FrameDecoder::with_dictionary(dictionary, "fuzz") else {
        return;
    };
    let decode = |decoder: &mut FrameDecoder| {
        let mut out = b"kept".to_vec();
        let r = decoder.decode(&stored, magic, expect, &mut out);
        assert!(
            out.starts_with(b"kept"),
            "decode changed the bytes before its output"
        );
        let produced = out.split_off(4);
        match r {
            Ok(()) => Ok(produced),
            Err(e) => {
                assert!(
                    produced.is_empty(),
                    "an error left {} bytes",
                    produced.len()
                );
                if let Some(at) = e.at {
                    assert!(
                        at <= stored.len(),
                        "offset {at} past {} bytes",
                        stored.len()
                    );
                }
                Err(e)
            }
        }
    };
    let first = decode(&mut decoder);
    // The same context again (after an error, too) gives the same answer: the same bytes, or
    // an error again. (Only zstd's words for an error may differ: after a failed frame, a
    // context can report the next failure of the same damaged frame as another zstd error.)
    match (&first, decode(&mut decoder)) {
        (Ok(a), Ok(b)) => assert!(*a == b, "a reused context decodes to other bytes"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("a reused context decodes differently: {a:?}, then {b:?}"),
    }
    match (&first, body) {
        (Ok(out), _) => {
            match expect {
                Expect::Exactly(n) => assert_eq!(out.len() as u64, n, "not the expected size"),
                Expect::AtMost(n) => assert!(out.len() as u64 <= n, "more than the bound"),
            }
            let mut whole = match magic {
                Magic::Stored => Vec::new(),
                Magic::Stripped => ZSTD_MAGIC.to_vec(),
            };
            whole.extend_from_slice(&stored);
            // zstd's own streaming decoder (the one-shot decoder is stricter about a few
            // frames, such as an empty compressed last block, that both decode to nothing).
            let reference = zstd::stream::read::Decoder::with_dictionary(&whole[..], dictionary)
                .and_then(|d| {
                    let mut r = Vec::new();
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(d, out.len() as u64 + 1),
                        &mut r,
                    )
                    .map(|_| r)
                });
            match reference {
                Ok(r) => assert!(
                    r == *out,
                    "zstd's own decoder makes other bytes of the frame"
                ),
                Err(e) => panic!("zstd's own decoder refuses a frame that decoded: {e}"),
            }
            if let Some(body) = body {
                assert!(out == body, "an unpatched frame decodes to other bytes");
            }
        }
        (Err(e), Some(body)) => {
            let fits = match expect {
                Expect::Exactly(n) => n == body.len() as u64,
                Expect::AtMost(n) => n >= body.len() as u64,
            };
            assert!(
                !fits,
                "an unpatched frame of {} bytes fails: {e}",
                body.len()
            );
        }
        (Err(_), None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(
        stored: &[u8],
        magic: Magic,
        expect: Expect,
    ) -> std::result::Result<Vec<u8>, FrameError> {
        let mut out = b"kept".to_vec();
        FrameDecoder::new().decode(stored, magic, expect, &mut out)?;
        assert_eq!(&out[..4], b"kept");
        Ok(out[4..].to_vec())
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        zstd::bulk::compress(body, 3).unwrap()
    }

    #[test]
    fn a_frame_whose_blocks_hold_less_than_its_header_says_is_an_error() {
        // Found by the fuzzer: a single-segment frame claiming 183 bytes whose one (last, raw)
        // block holds none. zstd's streaming decoder stops without an error.
        let stored = [0x20, 0xb7, 0x01, 0x00, 0x00];
        let e = decode(&stored, Magic::Stripped, Expect::Exactly(0)).unwrap_err();
        assert_eq!(e.at, Some(0), "{e}");
        assert!(e.reason.contains("header says 183 bytes"), "{e}");
        // Trusting the header's size, the blocks fall short of it.
        assert!(decode(&stored, Magic::Stripped, Expect::AtMost(1000)).is_err());
        let mut whole = ZSTD_MAGIC.to_vec();
        whole.extend_from_slice(&stored);
        assert!(decode(&whole, Magic::Stored, Expect::Exactly(0)).is_err());
    }

    #[test]
    fn the_fuzz_entry_point_holds_for_valid_and_damaged_frames() {
        let body: Vec<u8> = (0..600u32).map(|i| (i % 13) as u8).collect();
        for ctl in 0..=255u8 {
            let mut input = vec![ctl];
            input.extend_from_slice(&(body.len() as u16).to_le_bytes());
            input.extend_from_slice(&body);
            super::fuzz_frame(&input);
            // One patch in the frame's header, one in its blocks.
            input.extend_from_slice(&[2, 0, 0x40, 9, 0, 0xff]);
            super::fuzz_frame(&input);
        }
    }

    #[test]
    fn whole_and_stripped_frames_decode_to_exactly_their_bytes() {
        let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let f = frame(&body);
        assert_eq!(
            decode(&f, Magic::Stored, Expect::Exactly(5000)).unwrap(),
            body
        );
        assert_eq!(
            decode(&f, Magic::Stored, Expect::AtMost(5000)).unwrap(),
            body
        );
        assert_eq!(
            decode(&f[4..], Magic::Stripped, Expect::AtMost(1 << 20)).unwrap(),
            body
        );
        assert_eq!(
            decode(&frame(b""), Magic::Stored, Expect::Exactly(0)).unwrap(),
            b""
        );
    }

    #[test]
    fn a_wrong_size_is_an_error_about_the_size() {
        let f = frame(&[7u8; 3000]);
        for expect in [
            Expect::Exactly(2999),
            Expect::Exactly(3001),
            Expect::AtMost(2999),
        ] {
            let e = decode(&f, Magic::Stored, expect).unwrap_err();
            assert_eq!(e.at, None, "{expect:?}: {e}");
        }
        // More than the frame could ever hold: refused before anything is decompressed.
        let e = decode(&f, Magic::Stored, Expect::Exactly(u64::MAX)).unwrap_err();
        assert!(e.reason.contains("can hold"), "{e}");
    }

    #[test]
    fn damaged_frames_are_errors_at_their_offset() {
        let f = frame(&[1u8; 1000]);
        let e = decode(&f[..2], Magic::Stored, Expect::Exactly(1000)).unwrap_err();
        assert_eq!(e.at, Some(2));
        let mut bad = f.clone();
        bad[0] ^= 1;
        assert_eq!(
            decode(&bad, Magic::Stored, Expect::Exactly(1000))
                .unwrap_err()
                .at,
            Some(0)
        );
        let cut = decode(&f[..f.len() - 1], Magic::Stored, Expect::Exactly(1000)).unwrap_err();
        assert!(
            cut.reason.contains("truncated") || cut.reason.contains("zstd"),
            "{cut}"
        );
        let two = [&f[..], &f[..]].concat();
        let e = decode(&two, Magic::Stored, Expect::Exactly(1000)).unwrap_err();
        assert_eq!(e.at, Some(f.len()));
        assert!(e.reason.contains("trailing"), "{e}");
        // Offsets of a stripped frame count from its stored bytes.
        let e = decode(
            &[&f[4..], b"xy"].concat(),
            Magic::Stripped,
            Expect::Exactly(1000),
        );
        assert_eq!(e.unwrap_err().at, Some(f.len() - 4));
    }

    #[test]
    fn a_decoder_goes_on_after_an_error() {
        let f = frame(&[9u8; 100_000]);
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        assert!(d
            .decode(
                &f[..f.len() / 2],
                Magic::Stored,
                Expect::Exactly(100_000),
                &mut out
            )
            .is_err());
        assert!(out.is_empty());
        d.decode(&f, Magic::Stored, Expect::Exactly(100_000), &mut out)
            .unwrap();
        assert_eq!(out, vec![9u8; 100_000]);
    }

    #[test]
    fn dictionaries_are_used_and_bad_ones_refused() {
        let samples: Vec<Vec<u8>> = (0..200u32)
            .map(|i| {
                format!("{{\"id\":{i},\"name\":\"item number {i}\",\"ok\":true}}").into_bytes()
            })
            .collect();
        let dict = zstd::dict::from_samples(&samples, 4096).unwrap();
        let mut cctx = zstd_cctx(3, &dict, false, "t").unwrap();
        let mut buf = Vec::new();
        let stored = compress_stripped(&mut cctx, &samples[5], &mut buf, "t")
            .unwrap()
            .to_vec();
        let mut d = FrameDecoder::with_dictionary(&dict, "t").unwrap();
        let mut out = Vec::new();
        d.decode(&stored, Magic::Stripped, Expect::AtMost(100), &mut out)
            .unwrap();
        assert_eq!(out, samples[5]);
        // Without the dictionary the frame does not decode.
        assert!(decode(&stored, Magic::Stripped, Expect::AtMost(100)).is_err());
        assert!(FrameDecoder::with_dictionary(b"\x37\xa4\x30\xecgarbage", "t").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_decode_or_fail_never_panic(
            bytes: Vec<u8>,
            stripped: bool,
            size in 0u64..1 << 20,
            exact: bool,
        ) {
            let magic = if stripped { Magic::Stripped } else { Magic::Stored };
            let expect = if exact { Expect::Exactly(size) } else { Expect::AtMost(size) };
            if let Ok(out) = decode(&bytes, magic, expect) {
                prop_assert!(out.len() as u64 <= size);
            }
        }

        #[test]
        fn damaged_real_frames_decode_or_fail_never_panic(
            body in proptest::collection::vec(0u8..4, 0..4000),
            at: usize,
            bit in 0u8..8,
            cut: usize,
        ) {
            let mut f = frame(&body);
            let i = at % f.len();
            f[i] ^= 1 << bit;
            f.truncate(f.len() - cut % 3);
            if let Ok(out) = decode(&f, Magic::Stored, Expect::Exactly(body.len() as u64)) {
                prop_assert_eq!(out.len(), body.len());
            }
        }
    }
}
