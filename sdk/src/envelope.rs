//! The envelope: a small header in front of every payload a format writes.
//!
//! Postcard (like most compact encodings) is not self-describing, so a payload read by the wrong
//! format, or written by a newer version of the right one, would otherwise decode to garbage or
//! fail far from the cause. The envelope names the format and its version so that both are a
//! typed error instead.
//!
//! Layout (all integers little-endian), specified in `docs/FORMAT.md`:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `MLGE` |
//! | 1 | envelope layout version, `1` |
//! | 1 | length `n` of the format id, 1..=255 |
//! | n | the format id, UTF-8 |
//! | 4 | the format version, `u32` |

use std::io::{Read, Write};

use crate::error::{Error, Result};

/// The four magic bytes at the start of every envelope.
pub const MAGIC: [u8; 4] = *b"MLGE";
/// The envelope layout version this build writes and reads.
pub const LAYOUT_VERSION: u8 = 1;

/// A decoded envelope header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The id of the format that wrote the payload.
    pub format_id: String,
    /// The version of that format.
    pub format_version: u32,
}

impl Envelope {
    /// A header for `format_id` at `format_version`.
    pub fn new(format_id: &str, format_version: u32) -> Self {
        Envelope {
            format_id: format_id.to_owned(),
            format_version,
        }
    }

    /// The encoded length of this header in bytes.
    pub fn encoded_len(&self) -> usize {
        4 + 1 + 1 + self.format_id.len() + 4
    }

    /// Appends the encoded header to `out`.
    ///
    /// # Errors
    /// [`Error::Encode`] if the format id is empty or longer than 255 bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        let id = self.format_id.as_bytes();
        if id.is_empty() || id.len() > 255 {
            return Err(Error::Encode {
                what: "envelope".into(),
                reason: format!("format id must be 1..=255 bytes, got {}", id.len()),
            });
        }
        out.extend_from_slice(&MAGIC);
        out.push(LAYOUT_VERSION);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.format_version.to_le_bytes());
        Ok(())
    }

    /// Writes the encoded header to `w`; `file` names the destination in errors.
    ///
    /// # Errors
    /// As [`Envelope::encode_into`], or [`Error::Io`].
    pub fn write_to(&self, w: &mut dyn Write, file: &str) -> Result<()> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut buf)?;
        w.write_all(&buf).map_err(|e| Error::io(file, e))
    }

    /// Decodes a header from the front of `bytes` and returns it with the rest of the bytes.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `file` and the offset if the bytes are not an envelope.
    pub fn decode<'a>(bytes: &'a [u8], file: &str) -> Result<(Envelope, &'a [u8])> {
        let truncated = |needed: usize| {
            Error::corrupt(
                file,
                bytes.len() as u64,
                format!(
                    "truncated envelope: needs {needed} bytes, file has {}",
                    bytes.len()
                ),
            )
        };
        let Some((head, rest)) = bytes.split_first_chunk::<6>() else {
            return Err(truncated(6));
        };
        let [m0, m1, m2, m3, layout, n] = *head;
        let magic = [m0, m1, m2, m3];
        if magic != MAGIC {
            return Err(Error::corrupt(
                file,
                0,
                format!("not a milonga envelope (magic {magic:02x?}, expected {MAGIC:02x?})"),
            ));
        }
        if layout != LAYOUT_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_owned(),
                format: "envelope".into(),
                found: u32::from(layout),
                supported: u32::from(LAYOUT_VERSION),
            });
        }
        let n = usize::from(n);
        if n == 0 {
            return Err(Error::corrupt(file, 5, "empty format id"));
        }
        let (Some((id, rest)), true) = (rest.split_at_checked(n), rest.len() >= n + 4) else {
            return Err(truncated(6 + n + 4));
        };
        let Some((version, rest)) = rest.split_first_chunk::<4>() else {
            return Err(truncated(6 + n + 4));
        };
        let id = std::str::from_utf8(id)
            .map_err(|e| Error::corrupt(file, 6, format!("format id is not UTF-8: {e}")))?;
        Ok((
            Envelope {
                format_id: id.to_owned(),
                format_version: u32::from_le_bytes(*version),
            },
            rest,
        ))
    }

    /// Reads a header from `r` (consuming exactly its bytes).
    ///
    /// # Errors
    /// As [`Envelope::decode`], or [`Error::Io`].
    pub fn read_from(r: &mut dyn Read, file: &str) -> Result<Envelope> {
        let mut head = [0u8; 6];
        read_exact_or_corrupt(r, &mut head, file, 0)?;
        let [m0, m1, m2, m3, layout, n] = head;
        let mut buf = Vec::with_capacity(6 + usize::from(n) + 4);
        buf.extend_from_slice(&head);
        if [m0, m1, m2, m3] == MAGIC && layout == LAYOUT_VERSION {
            let mut tail = vec![0u8; usize::from(n) + 4];
            read_exact_or_corrupt(r, &mut tail, file, 6)?;
            buf.extend_from_slice(&tail);
        }
        Envelope::decode(&buf, file).map(|(env, _)| env)
    }

    /// Checks that this header was written by `format_id` at a version of at most `supported`,
    /// and returns the version found.
    ///
    /// # Errors
    /// [`Error::WrongFormat`] or [`Error::UnsupportedVersion`], naming `file`.
    pub fn expect(&self, format_id: &str, supported: u32, file: &str) -> Result<u32> {
        if self.format_id != format_id {
            return Err(Error::WrongFormat {
                file: file.to_owned(),
                expected: format_id.to_owned(),
                found: self.format_id.clone(),
            });
        }
        if self.format_version > supported {
            return Err(Error::UnsupportedVersion {
                file: file.to_owned(),
                format: format_id.to_owned(),
                found: self.format_version,
                supported,
            });
        }
        Ok(self.format_version)
    }
}

/// Decodes the envelope at the front of `bytes`, checks it against `format_id` and `supported`
/// and returns the version found and the payload after the header.
///
/// # Errors
/// As [`Envelope::decode`] and [`Envelope::expect`].
pub fn open_envelope<'a>(
    bytes: &'a [u8],
    format_id: &str,
    supported: u32,
    file: &str,
) -> Result<(u32, &'a [u8])> {
    let (env, rest) = Envelope::decode(bytes, file)?;
    let v = env.expect(format_id, supported, file)?;
    Ok((v, rest))
}

fn read_exact_or_corrupt(r: &mut dyn Read, buf: &mut [u8], file: &str, at: u64) -> Result<()> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match r.read(rest) {
            Ok(0) => {
                return Err(Error::corrupt(
                    file,
                    at + filled as u64,
                    "truncated envelope",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(file, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        let mut out = Vec::new();
        Envelope::new("milonga.postcard", 1)
            .encode_into(&mut out)
            .unwrap();
        let mut expected = b"MLGE\x01\x10milonga.postcard".to_vec();
        expected.extend_from_slice(&[1, 0, 0, 0]);
        assert_eq!(out, expected);
    }

    #[test]
    fn wrong_format_and_newer_version_are_typed_errors() {
        let mut out = Vec::new();
        Envelope::new("a", 3).encode_into(&mut out).unwrap();
        out.extend_from_slice(b"payload");
        let (v, rest) = open_envelope(&out, "a", 3, "f").unwrap();
        assert_eq!((v, rest), (3, &b"payload"[..]));
        assert!(matches!(
            open_envelope(&out, "b", 3, "f"),
            Err(Error::WrongFormat { .. })
        ));
        assert!(matches!(
            open_envelope(&out, "a", 2, "f"),
            Err(Error::UnsupportedVersion {
                found: 3,
                supported: 2,
                ..
            })
        ));
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let mut out = Vec::new();
        Envelope::new("fmt", 1).encode_into(&mut out).unwrap();
        for cut in 0..out.len() {
            let r = Envelope::decode(&out[..cut], "f");
            assert!(matches!(r, Err(Error::Corrupt { .. })), "cut {cut}: {r:?}");
            let r = Envelope::read_from(&mut &out[..cut], "f");
            assert!(matches!(r, Err(Error::Corrupt { .. })), "cut {cut}: {r:?}");
        }
        assert!(Envelope::read_from(&mut &out[..], "f").is_ok());
    }
}
