//! Chunk file names, the chunk index and the end-of-stream record.

use milonga_sdk::{ContentId, Error, Result};

use super::chunk::{check_trailer, hex, Fields, CHECKSUM_LEN};

/// The four magic bytes at the start of the end-of-stream record, `MLGS`.
pub const END_MAGIC: [u8; 4] = *b"MLGS";
/// The end record layout version this build writes and reads.
pub const END_LAYOUT_VERSION: u8 = 1;
/// Length of the end record's fixed part (before the index entries).
const END_FIXED_LEN: usize = 56;
/// Length of one index entry in the end record.
const INDEX_ENTRY_LEN: usize = 56;

/// Where the files of one chunked stream live inside an artifact: a name prefix, so that one
/// artifact can hold several streams (`""` for a format with a single stream, `"train/"` …).
///
/// Chunk files are named `{prefix}chunks/{seq:010}-{first_item:020}-{item_count:010}` and the
/// end record `{prefix}end`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamLayout {
    prefix: String,
}

impl StreamLayout {
    /// A stream whose file names start with `prefix` (empty, or ending in `/`).
    pub fn new(prefix: impl Into<String>) -> Self {
        StreamLayout {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of the end record file.
    pub fn end_name(&self) -> String {
        format!("{}end", self.prefix)
    }

    /// The file name of a chunk.
    pub fn chunk_name(&self, seq: u64, first_item: u64, item_count: u32) -> String {
        format!(
            "{}chunks/{seq:010}-{first_item:020}-{item_count:010}",
            self.prefix
        )
    }

    /// Whether `name` belongs to this stream (is its end record or under its `chunks/`).
    pub fn owns(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest == "end" || rest.starts_with("chunks/"))
    }

    /// Parses a chunk file name into `(seq, first_item, item_count)`. `None` if `name` is not
    /// under this stream's `chunks/`; an error if it is but is not a canonical chunk name.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the file.
    pub fn parse_chunk_name(&self, name: &str) -> Option<Result<(u64, u64, u32)>> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix("chunks/")?;
        let bad = || Error::corrupt(name, 0, "not a chunk file name of this stream");
        let mut parts = rest.split('-');
        let parsed = (|| {
            let seq: u64 = digits(parts.next()?, 10)?;
            let first: u64 = digits(parts.next()?, 20)?;
            let count: u32 = digits(parts.next()?, 10)?;
            if parts.next().is_some() || count == 0 {
                return None;
            }
            Some((seq, first, count))
        })();
        Some(parsed.ok_or_else(bad))
    }
}

fn digits<T: std::str::FromStr>(s: &str, width: usize) -> Option<T> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One chunk in the chunk index: which items it holds and which file holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Number of the chunk's first item within the stream.
    pub first_item: u64,
    /// How many items the chunk holds.
    pub item_count: u32,
    /// Length of the chunk file.
    pub len: u64,
    /// Content id (blake3) of the chunk file.
    pub id: ContentId,
}

impl IndexEntry {
    /// One past the number of the chunk's last item.
    pub fn end_item(&self) -> u64 {
        self.first_item.saturating_add(u64::from(self.item_count))
    }
}

/// The whole-stream hash: blake3 over the content ids (32 bytes each) of the chunk files, in
/// chunk order. The hash of an empty stream is blake3 of no bytes.
pub fn stream_hash<'a>(ids: impl IntoIterator<Item = &'a ContentId>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for id in ids {
        h.update(&id.0);
    }
    *h.finalize().as_bytes()
}

/// The end-of-stream record, written as the stream's last file: the item count, the chunk
/// index and the whole-stream hash. A stream without it is unfinished (or cut short), never a
/// shorter complete stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndRecord {
    /// Items in the stream.
    pub item_count: u64,
    /// The chunk index, in chunk order (entry `i` is chunk `seq = i`).
    pub chunks: Vec<IndexEntry>,
    /// [`stream_hash`] of the chunks' content ids.
    pub stream_hash: [u8; 32],
}

impl EndRecord {
    /// The end record of a stream made of `chunks`, in order.
    pub fn new(chunks: Vec<IndexEntry>) -> Self {
        let item_count = chunks.iter().map(|c| u64::from(c.item_count)).sum();
        let stream_hash = stream_hash(chunks.iter().map(|c| &c.id));
        EndRecord {
            item_count,
            chunks,
            stream_hash,
        }
    }

    /// The encoded record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(END_FIXED_LEN + self.chunks.len() * INDEX_ENTRY_LEN + CHECKSUM_LEN);
        out.extend_from_slice(&END_MAGIC);
        out.push(END_LAYOUT_VERSION);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&self.item_count.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.stream_hash);
        for c in &self.chunks {
            out.extend_from_slice(&c.first_item.to_le_bytes());
            out.extend_from_slice(&c.item_count.to_le_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&c.len.to_le_bytes());
            out.extend_from_slice(&c.id.0);
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes and checks an end record: magic, version, lengths against the file (before
    /// allocating), the checksum trailer, and that the index is consistent with itself (chunks
    /// contiguous from item 0, counts summing to the item count, the stream hash matching the
    /// ids).
    ///
    /// # Errors
    /// [`Error::Corrupt`] with the offset of the bad field, [`Error::UnsupportedVersion`] for a
    /// newer layout, [`Error::ChecksumMismatch`] for a bad trailer.
    pub fn decode(bytes: &[u8], file: &str) -> Result<EndRecord> {
        let mut f = Fields::new(bytes, file);
        let magic: [u8; 4] = f.array("magic")?;
        if magic != END_MAGIC {
            return Err(Error::corrupt(
                file,
                0,
                format!("not a stream end record (magic {magic:02x?}, expected {END_MAGIC:02x?})"),
            ));
        }
        let version = f.u8("layout version")?;
        if version == 0 {
            return Err(Error::corrupt(file, 4, "end record layout version 0"));
        }
        if version > END_LAYOUT_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_owned(),
                format: "milonga stream end record".into(),
                found: u32::from(version),
                supported: u32::from(END_LAYOUT_VERSION),
            });
        }
        if f.array::<3>("reserved")? != [0, 0, 0] {
            return Err(Error::corrupt(file, 5, "reserved bytes are not zero"));
        }
        let item_count = f.u64("item count")?;
        let chunk_count = f.u64("chunk count")?;
        let room = bytes.len().saturating_sub(END_FIXED_LEN + CHECKSUM_LEN) / INDEX_ENTRY_LEN;
        let expected = (chunk_count as u128) * INDEX_ENTRY_LEN as u128
            + (END_FIXED_LEN + CHECKSUM_LEN) as u128;
        if chunk_count > room as u64 || expected != bytes.len() as u128 {
            let offset = if expected > bytes.len() as u128 {
                bytes.len() as u64
            } else {
                16
            };
            return Err(Error::corrupt(
                file,
                offset,
                format!(
                    "{chunk_count} chunks need a record of {expected} bytes, the file has {}",
                    bytes.len()
                ),
            ));
        }
        check_trailer(bytes, file, END_FIXED_LEN + CHECKSUM_LEN)?;
        let hash: [u8; 32] = f.array("stream hash")?;
        let mut chunks = Vec::with_capacity(chunk_count as usize);
        let mut next = 0u64;
        for i in 0..chunk_count {
            let at = f.pos as u64;
            let first_item = f.u64("first item")?;
            let item_count = f.u32("item count")?;
            let reserved = f.u32("reserved")?;
            let len = f.u64("length")?;
            let id = ContentId(f.array("content id")?);
            if first_item != next || item_count == 0 || reserved != 0 {
                return Err(Error::corrupt(
                    file,
                    at,
                    format!(
                        "index entry {i}: chunk of {item_count} items at item {first_item}, \
                         expected a non-empty chunk at item {next}"
                    ),
                ));
            }
            next = first_item
                .checked_add(u64::from(item_count))
                .ok_or_else(|| {
                    Error::corrupt(file, at, format!("index entry {i}: item numbers overflow"))
                })?;
            chunks.push(IndexEntry {
                first_item,
                item_count,
                len,
                id,
            });
        }
        if next != item_count {
            return Err(Error::corrupt(
                file,
                8,
                format!("the record says {item_count} items, its chunks hold {next}"),
            ));
        }
        let actual = stream_hash(chunks.iter().map(|c| &c.id));
        if actual != hash {
            return Err(Error::ChecksumMismatch {
                file: format!("{file} (stream hash)"),
                expected: hex(&hash),
                actual: hex(&actual),
            });
        }
        Ok(EndRecord {
            item_count,
            chunks,
            stream_hash: hash,
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_roundtrip_and_reject_variants() {
        let l = StreamLayout::new("p/");
        let n = l.chunk_name(3, 28086, 9362);
        assert_eq!(n, "p/chunks/0000000003-00000000000000028086-0000009362");
        assert_eq!(
            l.parse_chunk_name(&n).map(|r| r.ok()),
            Some(Some((3, 28086, 9362)))
        );
        assert!(l.parse_chunk_name("p/end").is_none());
        assert!(l.parse_chunk_name("q/chunks/x").is_none());
        for bad in [
            "p/chunks/3-28086-9362",
            "p/chunks/0000000003-00000000000000028086-0000000000",
            "p/chunks/0000000003-00000000000000028086-0000009362-1",
            "p/chunks/000000000+-00000000000000028086-0000009362",
        ] {
            assert!(matches!(l.parse_chunk_name(bad), Some(Err(_))), "{bad}");
        }
    }

    #[test]
    fn end_record_roundtrip_and_every_truncation_fails() {
        let rec = EndRecord::new(vec![
            IndexEntry {
                first_item: 0,
                item_count: 5,
                len: 100,
                id: ContentId([1; 32]),
            },
            IndexEntry {
                first_item: 5,
                item_count: 2,
                len: 60,
                id: ContentId([2; 32]),
            },
        ]);
        let bytes = rec.encode();
        assert_eq!(bytes.len(), 56 + 2 * 56 + 32);
        assert_eq!(EndRecord::decode(&bytes, "end").ok(), Some(rec));
        for cut in 0..bytes.len() {
            assert!(
                EndRecord::decode(&bytes[..cut], "end").is_err(),
                "cut {cut}"
            );
        }
    }
}
