//! Verified byte ranges: BLAKE3 outboards.
//!
//! BLAKE3 hashes a file as a binary tree of 1 KiB chunks; the root of that tree *is* the file's
//! hash, its [`ContentId`]. An **outboard** stores the tree's interior hashes, so that any byte
//! range can be checked against the content id by hashing only the parts of the file that cover
//! it (Bao verified streaming). milonga's outboards cut the tree at **chunk groups** of
//! [`GROUP_BYTES`] (16 KiB, 16 chunks): leaves are whole groups, so the outboard holds one
//! 64-byte pair of child hashes per interior node, `(groups - 1) × 64` bytes in all (0.39 % of
//! the data), in **post order** (each node after its children), the layout of `bao-tree`'s
//! `PostOrderMemOutboard` with a chunk-group log of 4. A file of at most one group has an empty
//! outboard: its range reads hash the whole (small) file.
//!
//! [`OutboardBuilder`] computes the content id and the outboard in one pass over data written
//! sequentially (the length need not be known in advance); [`verify_range`] returns a verified
//! byte range from any positional source. Both are built on the `blake3` crate's `hazmat`
//! subtree primitives (the same calls `bao-tree` makes); `docs/FORMAT.md` says why.

use std::ops::Range;

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::artifact::ContentId;
use crate::error::{Error, Result};

/// Bytes of data per leaf of the outboard tree: 16 chunks of 1 KiB.
pub const GROUP_BYTES: u64 = 16 * 1024;
/// log2 of the number of BLAKE3 chunks per group (the chunk-group log of `bao-tree`).
pub const GROUP_CHUNK_LOG: u8 = 4;
/// Bytes per stored node: the left and the right child's 32-byte hash.
pub const PAIR_LEN: u64 = 64;

/// The number of leaf groups of a file of `len` bytes (an empty file has one, empty, group).
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP_BYTES).max(1)
}

/// The length of the outboard of a file of `len` bytes: 64 bytes per interior node.
pub fn outboard_len(len: u64) -> u64 {
    (group_count(len) - 1) * PAIR_LEN
}

/// Computes a file's content id and its outboard while the file is written sequentially.
///
/// ```
/// use milonga_sdk::outboard::{verify_range, OutboardBuilder};
/// use milonga_sdk::ContentId;
///
/// let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
/// let mut b = OutboardBuilder::new();
/// b.update(&data[..1000]);
/// b.update(&data[1000..]);
/// let (id, outboard) = b.finish();
/// assert_eq!(id, ContentId::of(&data));
/// let got = verify_range(&data[..], data.len() as u64, &outboard[..], &id, 40_000..40_100, "example")
///     .unwrap();
/// assert_eq!(got, &data[40_000..40_100]);
/// ```
#[derive(Clone)]
pub struct OutboardBuilder {
    /// Hashes the current (last, possibly partial) group.
    group: blake3::Hasher,
    /// Bytes in the current group.
    filled: u64,
    /// Groups before the current one.
    done: u64,
    /// Chaining values of complete subtrees, left to right (sizes are decreasing powers of two).
    stack: Vec<ChainingValue>,
    outboard: Vec<u8>,
}

impl Default for OutboardBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for OutboardBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboardBuilder")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl OutboardBuilder {
    /// A builder for an empty file.
    pub fn new() -> Self {
        OutboardBuilder {
            group: blake3::Hasher::new(),
            filled: 0,
            done: 0,
            stack: Vec::new(),
            outboard: Vec::new(),
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.done * GROUP_BYTES + self.filled
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hashes the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.filled == GROUP_BYTES {
                // More data follows a full group: it is not the last one, so not the root.
                self.close_group();
            }
            let room = (GROUP_BYTES - self.filled) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.group.update(now);
            self.filled += now.len() as u64;
            data = rest;
        }
    }

    fn close_group(&mut self) {
        let cv = self.group.finalize_non_root();
        self.done += 1;
        self.group = blake3::Hasher::new();
        self.group.set_input_offset(self.done * GROUP_BYTES);
        self.filled = 0;
        // Merge every subtree this group completes (lazily, as BLAKE3 itself does: only once
        // more data is known to follow, so none of these merges is the root).
        let mut cv = cv;
        let mut total = self.done;
        while total & 1 == 0 {
            let Some(left) = self.stack.pop() else { break };
            self.outboard.extend_from_slice(&left);
            self.outboard.extend_from_slice(&cv);
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
            total >>= 1;
        }
        self.stack.push(cv);
    }

    /// The content id of everything hashed, and the outboard (post order, no length suffix).
    pub fn finish(mut self) -> (ContentId, Vec<u8>) {
        if self.done == 0 {
            // One group: it is the root.
            return (ContentId(*self.group.finalize().as_bytes()), self.outboard);
        }
        let mut right = self.group.finalize_non_root();
        let mut root = None;
        while let Some(left) = self.stack.pop() {
            self.outboard.extend_from_slice(&left);
            self.outboard.extend_from_slice(&right);
            if self.stack.is_empty() {
                root = Some(*merge_subtrees_root(&left, &right, Mode::Hash).as_bytes());
            } else {
                right = merge_subtrees_non_root(&left, &right, Mode::Hash);
            }
        }
        // done >= 1 means the stack held at least one subtree, so a root was merged.
        (ContentId(root.unwrap_or(right)), self.outboard)
    }
}

/// The outboard of `data`, with its content id.
pub fn outboard_of(data: &[u8]) -> (ContentId, Vec<u8>) {
    let mut b = OutboardBuilder::new();
    b.update(data);
    b.finish()
}

/// Bytes `range` of `all` (a whole file, already verified), or [`Error::OutOfRange`] naming
/// `what` for a range past its end: the range read of backends that hold whole files.
///
/// # Errors
/// [`Error::OutOfRange`].
pub fn slice_range(all: &[u8], range: Range<u64>, what: &str) -> Result<Vec<u8>> {
    usize::try_from(range.start)
        .ok()
        .zip(usize::try_from(range.end).ok())
        .and_then(|(s, e)| all.get(s..e))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Error::OutOfRange {
            file: format!("{what} (byte range {}..{})", range.start, range.end),
            index: range.end,
            len: all.len() as u64,
        })
}

/// A source of bytes at positions: a file, a memory map, a remote object.
pub trait ReadAt {
    /// Fills `buf` with the bytes at `offset`.
    ///
    /// # Errors
    /// An I/O error, or fewer bytes than asked for.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end")
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < buf.len() {
                let rest = buf.get_mut(done..).unwrap_or_default();
                let n = std::os::windows::fs::FileExt::seek_read(self, rest, offset + done as u64)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                done += n;
            }
            Ok(())
        }
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

/// The largest power of two strictly below `n` (`n >= 2`): the size of a left subtree.
fn left_len(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

fn read_pair(
    outboard: &dyn ReadAt,
    index: u64,
    what: &(impl std::fmt::Display + ?Sized),
) -> Result<(ChainingValue, ChainingValue)> {
    let mut pair = [0u8; PAIR_LEN as usize];
    outboard
        .read_exact_at(index * PAIR_LEN, &mut pair)
        .map_err(|e| Error::io(format!("outboard of {what}"), e))?;
    let (l, r) = pair.split_at(32);
    let mut left = [0u8; 32];
    let mut right = [0u8; 32];
    left.copy_from_slice(l);
    right.copy_from_slice(r);
    Ok((left, right))
}

/// The chaining value group `group` must hash to, checked from the root down through the
/// outboard, and whether the group is the root itself (a one-group file).
fn expected_leaf(
    groups: u64,
    group: u64,
    outboard: &dyn ReadAt,
    id: &ContentId,
    what: &(impl std::fmt::Display + ?Sized),
) -> Result<(ChainingValue, bool)> {
    let (mut start, mut count, mut base) = (0u64, groups, 0u64);
    let mut expected: ChainingValue = id.0;
    let mut is_root = true;
    while count > 1 {
        let left = left_len(count);
        let node = base + count - 2;
        let (l, r) = read_pair(outboard, node, what)?;
        let actual = if is_root {
            *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
        } else {
            merge_subtrees_non_root(&l, &r, Mode::Hash)
        };
        if actual != expected {
            return Err(Error::ChecksumMismatch {
                file: format!(
                    "{what} (outboard node {node}, covering groups {start}..{})",
                    start + count
                ),
                expected: hex(&expected),
                actual: hex(&actual),
            });
        }
        if group < start + left {
            expected = l;
            count = left;
        } else {
            expected = r;
            start += left;
            base += left - 1;
            count -= left;
        }
        is_root = false;
    }
    Ok((expected, is_root))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes one group's bytes as the subtree it is in the file's tree.
fn group_cv(group: u64, bytes: &[u8], is_root: bool) -> ChainingValue {
    if is_root {
        *blake3::hash(bytes).as_bytes()
    } else {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(group * GROUP_BYTES);
        h.update(bytes);
        h.finalize_non_root()
    }
}

/// The bytes of `range` of a file of `len` bytes with content id `id`, read from `data` and
/// checked against `id` through `outboard` before they are returned: only the groups that cover
/// the range are read and hashed, plus one 64-byte pair per level of the tree. `what` names the
/// file in errors (it is formatted only when there is one).
///
/// # Errors
/// [`Error::OutOfRange`] for a range past `len`; [`Error::ChecksumMismatch`] naming the group
/// (or outboard node) that does not match; an I/O error from `data` or `outboard` (a short file
/// is one).
pub fn verify_range(
    data: impl ReadAt,
    len: u64,
    outboard: impl ReadAt,
    id: &ContentId,
    range: Range<u64>,
    what: &(impl std::fmt::Display + ?Sized),
) -> Result<Vec<u8>> {
    if range.start > range.end || range.end > len {
        return Err(Error::OutOfRange {
            file: format!("{what} (byte range {}..{})", range.start, range.end),
            index: range.end,
            len,
        });
    }
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    if range.is_empty() {
        return Ok(out);
    }
    let groups = group_count(len);
    let first = range.start / GROUP_BYTES;
    let last = (range.end - 1) / GROUP_BYTES;
    let mut buf = Vec::new();
    for g in first..=last.min(groups - 1) {
        let start = g * GROUP_BYTES;
        let end = (start + GROUP_BYTES).min(len);
        buf.resize((end - start) as usize, 0);
        data.read_exact_at(start, &mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // The file is shorter than the length it was committed with.
                Error::corrupt(
                    what,
                    start,
                    format!("ends before its recorded length of {len} bytes"),
                )
            } else {
                Error::io(what.to_string(), e)
            }
        })?;
        let (expected, is_root) = expected_leaf(groups, g, &outboard, id, what)?;
        let actual = group_cv(g, &buf, is_root);
        if actual != expected {
            return Err(Error::ChecksumMismatch {
                file: format!("{what} (bytes {start}..{end})"),
                expected: hex(&expected),
                actual: hex(&actual),
            });
        }
        let from = range.start.saturating_sub(start) as usize;
        let to = (range.end.min(end) - start) as usize;
        out.extend_from_slice(buf.get(from..to).unwrap_or_default());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    #[test]
    fn ids_equal_blake3_at_group_boundaries() {
        for len in [
            0usize,
            1,
            1023,
            1024,
            16383,
            16384,
            16385,
            32768,
            32769,
            49152,
            65536,
            65537,
            16384 * 7 + 5,
            16384 * 8,
            16384 * 9,
        ] {
            let d = data(len, 1);
            let (id, ob) = outboard_of(&d);
            assert_eq!(id, ContentId::of(&d), "len {len}");
            assert_eq!(ob.len() as u64, outboard_len(len as u64), "len {len}");
        }
    }

    #[test]
    fn a_flipped_outboard_byte_fails_the_ranges_below_it() {
        let d = data(5 * 16384 + 3, 2);
        let (id, mut ob) = outboard_of(&d);
        let len = d.len() as u64;
        ob[0] ^= 1; // the first pair: groups 0 and 1
        assert!(matches!(
            verify_range(&d[..], len, &ob[..], &id, 0..10, "x"),
            Err(Error::ChecksumMismatch { .. })
        ));
        // Group 4 does not sit below the first pair.
        assert!(verify_range(&d[..], len, &ob[..], &id, 4 * 16384..4 * 16384 + 2, "x").is_ok());
    }

    #[test]
    fn outboards_are_bao_tree_post_order_outboards() {
        use bao_tree::io::outboard::PostOrderMemOutboard;
        use bao_tree::BlockSize;
        for len in [
            0usize,
            1,
            16384,
            16385,
            100_000,
            16384 * 16,
            16384 * 17 + 9,
            1 << 20,
        ] {
            let d = data(len, 5);
            let (id, ob) = outboard_of(&d);
            let theirs =
                PostOrderMemOutboard::create(&d, BlockSize::from_chunk_log(GROUP_CHUNK_LOG));
            assert_eq!(id.0, *theirs.root.as_bytes(), "len {len}");
            assert_eq!(ob, theirs.data, "len {len}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_range_reads_back_verified(
            len in 0usize..200_000,
            split in 0usize..200_000,
            a in 0u64..200_001,
            b in 0u64..200_001,
        ) {
            let d = data(len, 3);
            let mut builder = OutboardBuilder::new();
            let split = split.min(len);
            builder.update(&d[..split]);
            builder.update(&d[split..]);
            let (id, ob) = builder.finish();
            prop_assert_eq!(id, ContentId::of(&d));
            let (s, e) = (a.min(b).min(len as u64), a.max(b).min(len as u64));
            let got = verify_range(&d[..], len as u64, &ob[..], &id, s..e, "x").unwrap();
            prop_assert_eq!(&got[..], &d[s as usize..e as usize]);
        }

        #[test]
        fn a_flipped_bit_fails_every_range_that_covers_it(
            len in 1usize..150_000,
            at in 0usize..150_000,
            bit in 0u8..8,
            a in 0u64..150_001,
            b in 0u64..150_001,
        ) {
            let d = data(len, 4);
            let (id, ob) = outboard_of(&d);
            let at = at % len;
            let mut bad = d.clone();
            bad[at] ^= 1 << bit;
            let (s, e) = (a.min(b).min(len as u64), a.max(b).min(len as u64));
            let got = verify_range(&bad[..], len as u64, &ob[..], &id, s..e, "x");
            let g = at as u64 / GROUP_BYTES;
            let covered = s < e && s / GROUP_BYTES <= g && g <= (e - 1) / GROUP_BYTES;
            if covered {
                prop_assert!(matches!(got, Err(Error::ChecksumMismatch { .. })), "{:?}", got.map(|v| v.len()));
            } else {
                prop_assert_eq!(&got.unwrap()[..], &d[s as usize..e as usize]);
            }
        }
    }
}
