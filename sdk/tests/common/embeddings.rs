//! A two-file lazy format of named embeddings (16-bit quantized vectors), with bugs that can be
//! switched on: the example the kit's and the fuzz module's own tests break on purpose. The
//! fuzz target `fuzz/demo_targets/broken_embeddings.rs` builds this same file.
//!
//! `names`: envelope, `u64` count, `u32` dimension, then per name a `u16` length and UTF-8.
//! `vectors`: envelope, then `count × dimension` little-endian `i16`s. Reading checks `names`
//! and the length of `vectors`; `get(i)` reads one vector.

// Its bugs are indexing that is only safe when the checks it switches off are on.
#![allow(clippy::indexing_slicing)]

use std::io::Write;

use milonga_sdk::{
    open_envelope, ArtifactHandle, ArtifactWriter, Envelope, Error, Format, Result, SharedBytes,
};

/// A deliberate bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// None: the format is correct.
    None,
    /// Trusts the `u64` count: `Vec::with_capacity(count)` before checking it fits the file.
    LyingCount,
    /// Does not check the length of `vectors`, and slices it unchecked in `get`: an
    /// out-of-bounds slice after a valid header.
    OutOfBoundsSlice,
}

/// Named embeddings as written: a name and a vector each, all vectors of one length.
pub type Embeddings = Vec<(String, Vec<i16>)>;

/// The format.
pub struct EmbeddingsFormat(pub Bug);

/// What reading gives: the names, and the vectors read on demand.
pub struct EmbeddingsReader {
    names: Vec<String>,
    dim: usize,
    vectors: SharedBytes,
    start: usize,
    bug: Bug,
}

const ID: &str = "example.embeddings";

impl Format<Embeddings> for EmbeddingsFormat {
    type Output = EmbeddingsReader;

    fn id(&self) -> &str {
        ID
    }

    fn version(&self) -> u32 {
        1
    }

    fn write(&self, value: Embeddings, artifact: &dyn ArtifactWriter) -> Result<()> {
        let dim = value.first().map_or(0, |(_, v)| v.len());
        let mut names = Vec::new();
        Envelope::new(ID, 1).encode_into(&mut names)?;
        names.extend_from_slice(&(value.len() as u64).to_le_bytes());
        names.extend_from_slice(&(dim as u32).to_le_bytes());
        let mut vectors = Vec::new();
        Envelope::new(ID, 1).encode_into(&mut vectors)?;
        for (name, v) in &value {
            let len = u16::try_from(name.len())
                .map_err(|_| Error::corrupt("names", 0, "a name longer than 65535 bytes"))?;
            if v.len() != dim {
                return Err(Error::corrupt("vectors", 0, "vectors of different lengths"));
            }
            names.extend_from_slice(&len.to_le_bytes());
            names.extend_from_slice(name.as_bytes());
            for x in v {
                vectors.extend_from_slice(&x.to_le_bytes());
            }
        }
        for (file, bytes) in [("names", names), ("vectors", vectors)] {
            let mut w = artifact.create(file)?;
            w.write_all(&bytes).map_err(|e| Error::io(file, e))?;
            w.finish()?;
        }
        Ok(())
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<EmbeddingsReader> {
        let bytes = artifact.bytes("names")?;
        let (_, payload) = open_envelope((*bytes).as_ref(), ID, 1, "names")?;
        let (count, rest) = payload
            .split_first_chunk::<8>()
            .ok_or_else(|| Error::corrupt("names", 0, "no count"))?;
        let (dim, mut rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| Error::corrupt("names", 8, "no dimension"))?;
        let count = u64::from_le_bytes(*count);
        let dim = u32::from_le_bytes(*dim) as usize;
        let mut names = if self.0 == Bug::LyingCount {
            Vec::with_capacity(count as usize)
        } else {
            // Each name takes at least its 2-byte length.
            if count > rest.len() as u64 / 2 {
                return Err(Error::corrupt("names", 0, "more names than the file holds"));
            }
            Vec::with_capacity(count as usize)
        };
        for _ in 0..count {
            let (len, tail) = rest
                .split_first_chunk::<2>()
                .ok_or_else(|| Error::corrupt("names", 0, "truncated"))?;
            let len = usize::from(u16::from_le_bytes(*len));
            let name = tail
                .get(..len)
                .ok_or_else(|| Error::corrupt("names", 0, "truncated name"))?;
            let name = std::str::from_utf8(name)
                .map_err(|_| Error::corrupt("names", 0, "a name is not UTF-8"))?;
            names.push(name.to_owned());
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return Err(Error::corrupt("names", 0, "trailing bytes"));
        }
        let vectors = artifact.bytes("vectors")?;
        let all: &[u8] = (*vectors).as_ref();
        let (_, payload) = open_envelope(all, ID, 1, "vectors")?;
        let start = all.len() - payload.len();
        if self.0 != Bug::OutOfBoundsSlice {
            let expected = (names.len() as u64)
                .checked_mul(dim as u64)
                .and_then(|n| n.checked_mul(2));
            if expected != Some(payload.len() as u64) {
                return Err(Error::corrupt("vectors", 0, "not count × dimension values"));
            }
        }
        Ok(EmbeddingsReader {
            names,
            dim,
            vectors,
            start,
            bug: self.0,
        })
    }
}

impl EmbeddingsReader {
    /// How many embeddings.
    pub fn len(&self) -> u64 {
        self.names.len() as u64
    }

    /// Whether there are none.
    #[allow(dead_code)]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Embedding `i`.
    pub fn get(&self, i: u64) -> Result<(String, Vec<i16>)> {
        let name = usize::try_from(i)
            .ok()
            .and_then(|i| self.names.get(i))
            .ok_or_else(|| Error::corrupt("names", 0, format!("no embedding {i}")))?;
        let at = self.start + i as usize * self.dim * 2;
        let all: &[u8] = (*self.vectors).as_ref();
        let raw = if self.bug == Bug::OutOfBoundsSlice {
            &all[at..at + self.dim * 2]
        } else {
            all.get(at..at + self.dim * 2)
                .ok_or_else(|| Error::corrupt("vectors", at as u64, "short"))?
        };
        let v = raw
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok((name.clone(), v))
    }

    /// Every embedding, in order.
    pub fn all(&self) -> Result<Embeddings> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}
