//! Verification of object content against its id.

use std::io::{self, Read, Seek, SeekFrom};

use milonga_sdk::{ContentId, Error};

/// A reader that hashes what it reads and, as soon as a sequential read reaches the object's
/// length (or its end), reports content that does not match the expected id as an error (an
/// `io::Error` carrying [`Error::ChecksumMismatch`]). After a seek it no longer verifies.
pub(crate) struct VerifyingReader<R> {
    inner: R,
    expected: ContentId,
    what: String,
    hasher: Option<blake3::Hasher>,
    pos: u64,
    len: u64,
}

impl<R> VerifyingReader<R> {
    pub(crate) fn new(inner: R, expected: ContentId, what: String, len: u64) -> Self {
        VerifyingReader {
            inner,
            expected,
            what,
            hasher: Some(blake3::Hasher::new()),
            pos: 0,
            len,
        }
    }

    fn check(&mut self) -> io::Result<()> {
        if let Some(h) = self.hasher.take() {
            let actual = ContentId(*h.finalize().as_bytes());
            if actual != self.expected {
                return Err(Error::ChecksumMismatch {
                    file: self.what.clone(),
                    expected: self.expected.to_hex(),
                    actual: actual.to_hex(),
                }
                .into());
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
            // Check at the expected length (a reader using read_exact never sees the end) and
            // at the end of the file (a file shorter or longer than recorded).
            if self.pos == self.len || (n == 0 && !buf.is_empty()) {
                self.check()?;
            }
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for VerifyingReader<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = self.inner.seek(pos)?;
        if new != self.pos {
            // Random access: the running hash no longer covers the whole content.
            self.hasher = None;
        }
        self.pos = new;
        Ok(new)
    }
}
