//! The built-in single-value formats: [`PostcardFormat`](type@PostcardFormat),
//! [`JsonFormat`](type@JsonFormat), [`TextFormat`](type@TextFormat) and
//! [`BytesFormat`](type@BytesFormat), all one generic [`ValueFormat`] over the encoding of the
//! body.
//!
//! Each stores one value as one artifact file named [`"data"`](PostcardFormat::FILE): the SDK
//! [`Envelope`] (format id and version) followed by the payload. The byte layouts are specified
//! in `docs/FORMAT.md` §8.1.
//!
//! # Compression
//! Version 2 of each format (the version this build writes) starts the payload with one
//! compression byte: `0` for a body stored as it is (exactly the version 1 payload follows),
//! `1` for a body compressed with zstd (its uncompressed length as a `u64`, then one zstd
//! frame). By default a body of [`DEFAULT_THRESHOLD`](PostcardFormat::DEFAULT_THRESHOLD) (512)
//! bytes or more is compressed at zstd level [`DEFAULT_LEVEL`](PostcardFormat::DEFAULT_LEVEL)
//! (3), and stored uncompressed when compressing does not make the payload smaller;
//! `uncompressed()`, `with_compression(..)` and `with_threshold(..)` change that.
//!
//! The setting only affects writing. Any instance reads every file, compressed or not (the
//! compression byte says what to do), and the setting is not part of the format's id or
//! version, so it does not enter step ids: changing it does not invalidate results. Version 1
//! files (written before compression existed) read forever.
//!
//! Reading never panics and never allocates more than the size of the file plus the
//! decompressed bytes as zstd actually produces them (never from a length field alone):
//! - a wrong format id is [`Error::WrongFormat`], a newer version
//!   [`Error::UnsupportedVersion`], no `"data"` file [`Error::MissingFile`];
//! - bytes that break the layout (truncation, trailing bytes, a length field that does not match
//!   the file or the decompressed body, an unknown compression byte, a damaged zstd frame,
//!   invalid UTF-8) are [`Error::Corrupt`] with the exact offset; a problem inside a compressed
//!   body is reported at the offset of the zstd frame, with its position in the decompressed
//!   body in the message;
//! - a body that serde cannot decode into the requested type is [`Error::Decode`], with the
//!   offset of the body (or of its zstd frame).
//!
//! Every layout is self-delimiting, so a file cut short anywhere is an error even without the
//! content hash the engine checks on top.

use std::any::type_name;
use std::borrow::Cow;
use std::fmt::{self, Debug, Display};
use std::io::{self, BufWriter, Write};
use std::marker::PhantomData;

use milonga_sdk::{
    open_envelope, ArtifactHandle, ArtifactWriter, Envelope, Error, FileWriter, Format, Result,
    SharedBytes,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::chunked::Compression;
use crate::zstd_frame::{Expect, FrameDecoder, Magic};

/// The name of the one file every single-value format writes.
const FILE: &str = "data";

/// The zstd level of the default settings.
const DEFAULT_LEVEL: i32 = 3;

/// The smallest body the default settings compress, in bytes.
const DEFAULT_THRESHOLD: usize = 512;

/// How a format compresses what it writes. Not needed to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How bodies are compressed.
    compression: Compression,
    /// The smallest body that is compressed, in bytes.
    threshold: usize,
}

impl Settings {
    const DEFAULT: Settings = Settings {
        compression: Compression::Zstd {
            level: DEFAULT_LEVEL,
        },
        threshold: DEFAULT_THRESHOLD,
    };

    /// The zstd level bodies are compressed at, `None` if they never are.
    const fn level(&self) -> Option<i32> {
        match self.compression {
            Compression::Zstd { level } => Some(level),
            Compression::None => None,
        }
    }
}

/// One value stored as the `"data"` file: the envelope, a compression byte and a body encoded by
/// `E` (one of the encodings in [`value_encoding`](crate::value_encoding)). Use it through its
/// names [`PostcardFormat`](type@PostcardFormat), [`JsonFormat`](type@JsonFormat),
/// [`TextFormat`](type@TextFormat) and [`BytesFormat`](type@BytesFormat), each also a constant
/// with the default settings.
///
/// All four share the layout, the compression settings and the errors described in
/// the documentation of [`PostcardFormat`](type@PostcardFormat) and in `docs/FORMAT.md` §8.1;
/// only the body differs.
pub struct ValueFormat<E> {
    settings: Settings,
    encoding: PhantomData<fn() -> E>,
}

impl<E> Clone for ValueFormat<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ValueFormat<E> {}

impl<E> PartialEq for ValueFormat<E> {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl<E> Eq for ValueFormat<E> {}

impl<E: encoding::Encoding> Debug for ValueFormat<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(E::NAME)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<E: encoding::Encoding> ValueFormat<E> {
    /// The format id: `"milonga.postcard"`, `"milonga.json"`, `"milonga.text"` or
    /// `"milonga.bytes"`.
    pub const ID: &'static str = E::ID;
    /// The version of the bytes this build writes, `2`. It reads versions 1 and 2.
    pub const VERSION: u32 = 2;
    /// The name of the artifact file, `"data"`.
    pub const FILE: &'static str = FILE;
    /// The zstd level of the default settings, `3`.
    pub const DEFAULT_LEVEL: i32 = DEFAULT_LEVEL;
    /// The smallest body the default settings compress: `512` bytes.
    pub const DEFAULT_THRESHOLD: usize = DEFAULT_THRESHOLD;
    /// The default settings, also `default()` and the constant of the format's name (the value
    /// `PostcardFormat`): bodies of 512 bytes or more are compressed with zstd level 3.
    pub const DEFAULT: Self = Self {
        settings: Settings::DEFAULT,
        encoding: PhantomData,
    };

    /// The format that never compresses (it still reads compressed files).
    #[must_use]
    pub const fn uncompressed() -> Self {
        Self::DEFAULT.with_compression(Compression::None)
    }

    /// The same settings with bodies compressed with zstd at a level ([`Compression::Zstd`]:
    /// `1..=22`, or a negative level for zstd's fast modes; `0` is zstd's default, level 3), or
    /// never compressed ([`Compression::None`]). Bodies shorter than the
    /// [`threshold`](Self::with_threshold) are never compressed.
    #[must_use]
    pub const fn with_compression(self, compression: Compression) -> Self {
        Self {
            settings: Settings {
                compression,
                threshold: self.settings.threshold,
            },
            encoding: PhantomData,
        }
    }

    /// The same settings with bodies shorter than `bytes` stored uncompressed (`0` compresses
    /// every body).
    #[must_use]
    pub const fn with_threshold(self, bytes: usize) -> Self {
        Self {
            settings: Settings {
                compression: self.settings.compression,
                threshold: bytes,
            },
            encoding: PhantomData,
        }
    }

    /// How bodies are compressed.
    pub const fn compression(&self) -> Compression {
        self.settings.compression
    }

    /// The smallest body that is compressed, in bytes.
    pub const fn threshold(&self) -> usize {
        self.settings.threshold
    }
}

impl<E: encoding::Encoding> Default for ValueFormat<E> {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl<T, E> Format<T> for ValueFormat<E>
where
    T: Send + Sync + 'static,
    E: encoding::ValueEncoding<T>,
{
    type Output = T;

    fn id(&self) -> &str {
        E::ID
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn write(&self, value: T, artifact: &dyn ArtifactWriter) -> Result<()> {
        write_data(artifact, E::ID, Self::VERSION, |sink| {
            E::write(value, self.settings, sink)
        })
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<T> {
        let (bytes, at, version) = read_data(&artifact, E::ID, Self::VERSION)?;
        E::read(body(&bytes, at, version, E::PREFIX)?)
    }
}

/// What a [`ValueFormat`] needs from the encoding of its body. Not implementable outside this
/// crate: the four encodings are [`value_encoding`](crate::value_encoding)'s.
pub(crate) mod encoding {
    use super::{Body, Prefix, Settings, Sink};
    use milonga_sdk::Result;

    /// The id and layout of an encoding.
    pub trait Encoding: 'static {
        /// The format id.
        const ID: &'static str;
        /// The type's name, for `Debug`.
        const NAME: &'static str;
        /// Whether an uncompressed body is preceded by its length.
        const PREFIX: Prefix;
    }

    /// Writing and reading a `T` as the body.
    pub trait ValueEncoding<T>: Encoding {
        /// Writes the payload after the envelope (compression byte and body).
        fn write(value: T, settings: Settings, sink: &mut Sink) -> Result<()>;
        /// Decodes the body.
        fn read(body: Body<'_>) -> Result<T>;
    }
}

/// The encodings of a [`ValueFormat`]'s body: the `E` of
/// [`PostcardFormat`](type@crate::PostcardFormat) = `ValueFormat<Postcard>` and the others.
pub mod value_encoding {
    /// The body is the postcard encoding of a serde value.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Postcard {}
    /// The body is a serde value as compact JSON with sorted keys, and a newline.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Json {}
    /// The body is a `String`'s UTF-8 bytes, after their length.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Text {}
    /// The body is a `Vec<u8>`'s bytes, after their length.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Bytes {}
}

use value_encoding::{Bytes, Json, Postcard, Text};

impl encoding::Encoding for Postcard {
    const ID: &'static str = "milonga.postcard";
    const NAME: &'static str = "PostcardFormat";
    const PREFIX: Prefix = Prefix::None;
}

impl encoding::Encoding for Json {
    const ID: &'static str = "milonga.json";
    const NAME: &'static str = "JsonFormat";
    const PREFIX: Prefix = Prefix::None;
}

impl encoding::Encoding for Text {
    const ID: &'static str = "milonga.text";
    const NAME: &'static str = "TextFormat";
    const PREFIX: Prefix = Prefix::Length;
}

impl encoding::Encoding for Bytes {
    const ID: &'static str = "milonga.bytes";
    const NAME: &'static str = "BytesFormat";
    const PREFIX: Prefix = Prefix::Length;
}

/// Any serde value as [postcard](https://docs.rs/postcard): compact and fast. The default
/// format of steps.
///
/// Id `"milonga.postcard"`, version 2. The `"data"` file is the envelope, a compression byte,
/// and the postcard encoding of the value (postcard 1.x wire format, which is specified and
/// stable), compressed with zstd when it is 512 bytes or more (see
/// [Compression](#compression)).
///
/// `PostcardFormat` is both a type and a constant of that type with the default settings, so
/// `type Format = PostcardFormat;`, `PostcardFormat::default()` and `PostcardFormat` (the value)
/// all mean the same thing.
///
/// # Compression
/// The payload starts with a compression byte. By default a body (here: the postcard encoding)
/// of [`DEFAULT_THRESHOLD`](ValueFormat::DEFAULT_THRESHOLD) = 512 bytes or more is compressed with
/// zstd at level [`DEFAULT_LEVEL`](ValueFormat::DEFAULT_LEVEL) = 3 (about 2.7 times smaller for
/// typical records of numbers and words), unless that does not make the payload smaller; a
/// shorter body is stored as it is. Configure with [`uncompressed()`](ValueFormat::uncompressed),
/// [`with_compression(Compression::Zstd { level })`](ValueFormat::with_compression) and
/// [`with_threshold(bytes)`](ValueFormat::with_threshold), for example in a step's
/// `fn format(&self) -> PostcardFormat { PostcardFormat::uncompressed() }`. The four
/// single-value formats work the same way.
///
/// The settings only affect writing: any instance reads files written with any settings (the
/// compression byte says how), and they are not part of [`id`](Format::id) or
/// [`version`](Format::version), so they do not enter step ids and changing them does not
/// invalidate stored results. Files of version 1 (never compressed) still read.
///
/// # Determinism
/// Postcard writes the value in its own [`Serialize`] order. Structs, `Vec`, `BTreeMap` and
/// `BTreeSet` always give the same bytes; a `HashMap` or `HashSet` serializes in its iteration
/// order, which changes between processes, so the same map can give different bytes. Use a
/// `BTreeMap` where the bytes must be stable, or [`JsonFormat`](type@JsonFormat) for maps with
/// string keys. Compression is single-threaded at a fixed level and deterministic for a given
/// zstd library version (zstd 1.5.7, pinned by golden-byte tests).
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
///
/// // Any settings read any file.
/// let big = vec![0u64; 1000];
/// let artifact = MemoryArtifact::new();
/// PostcardFormat.write(big.clone(), &artifact)?;
/// assert!(artifact.file("data").unwrap().len() < 100); // compressed
/// let back: Vec<u64> = PostcardFormat::uncompressed().read(artifact.handle())?;
/// assert_eq!(back, big);
/// # Ok::<(), milonga_sdk::Error>(())
/// ```
pub type PostcardFormat = ValueFormat<Postcard>;

/// [`PostcardFormat`](type@PostcardFormat) with the default settings, so that `PostcardFormat` still works as a value
/// (`PostcardFormat.write(..)`, `&PostcardFormat`).
#[allow(non_upper_case_globals)]
pub const PostcardFormat: PostcardFormat = PostcardFormat::DEFAULT;

/// Any serde value as JSON text: readable by people and other tools.
///
/// Id `"milonga.json"`, version 2. The `"data"` file is the envelope, a compression byte, and
/// the value as compact JSON (no spaces, no newlines inside) followed by one newline byte
/// (`0x0a`), which makes truncation detectable even for a top-level number; compressed with
/// zstd when that body is 512 bytes or more (see [compression](type@PostcardFormat#compression);
/// [`JsonFormat::uncompressed()`](ValueFormat::uncompressed) keeps every file plain text after the
/// compression byte). Like [`PostcardFormat`](type@PostcardFormat), `JsonFormat` is also a
/// constant with the default settings.
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
/// assert!(artifact.file("data").unwrap().ends_with(b"\x00{\"a\":1,\"b\":2}\n"));
/// let back: HashMap<String, i32> = JsonFormat.read(artifact.handle())?;
/// assert_eq!(back, scores);
/// # Ok::<(), milonga_sdk::Error>(())
/// ```
pub type JsonFormat = ValueFormat<Json>;

/// [`JsonFormat`](type@JsonFormat) with the default settings, so that `JsonFormat` still works as a value
/// (`JsonFormat.write(..)`, `&JsonFormat`).
#[allow(non_upper_case_globals)]
pub const JsonFormat: JsonFormat = JsonFormat::DEFAULT;

/// A [`String`] stored as its UTF-8 bytes, for text that other tools should be able to read.
///
/// Id `"milonga.text"`, version 2. The `"data"` file is the envelope, a compression byte, the
/// byte length of the text as a little-endian `u64`, and the text, compressed with zstd when it
/// is 512 bytes or more (see [compression](type@PostcardFormat#compression);
/// [`TextFormat::uncompressed()`](ValueFormat::uncompressed) keeps the text readable in the file).
/// Reading checks the length against the file (or the decompressed text) and the text for valid
/// UTF-8. Writing is deterministic. `TextFormat` is also a constant with the default settings.
pub type TextFormat = ValueFormat<Text>;

/// [`TextFormat`](type@TextFormat) with the default settings, so that `TextFormat` still works as a value
/// (`TextFormat.write(..)`, `&TextFormat`).
#[allow(non_upper_case_globals)]
pub const TextFormat: TextFormat = TextFormat::DEFAULT;

/// Raw bytes (`Vec<u8>`) stored as they are.
///
/// Id `"milonga.bytes"`, version 2. The `"data"` file is the envelope, a compression byte, the
/// number of bytes as a little-endian `u64`, and the bytes, compressed with zstd when there are
/// 512 or more and compression makes them smaller (see
/// [compression](type@PostcardFormat#compression)). Reading checks the length against the file (or the
/// decompressed bytes). Writing is deterministic. `BytesFormat` is also a constant with the
/// default settings.
pub type BytesFormat = ValueFormat<Bytes>;

/// [`BytesFormat`](type@BytesFormat) with the default settings, so that `BytesFormat` still works as a value
/// (`BytesFormat.write(..)`, `&BytesFormat`).
#[allow(non_upper_case_globals)]
pub const BytesFormat: BytesFormat = BytesFormat::DEFAULT;

impl<T> encoding::ValueEncoding<T> for Postcard
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn write(value: T, settings: Settings, sink: &mut Sink) -> Result<()> {
        let encode_error = |e: postcard::Error| Error::Encode {
            what: type_name::<T>().to_owned(),
            reason: e.to_string(),
        };
        if settings.level().is_none() {
            // Streams the value to the file, with no copy in memory.
            write_all(sink, &[NONE])?;
            return match postcard::to_io(&value, &mut *sink) {
                Ok(_) => Ok(()),
                Err(e) => Err(sink
                    .take_error()
                    .map_or_else(|| encode_error(e), |io| Error::io(FILE, io))),
            };
        }
        let body = postcard::to_stdvec(&value).map_err(encode_error)?;
        drop(value);
        write_body(sink, settings, &body, Prefix::None)
    }

    fn read(body: Body<'_>) -> Result<T> {
        let (value, rest) = postcard::take_from_bytes::<T>(&body.bytes).map_err(|e| {
            body.origin
                .decode(format!("postcard, as {}: {e}", type_name::<T>()))
        })?;
        if !rest.is_empty() {
            return Err(body.origin.corrupt(
                body.bytes.len() - rest.len(),
                format!("{} trailing bytes after the value", rest.len()),
            ));
        }
        Ok(value)
    }
}

impl<T> encoding::ValueEncoding<T> for Json
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn write(value: T, settings: Settings, sink: &mut Sink) -> Result<()> {
        let mut json = serde_json::to_value(&value).map_err(|e| Error::Encode {
            what: type_name::<T>().to_owned(),
            reason: e.to_string(),
        })?;
        drop(value);
        // Without serde_json's `preserve_order` feature objects are already sorted maps; with it
        // (enabled anywhere in the dependency graph) this restores the sorted order.
        json.sort_all_objects();
        if settings.level().is_none() {
            // Streams the text to the file, with no copy in memory.
            write_all(sink, &[NONE])?;
            return serde_json::to_writer(&mut *sink, &json)
                .map_err(io::Error::from)
                .and_then(|()| sink.write_all(b"\n"))
                .map_err(|e| Error::io(FILE, sink.take_error().unwrap_or(e)));
        }
        let mut body = serde_json::to_vec(&json).map_err(|e| Error::Encode {
            what: type_name::<T>().to_owned(),
            reason: e.to_string(),
        })?;
        drop(json);
        body.push(b'\n');
        write_body(sink, settings, &body, Prefix::None)
    }

    fn read(body: Body<'_>) -> Result<T> {
        let Some((b'\n', json)) = body.bytes.split_last() else {
            return Err(body.origin.corrupt(
                body.bytes.len(),
                "the JSON payload does not end with a newline (truncated?)",
            ));
        };
        serde_json::from_slice(json).map_err(|e| {
            body.origin
                .decode(format!("JSON, as {}: {e}", type_name::<T>()))
        })
    }
}

impl encoding::ValueEncoding<String> for Text {
    fn write(value: String, settings: Settings, sink: &mut Sink) -> Result<()> {
        write_body(sink, settings, value.as_bytes(), Prefix::Length)
    }

    fn read(body: Body<'_>) -> Result<String> {
        let origin = body.origin;
        match body.bytes {
            Cow::Borrowed(text) => match std::str::from_utf8(text) {
                Ok(s) => Ok(s.to_owned()),
                Err(e) => Err(not_utf8(origin, &e)),
            },
            Cow::Owned(text) => {
                String::from_utf8(text).map_err(|e| not_utf8(origin, &e.utf8_error()))
            }
        }
    }
}

fn not_utf8(origin: Origin, e: &std::str::Utf8Error) -> Error {
    origin.corrupt(e.valid_up_to(), format!("the text is not valid UTF-8: {e}"))
}

impl encoding::ValueEncoding<Vec<u8>> for Bytes {
    fn write(value: Vec<u8>, settings: Settings, sink: &mut Sink) -> Result<()> {
        write_body(sink, settings, &value, Prefix::Length)
    }

    fn read(body: Body<'_>) -> Result<Vec<u8>> {
        Ok(body.bytes.into_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// Compression byte: the body follows as it is (the version 1 payload).
const NONE: u8 = 0;
/// Compression byte: the body's length (`u64`) and one zstd frame of it follow.
const ZSTD: u8 = 1;

/// Whether an uncompressed body is preceded by its length (text and bytes) or delimits itself
/// (postcard, JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    None,
    Length,
}

/// Buffers writes to the `"data"` file and keeps the first I/O error, which encoders such as
/// postcard replace with their own.
pub struct Sink {
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

fn write_all(sink: &mut Sink, bytes: &[u8]) -> Result<()> {
    sink.write_all(bytes)
        .map_err(|e| Error::io(FILE, sink.take_error().unwrap_or(e)))
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
    write_all(&mut sink, &head)?;
    body(&mut sink)?;
    let file = sink
        .inner
        .into_inner()
        .map_err(|e| Error::io(FILE, e.into_error()))?;
    file.finish()?;
    Ok(())
}

/// Writes the version 2 payload of `body`: compressed when the settings say so, the body is
/// long enough and the compressed payload is smaller; otherwise as it is.
fn write_body(sink: &mut Sink, settings: Settings, body: &[u8], prefix: Prefix) -> Result<()> {
    let len = (body.len() as u64).to_le_bytes();
    if let Some(level) = settings
        .level()
        .filter(|_| body.len() >= settings.threshold)
    {
        let frame = zstd::bulk::compress(body, level).map_err(|e| Error::Encode {
            what: format!("zstd frame of the {} bytes of the body", body.len()),
            reason: e.to_string(),
        })?;
        let plain = body.len()
            + if prefix == Prefix::Length {
                LENGTH_BYTES
            } else {
                0
            };
        if LENGTH_BYTES + frame.len() < plain {
            write_all(sink, &[ZSTD])?;
            write_all(sink, &len)?;
            return write_all(sink, &frame);
        }
    }
    write_all(sink, &[NONE])?;
    if prefix == Prefix::Length {
        write_all(sink, &len)?;
    }
    write_all(sink, body)
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// The verified bytes of the `"data"` file, the offset of the payload after its envelope, and
/// the version the envelope names, which must be one this build reads (1 to `version`).
fn read_data(
    artifact: &ArtifactHandle,
    id: &str,
    version: u32,
) -> Result<(SharedBytes, usize, u32)> {
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
    Ok((bytes, at, found))
}

/// Where the bytes of a [`Body`] come from, for errors.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// Stored as they are, from this offset of the file.
    File(usize),
    /// Decompressed from the zstd frame at this offset of the file.
    Zstd(usize),
}

impl Origin {
    /// A `Corrupt` error about byte `at` of the body.
    fn corrupt(self, at: usize, reason: impl Display) -> Error {
        match self {
            Origin::File(start) => Error::corrupt(FILE, (start + at) as u64, reason),
            Origin::Zstd(frame) => Error::corrupt(
                FILE,
                frame as u64,
                format!("{reason} (at byte {at} of the body decompressed from the zstd frame)"),
            ),
        }
    }

    /// A `Decode` error about the body.
    fn decode(self, reason: String) -> Error {
        let (offset, reason) = match self {
            Origin::File(start) => (start, reason),
            Origin::Zstd(frame) => (
                frame,
                format!("{reason} (in the body decompressed from the zstd frame)"),
            ),
        };
        Error::Decode {
            file: FILE.to_owned(),
            offset: offset as u64,
            reason,
        }
    }
}

/// The body of a value: the bytes the format's decoder reads.
pub struct Body<'a> {
    bytes: Cow<'a, [u8]>,
    origin: Origin,
}

/// The body of the payload that starts at `at` in `bytes`, for a file of `version`: version 1
/// payloads are bodies stored as they are; version 2 payloads start with a compression byte.
fn body(bytes: &SharedBytes, at: usize, version: u32, prefix: Prefix) -> Result<Body<'_>> {
    let all = (**bytes).as_ref();
    let payload = all.get(at..).unwrap_or_default();
    if version == 1 {
        return plain(payload, at, prefix);
    }
    let Some((&compression, rest)) = payload.split_first() else {
        return Err(Error::corrupt(
            FILE,
            at as u64,
            "truncated: the compression byte is missing",
        ));
    };
    match compression {
        NONE => plain(rest, at + 1, prefix),
        ZSTD => {
            let (len, frame) = length(rest, at + 1)?;
            let frame_at = at + 1 + LENGTH_BYTES;
            let mut out = Vec::new();
            FrameDecoder::new()
                .decode(frame, Magic::Stored, Expect::Exactly(len), &mut out)
                .map_err(|e| e.corrupt(FILE, frame_at as u64, (at + 1) as u64))?;
            Ok(Body {
                bytes: Cow::Owned(out),
                origin: Origin::Zstd(frame_at),
            })
        }
        other => Err(Error::corrupt(
            FILE,
            at as u64,
            format!("unknown compression byte {other} (0 = none, 1 = zstd)"),
        )),
    }
}

/// An uncompressed body at offset `at`, after its length field if it has one.
fn plain(payload: &[u8], at: usize, prefix: Prefix) -> Result<Body<'_>> {
    Ok(match prefix {
        Prefix::None => Body {
            bytes: Cow::Borrowed(payload),
            origin: Origin::File(at),
        },
        Prefix::Length => Body {
            bytes: Cow::Borrowed(length_prefixed(payload, at)?),
            origin: Origin::File(at + LENGTH_BYTES),
        },
    })
}

/// The size of the length fields.
const LENGTH_BYTES: usize = 8;

/// Splits the `u64` length field off `payload`, which starts at offset `at` of the file.
fn length(payload: &[u8], at: usize) -> Result<(u64, &[u8])> {
    match payload.split_first_chunk::<LENGTH_BYTES>() {
        Some((head, rest)) => Ok((u64::from_le_bytes(*head), rest)),
        None => Err(Error::corrupt(
            FILE,
            (at + payload.len()) as u64,
            format!(
                "truncated: the length field needs {LENGTH_BYTES} bytes, {} remain",
                payload.len()
            ),
        )),
    }
}

/// Checks a `u64` length prefix against the bytes that follow it and returns them. `at` is the
/// offset of `payload` in the file, for errors.
fn length_prefixed(payload: &[u8], at: usize) -> Result<&[u8]> {
    let (len, rest) = length(payload, at)?;
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
