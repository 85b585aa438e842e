//! The built-in single-value formats: [`PostcardFormat`], [`JsonFormat`], [`TextFormat`] and
//! [`BytesFormat`].
//!
//! Each stores one value as one artifact file named [`"data"`](PostcardFormat::FILE): the SDK
//! [`Envelope`] (format id and version) followed by the payload. The byte layouts are specified
//! in `docs/spec/value-formats.md` (part of `docs/FORMAT.md`).
//!
//! Reading never panics and never allocates more than the size of the file:
//! - a wrong format id is [`Error::WrongFormat`], a newer version
//!   [`Error::UnsupportedVersion`], no `"data"` file [`Error::MissingFile`];
//! - bytes that break the layout (truncation, trailing bytes, a length field that does not match
//!   the file, invalid UTF-8) are [`Error::Corrupt`] with the exact offset;
//! - a payload that serde cannot decode into the requested type is [`Error::Decode`], with the
//!   offset of the payload.
//!
//! Every layout is self-delimiting, so a file cut short anywhere is an error even without the
//! content hash the engine checks on top.

use std::any::type_name;
use std::io::{self, BufWriter, Write};

use milonga_sdk::{
    open_envelope, ArtifactHandle, ArtifactWriter, Envelope, Error, FileWriter, Format, Result,
    SharedBytes,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The name of the one file every single-value format writes.
const FILE: &str = "data";

/// Any serde value as [postcard](https://docs.rs/postcard): compact and fast. The default
/// format of steps.
///
/// Id `"milonga.postcard"`, version 1. The `"data"` file is the envelope followed by the
/// postcard encoding of the value (postcard 1.x wire format, which is specified and stable).
///
/// # Determinism
/// Postcard writes the value in its own [`Serialize`] order. Structs, `Vec`, `BTreeMap` and
/// `BTreeSet` always give the same bytes; a `HashMap` or `HashSet` serializes in its iteration
/// order, which changes between processes, so the same map can give different bytes. Use a
/// `BTreeMap` where the bytes must be stable, or [`JsonFormat`] for maps with string keys.
///
/// # Reading
/// Postcard is not self-describing: the envelope makes reading with the wrong format a typed
/// error, but the reader must ask for the type that was written. Length prefixes inside the
/// payload are checked against the bytes that remain before anything is allocated for them
/// (serde's cautious size hints). Postcard has no nesting limit, so a recursive type (a tree of
/// boxed nodes) decoded from hostile bytes can exhaust the stack; only bytes the engine has
/// verified against their content hash reach the decoder.
///
/// ```
/// use milonga_formats::PostcardFormat;
/// use milonga_sdk::{Format, MemoryArtifact};
///
/// let artifact = MemoryArtifact::new();
/// PostcardFormat.write((7u32, "seven".to_owned()), &artifact)?;
/// let back: (u32, String) = PostcardFormat.read(artifact.handle())?;
/// assert_eq!(back, (7, "seven".to_owned()));
/// # Ok::<(), milonga_sdk::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostcardFormat;

impl PostcardFormat {
    /// The format id, `"milonga.postcard"`.
    pub const ID: &'static str = "milonga.postcard";
    /// The version of the bytes this build writes, `1`.
    pub const VERSION: u32 = 1;
    /// The name of the artifact file, `"data"`.
    pub const FILE: &'static str = FILE;
}

impl<T> Format<T> for PostcardFormat
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Output = T;

    fn id(&self) -> &str {
        Self::ID
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn write(&self, value: T, artifact: &dyn ArtifactWriter) -> Result<()> {
        write_data(
            artifact,
            Self::ID,
            Self::VERSION,
            |sink| match postcard::to_io(&value, &mut *sink) {
                Ok(_) => Ok(()),
                Err(e) => Err(sink.take_error().map_or_else(
                    || Error::Encode {
                        what: type_name::<T>().to_owned(),
                        reason: e.to_string(),
                    },
                    |io| Error::io(FILE, io),
                )),
            },
        )
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<T> {
        let (bytes, at) = read_data(&artifact, Self::ID, Self::VERSION)?;
        let payload = payload(&bytes, at);
        let (value, rest) = postcard::take_from_bytes::<T>(payload).map_err(|e| Error::Decode {
            file: FILE.to_owned(),
            offset: at as u64,
            reason: format!("postcard, as {}: {e}", type_name::<T>()),
        })?;
        if !rest.is_empty() {
            let end = at + (payload.len() - rest.len());
            return Err(Error::corrupt(
                FILE,
                end as u64,
                format!("{} trailing bytes after the value", rest.len()),
            ));
        }
        Ok(value)
    }
}

/// Any serde value as JSON text: readable by people and other tools.
///
/// Id `"milonga.json"`, version 1. The `"data"` file is the envelope followed by the value as
/// compact JSON (no spaces, no newlines inside) and one final newline byte (`0x0a`), which
/// makes truncation detectable even for a top-level number.
///
/// # Determinism
/// The value goes through [`serde_json::Value`] before it is written, so the keys of every JSON
/// object come out sorted (by their UTF-8 bytes): a `HashMap` with string (or integer) keys
/// gives the same bytes in every process. Sequences keep their order, so a `HashSet` is still
/// written in iteration order. Floats are written in their shortest round-trip form and read
/// back bit for bit (milonga enables serde_json's `float_roundtrip` parser); non-finite floats (NaN,
/// infinities) become `null` and do not read back as numbers. Integers beyond the 64-bit range
/// cannot be written, nor maps whose keys do not serialize as a string or a number
/// ([`Error::Encode`]).
///
/// ```
/// use std::collections::HashMap;
/// use milonga_formats::JsonFormat;
/// use milonga_sdk::{Format, MemoryArtifact};
///
/// let artifact = MemoryArtifact::new();
/// let scores = HashMap::from([("b".to_owned(), 2), ("a".to_owned(), 1)]);
/// JsonFormat.write(scores.clone(), &artifact)?;
/// assert!(artifact.file("data").unwrap().ends_with(b"{\"a\":1,\"b\":2}\n"));
/// let back: HashMap<String, i32> = JsonFormat.read(artifact.handle())?;
/// assert_eq!(back, scores);
/// # Ok::<(), milonga_sdk::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonFormat;

impl JsonFormat {
    /// The format id, `"milonga.json"`.
    pub const ID: &'static str = "milonga.json";
    /// The version of the bytes this build writes, `1`.
    pub const VERSION: u32 = 1;
    /// The name of the artifact file, `"data"`.
    pub const FILE: &'static str = FILE;
}

impl<T> Format<T> for JsonFormat
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Output = T;

    fn id(&self) -> &str {
        Self::ID
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn write(&self, value: T, artifact: &dyn ArtifactWriter) -> Result<()> {
        let mut json = serde_json::to_value(&value).map_err(|e| Error::Encode {
            what: type_name::<T>().to_owned(),
            reason: e.to_string(),
        })?;
        drop(value);
        // Without serde_json's `preserve_order` feature objects are already sorted maps; with it
        // (enabled anywhere in the dependency graph) this restores the sorted order.
        json.sort_all_objects();
        write_data(artifact, Self::ID, Self::VERSION, |sink| {
            serde_json::to_writer(&mut *sink, &json)
                .map_err(io::Error::from)
                .and_then(|()| sink.write_all(b"\n"))
                .map_err(|e| Error::io(FILE, sink.take_error().unwrap_or(e)))
        })
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<T> {
        let (bytes, at) = read_data(&artifact, Self::ID, Self::VERSION)?;
        let payload = payload(&bytes, at);
        let Some((b'\n', json)) = payload.split_last() else {
            return Err(Error::corrupt(
                FILE,
                bytes_len(&bytes) as u64,
                "the JSON payload does not end with a newline (truncated?)",
            ));
        };
        serde_json::from_slice(json).map_err(|e| Error::Decode {
            file: FILE.to_owned(),
            offset: at as u64,
            reason: format!("JSON, as {}: {e}", type_name::<T>()),
        })
    }
}

/// A [`String`] stored as its UTF-8 bytes, for text that other tools should be able to read.
///
/// Id `"milonga.text"`, version 1. The `"data"` file is the envelope, the byte length of the
/// text as a little-endian `u64`, and the text. Reading checks the length against the file and
/// the text for valid UTF-8. Writing is deterministic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextFormat;

impl TextFormat {
    /// The format id, `"milonga.text"`.
    pub const ID: &'static str = "milonga.text";
    /// The version of the bytes this build writes, `1`.
    pub const VERSION: u32 = 1;
    /// The name of the artifact file, `"data"`.
    pub const FILE: &'static str = FILE;
}

impl Format<String> for TextFormat {
    type Output = String;

    fn id(&self) -> &str {
        Self::ID
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn write(&self, value: String, artifact: &dyn ArtifactWriter) -> Result<()> {
        write_data(artifact, Self::ID, Self::VERSION, |sink| {
            write_length_prefixed(sink, value.as_bytes())
        })
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<String> {
        let (bytes, at) = read_data(&artifact, Self::ID, Self::VERSION)?;
        let text = length_prefixed(payload(&bytes, at), at)?;
        match std::str::from_utf8(text) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Error::corrupt(
                FILE,
                (at + LENGTH_BYTES + e.valid_up_to()) as u64,
                format!("the text is not valid UTF-8: {e}"),
            )),
        }
    }
}

/// Raw bytes (`Vec<u8>`) stored as they are.
///
/// Id `"milonga.bytes"`, version 1. The `"data"` file is the envelope, the number of bytes as a
/// little-endian `u64`, and the bytes. Reading checks the length against the file. Writing is
/// deterministic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BytesFormat;

impl BytesFormat {
    /// The format id, `"milonga.bytes"`.
    pub const ID: &'static str = "milonga.bytes";
    /// The version of the bytes this build writes, `1`.
    pub const VERSION: u32 = 1;
    /// The name of the artifact file, `"data"`.
    pub const FILE: &'static str = FILE;
}

impl Format<Vec<u8>> for BytesFormat {
    type Output = Vec<u8>;

    fn id(&self) -> &str {
        Self::ID
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn write(&self, value: Vec<u8>, artifact: &dyn ArtifactWriter) -> Result<()> {
        write_data(artifact, Self::ID, Self::VERSION, |sink| {
            write_length_prefixed(sink, &value)
        })
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<Vec<u8>> {
        let (bytes, at) = read_data(&artifact, Self::ID, Self::VERSION)?;
        Ok(length_prefixed(payload(&bytes, at), at)?.to_vec())
    }
}

/// Buffers writes to the `"data"` file and keeps the first I/O error, which encoders such as
/// postcard replace with their own.
struct Sink {
    inner: BufWriter<Box<dyn FileWriter>>,
    error: Option<io::Error>,
}

impl Sink {
    fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }

    fn keep(&mut self, e: io::Error) -> io::Error {
        let kind = e.kind();
        if self.error.is_none() {
            self.error = Some(e);
        }
        io::Error::from(kind)
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.keep(e))
    }
}

/// Creates the `"data"` file, writes the envelope and then the payload with `body`, and
/// finishes the file. On any error the file is dropped unfinished, so nothing is published.
fn write_data(
    artifact: &dyn ArtifactWriter,
    id: &str,
    version: u32,
    body: impl FnOnce(&mut Sink) -> Result<()>,
) -> Result<()> {
    let mut sink = Sink {
        inner: BufWriter::new(artifact.create(FILE)?),
        error: None,
    };
    let mut head = Vec::new();
    Envelope::new(id, version).encode_into(&mut head)?;
    sink.write_all(&head)
        .map_err(|e| Error::io(FILE, sink.take_error().unwrap_or(e)))?;
    body(&mut sink)?;
    let file = sink
        .inner
        .into_inner()
        .map_err(|e| Error::io(FILE, e.into_error()))?;
    file.finish()?;
    Ok(())
}

/// The verified bytes of the `"data"` file and the offset of the payload after its envelope,
/// which must name `id` at a version this build reads.
fn read_data(artifact: &ArtifactHandle, id: &str, version: u32) -> Result<(SharedBytes, usize)> {
    let bytes = artifact.bytes(FILE)?;
    let all = (*bytes).as_ref();
    let (found, payload) = open_envelope(all, id, version, FILE)?;
    let at = all.len() - payload.len();
    if found == 0 {
        return Err(Error::corrupt(
            FILE,
            (at - 4) as u64,
            format!("{id} version 0 was never written"),
        ));
    }
    Ok((bytes, at))
}

fn bytes_len(bytes: &SharedBytes) -> usize {
    (**bytes).as_ref().len()
}

/// The payload of `bytes`, which starts at `at` (as returned by [`read_data`]).
fn payload(bytes: &SharedBytes, at: usize) -> &[u8] {
    (**bytes).as_ref().get(at..).unwrap_or_default()
}

/// The size of the length field of text and bytes payloads.
const LENGTH_BYTES: usize = 8;

fn write_length_prefixed(sink: &mut Sink, data: &[u8]) -> Result<()> {
    let len = data.len() as u64;
    sink.write_all(&len.to_le_bytes())
        .and_then(|()| sink.write_all(data))
        .map_err(|e| Error::io(FILE, sink.take_error().unwrap_or(e)))
}

/// Checks a `u64` length prefix against the bytes that follow it and returns them. `at` is the
/// offset of `payload` in the file, for errors.
fn length_prefixed(payload: &[u8], at: usize) -> Result<&[u8]> {
    let Some((head, rest)) = payload.split_first_chunk::<LENGTH_BYTES>() else {
        return Err(Error::corrupt(
            FILE,
            (at + payload.len()) as u64,
            format!(
                "truncated: the length field needs {LENGTH_BYTES} bytes, {} remain",
                payload.len()
            ),
        ));
    };
    let len = u64::from_le_bytes(*head);
    let have = rest.len() as u64;
    let start = (at + LENGTH_BYTES) as u64;
    if len > have {
        return Err(Error::corrupt(
            FILE,
            start + have,
            format!("truncated: the length field says {len} bytes, {have} follow"),
        ));
    }
    if len < have {
        return Err(Error::corrupt(
            FILE,
            start + len,
            format!(
                "{} trailing bytes after the {len} bytes of the value",
                have - len
            ),
        ));
    }
    Ok(rest)
}
