//! Artifact manifests: the list of files one format wrote for one value.
//!
//! A manifest is itself an object, so an artifact has a content id. Layout (all integers
//! little-endian; see `docs/FORMAT.md`):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `MLGM` |
//! | 1 | manifest layout version, `1` |
//! | 1 | length `n` of the format id (1..=255) |
//! | n | format id, UTF-8 |
//! | 4 | format version, `u32` |
//! | 4 | file count `c`, `u32` |
//! | c × | per file: name length `u16`, name (UTF-8), length `u64`, blake3 content id (32 bytes) |
//!
//! Nothing may follow the last file.

use milonga_sdk::{ContentId, Error, FileEntry, Result};

/// Manifest magic bytes.
pub const MAGIC: [u8; 4] = *b"MLGM";
/// The manifest layout version this build writes and reads.
pub const VERSION: u8 = 1;
/// The smallest encoding of one file entry (empty name), used to bound the file count before
/// anything is allocated.
const MIN_ENTRY: usize = 2 + 8 + 32;

/// The decoded content of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The format that wrote the artifact.
    pub format_id: String,
    /// Its version.
    pub format_version: u32,
    /// The artifact's files, in the order they were finished.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Encodes the manifest.
    ///
    /// # Errors
    /// [`Error::Encode`] for a format id or file name that is too long or empty.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let bad = |reason: String| Error::Encode {
            what: "manifest".into(),
            reason,
        };
        let id = self.format_id.as_bytes();
        if id.is_empty() || id.len() > 255 {
            return Err(bad(format!(
                "format id must be 1..=255 bytes, got {}",
                id.len()
            )));
        }
        let count = u32::try_from(self.files.len())
            .map_err(|_| bad(format!("too many files: {}", self.files.len())))?;
        let mut out = Vec::with_capacity(14 + id.len() + self.files.len() * 64);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.format_version.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        for f in &self.files {
            let name = f.name.as_bytes();
            let n = u16::try_from(name.len())
                .map_err(|_| bad(format!("file name too long: {} bytes", name.len())))?;
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&f.len.to_le_bytes());
            out.extend_from_slice(&f.id.0);
        }
        Ok(out)
    }

    /// Decodes a manifest; `file` names it in errors. Never panics; the file count is checked
    /// against the remaining bytes before anything is allocated.
    ///
    /// # Errors
    /// [`Error::Corrupt`] with the offset of the problem, or [`Error::UnsupportedVersion`].
    pub fn decode(bytes: &[u8], file: &str) -> Result<Manifest> {
        let mut r = Cursor {
            bytes,
            pos: 0,
            file,
        };
        let magic = r.take(4)?;
        if magic != MAGIC {
            return Err(Error::corrupt(file, 0, "not a manifest (bad magic)"));
        }
        let v = r.u8()?;
        if v != VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_owned(),
                format: "manifest".into(),
                found: u32::from(v),
                supported: u32::from(VERSION),
            });
        }
        let n = usize::from(r.u8()?);
        if n == 0 {
            return Err(Error::corrupt(file, 5, "empty format id"));
        }
        let format_id = r.str(n)?;
        let format_version = r.u32()?;
        let count_at = r.pos as u64;
        let count = r.u32()? as usize;
        if count > r.remaining() / MIN_ENTRY {
            return Err(Error::corrupt(
                file,
                count_at,
                format!(
                    "file count {count} cannot fit in the {} remaining bytes",
                    r.remaining()
                ),
            ));
        }
        let mut files = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = usize::from(r.u16()?);
            let name = r.str(name_len)?;
            let len = r.u64()?;
            let mut id = [0u8; 32];
            id.copy_from_slice(r.take(32)?);
            files.push(FileEntry {
                name,
                len,
                id: ContentId(id),
            });
        }
        if r.remaining() != 0 {
            return Err(Error::corrupt(
                file,
                r.pos as u64,
                format!("{} trailing bytes after the last file", r.remaining()),
            ));
        }
        Ok(Manifest {
            format_id,
            format_version,
            files,
        })
    }

    /// The total length of the artifact's files.
    pub fn total_len(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let Some(s) = self.bytes.get(self.pos..).and_then(|rest| rest.get(..n)) else {
            return Err(Error::corrupt(
                self.file,
                self.pos as u64,
                format!("truncated: needs {n} more bytes, {} left", self.remaining()),
            ));
        };
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn str(&mut self, n: usize) -> Result<String> {
        let at = self.pos as u64;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|e| Error::corrupt(self.file, at, format!("invalid UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Manifest {
        Manifest {
            format_id: "f".into(),
            format_version: 2,
            files: vec![FileEntry {
                name: "data".into(),
                len: 3,
                id: ContentId([7; 32]),
            }],
        }
    }

    #[test]
    fn golden_bytes() {
        let mut expected = b"MLGM\x01\x01f\x02\x00\x00\x00\x01\x00\x00\x00\x04\x00data".to_vec();
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(&[7; 32]);
        assert_eq!(sample().encode().unwrap(), expected);
        assert_eq!(Manifest::decode(&expected, "m").unwrap(), sample());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                Manifest::decode(&bytes[..cut], "m").is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn lying_count_is_refused_before_allocating() {
        let mut bytes = sample().encode().unwrap();
        bytes[11..15].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = Manifest::decode(&bytes, "m").unwrap_err();
        assert!(matches!(err, Error::Corrupt { offset: 11, .. }), "{err}");
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Manifest::decode(&bytes, "m");
        }

        #[test]
        fn roundtrip(id in "[a-z.]{1,20}", version in any::<u32>(),
                     files in proptest::collection::vec(("[a-z0-9/-]{0,12}", any::<u64>(), any::<[u8; 32]>()), 0..8)) {
            let m = Manifest {
                format_id: id,
                format_version: version,
                files: files.into_iter().map(|(name, len, id)| FileEntry { name, len, id: ContentId(id) }).collect(),
            };
            prop_assert_eq!(Manifest::decode(&m.encode().unwrap(), "m").unwrap(), m);
        }
    }
}
