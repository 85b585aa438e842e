//! Plain-file stream formats for interop: [`JsonLinesFormat`] stores a [`Stream`] as JSON
//! lines (`.jsonl`), [`TextLinesFormat`] a stream of strings as text lines (`.txt`), both
//! optionally as standard zstd frames (`.jsonl.zst`, `.txt.zst`) that `zstd -d`, `zstdcat` and
//! pandas (`pd.read_json(path, lines=True)`) read as they are.
//!
//! The items go into part files `parts/{seq:06}-{first item}-{item count}.{ext}`, each a
//! whole number of lines (every line ends with `\n`), sealed whenever it reaches the part size
//! (8 MiB of text by default). Each finished part is durable on its own, which is what makes a
//! write resumable: [`durable_items`](Format::durable_items) counts the items of the parts an
//! interrupted write left, and the next `write` continues after them. The file `index`, written
//! last, is the only milonga-specific file: an envelope, the item count, and for each part its
//! item count, text length and compression. Concatenating the parts in name order gives the
//! whole stream as one plain file. The bytes are specified in `docs/FORMAT.md` §8.4.
//!
//! Reading is lazy: [`LinesReader::iter`] loads one part at a time; [`LinesReader::get`] finds
//! the part through the index and scans that part's lines (the last part scanned is kept, so
//! nearby lookups are cheap). There is no per-line offset index: a lookup costs one part, not
//! one line. Like [`StreamFormat`](crate::StreamFormat), a reader opened while the write is in
//! progress follows it part by part, and reports a writer that died as
//! [`Error::WriterDied`] (see [`LinesReader`]).

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use milonga_sdk::{
    open_envelope, ArtifactHandle, ArtifactStatus, ArtifactWriter, Envelope, Error, Format, Result,
    SharedBytes,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::chunked::Compression;
use crate::sorted_json::Sorted;
use crate::stream::Stream;
use crate::zstd_frame::{zstd_cctx, Expect, FrameDecoder, Magic};

/// The file written last: envelope, item count and the parts' entries.
const INDEX_FILE: &str = "index";
/// The folder of the part files.
const PARTS_DIR: &str = "parts/";
/// The default part size: 8 MiB of text.
const DEFAULT_PART_BYTES: usize = 8 << 20;
/// The largest part a reader accepts (and a writer writes), in bytes of text: 1 GiB.
const MAX_PART_BYTES: u64 = 1 << 30;
/// Bytes of the index before its entries: item count (`u64`) and part count (`u32`).
const INDEX_HEAD: usize = 12;
/// Bytes of one part entry: item count (`u64`), text length (`u64`), compression (`u8`).
const ENTRY_LEN: usize = 17;

/// The writing settings of a lines format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    compression: Compression,
    part_bytes: usize,
}

impl Settings {
    const DEFAULT: Settings = Settings {
        compression: Compression::None,
        part_bytes: DEFAULT_PART_BYTES,
    };
}

/// What distinguishes the two formats: ids, file extension and how a line is made and read.
struct Kind<T> {
    id: &'static str,
    ext: &'static str,
    encode: fn(&T, &mut Vec<u8>) -> Result<()>,
    decode: fn(&[u8]) -> LineResult<T>,
}

/// A decoded line, or the offset in the line and the reason it does not decode.
type LineResult<T> = std::result::Result<T, (usize, String)>;

impl<T> Clone for Kind<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Kind<T> {}

/// The settings methods both formats share.
macro_rules! lines_settings {
    () => {
        /// The version of the bytes this build writes, `1`.
        pub const VERSION: u32 = 1;

        /// The same format with parts compressed as standard zstd frames (`.zst` files) or
        /// stored as plain text ([`Compression::None`], the default). Readers handle both, part
        /// by part.
        #[must_use]
        pub fn with_compression(mut self, compression: Compression) -> Self {
            self.settings.compression = compression;
            self
        }

        /// The same format with parts sealed once they hold `bytes` bytes of text (default
        /// 8 MiB; at least one line per part, at most 1 GiB). Smaller parts make
        /// [`get`](LinesReader::get) cheaper and resume finer; larger parts compress better.
        #[must_use]
        pub fn with_part_size(mut self, bytes: usize) -> Self {
            self.settings.part_bytes = bytes.max(1);
            self
        }

        /// How parts are compressed.
        pub fn compression(&self) -> Compression {
            self.settings.compression
        }
    };
}

/// A [`Stream`] of serde values stored as JSON lines: one compact JSON document per line,
/// readable by any tool (`jq`, pandas, `zstdcat parts/* | jq`).
///
/// Id `"milonga.jsonl"`, version 1. Lines are written as [`JsonCodec`](crate::JsonCodec)
/// writes items: the entries of every map sorted by key, so the bytes do not depend on a
/// `HashMap`'s iteration order, and struct fields in declaration order (the column order
/// pandas shows). The files are `parts/{seq:06}-{first}-{count}.jsonl` (or `.jsonl.zst`) and
/// an `index` (`docs/FORMAT.md` §8.4); reading returns a lazy [`LinesReader`].
///
/// ```
/// use milonga_formats::chunked::Compression;
/// use milonga_formats::{JsonLinesFormat, Stream};
/// use milonga_sdk::{Format, MemoryArtifact};
///
/// let format = JsonLinesFormat::<(u32, String)>::new();
/// let artifact = MemoryArtifact::new();
/// format.write(Stream::new((0..3).map(|i| (i, format!("n{i}")))), &artifact)?;
/// assert_eq!(
///     artifact.file("parts/000000-0-3.jsonl").unwrap(),
///     b"[0,\"n0\"]\n[1,\"n1\"]\n[2,\"n2\"]\n"
/// );
/// let reader = format.read(artifact.handle())?;
/// assert_eq!(reader.get(2)?, (2, "n2".to_owned()));
///
/// // Compressed parts are standard zstd frames.
/// let zstd = format.with_compression(Compression::Zstd { level: 3 });
/// let artifact = MemoryArtifact::new();
/// zstd.write(Stream::new((0..3).map(|i| (i, format!("n{i}")))), &artifact)?;
/// let part = artifact.file("parts/000000-0-3.jsonl.zst").unwrap();
/// assert_eq!(zstd::decode_all(&part[..]).unwrap(), b"[0,\"n0\"]\n[1,\"n1\"]\n[2,\"n2\"]\n");
/// # Ok::<(), milonga_sdk::Error>(())
/// ```
pub struct JsonLinesFormat<T> {
    settings: Settings,
    _items: PhantomData<fn() -> T>,
}

impl<T> JsonLinesFormat<T> {
    /// The format id, `"milonga.jsonl"`.
    pub const ID: &'static str = "milonga.jsonl";

    /// Plain `.jsonl` parts of 8 MiB.
    pub const fn new() -> Self {
        JsonLinesFormat {
            settings: Settings::DEFAULT,
            _items: PhantomData,
        }
    }

    lines_settings!();
}

impl<T> Default for JsonLinesFormat<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for JsonLinesFormat<T> {
    fn clone(&self) -> Self {
        JsonLinesFormat {
            settings: self.settings,
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for JsonLinesFormat<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesFormat")
            .field("compression", &self.settings.compression)
            .field("part_bytes", &self.settings.part_bytes)
            .finish()
    }
}

fn json_encode<T: Serialize>(item: &T, out: &mut Vec<u8>) -> Result<()> {
    serde_json::to_writer(out, &Sorted(item)).map_err(|e| Error::Encode {
        what: std::any::type_name::<T>().to_owned(),
        reason: e.to_string(),
    })
}

fn json_decode<T: DeserializeOwned>(line: &[u8]) -> std::result::Result<T, (usize, String)> {
    serde_json::from_slice(line)
        .map_err(|e| (0, format!("JSON, as {}: {e}", std::any::type_name::<T>())))
}

impl<T> JsonLinesFormat<T>
where
    T: Serialize + DeserializeOwned,
{
    fn kind() -> Kind<T> {
        Kind {
            id: Self::ID,
            ext: "jsonl",
            encode: json_encode::<T>,
            decode: json_decode::<T>,
        }
    }
}

impl<T> Format<Stream<T>> for JsonLinesFormat<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    type Output = LinesReader<T>;

    fn id(&self) -> &str {
        Self::ID
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn write(&self, value: Stream<T>, artifact: &dyn ArtifactWriter) -> Result<()> {
        write_lines(artifact, Self::kind(), self.settings, value)
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<LinesReader<T>> {
        LinesReader::open(artifact, Self::kind())
    }

    fn durable_items(&self, artifact: &dyn ArtifactWriter) -> Result<u64> {
        Ok(durable_parts(artifact, Self::kind())?
            .iter()
            .map(|p| p.count)
            .sum())
    }
}

/// A [`Stream`] of strings stored as text lines: each string, as its UTF-8 bytes, then `\n`.
///
/// Id `"milonga.text_lines"`, version 1. A string that contains `\n` cannot be written
/// ([`Error::Encode`]); reading checks each line for valid UTF-8. The files are
/// `parts/{seq:06}-{first}-{count}.txt` (or `.txt.zst`) and an `index` (`docs/FORMAT.md` §8.4);
/// reading returns a lazy [`LinesReader`].
///
/// ```
/// use milonga_formats::{Stream, TextLinesFormat};
/// use milonga_sdk::{Format, MemoryArtifact};
///
/// let artifact = MemoryArtifact::new();
/// TextLinesFormat::new().write(Stream::new(["a", "b c"].map(String::from)), &artifact)?;
/// assert_eq!(artifact.file("parts/000000-0-2.txt").unwrap(), b"a\nb c\n");
/// let lines = TextLinesFormat::new().read(artifact.handle())?;
/// assert_eq!(lines.iter().collect::<Result<Vec<_>, _>>()?, ["a", "b c"]);
/// # Ok::<(), milonga_sdk::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLinesFormat {
    settings: Settings,
}

impl TextLinesFormat {
    /// The format id, `"milonga.text_lines"`.
    pub const ID: &'static str = "milonga.text_lines";

    /// Plain `.txt` parts of 8 MiB.
    pub const fn new() -> Self {
        TextLinesFormat {
            settings: Settings::DEFAULT,
        }
    }

    lines_settings!();

    fn kind() -> Kind<String> {
        Kind {
            id: Self::ID,
            ext: "txt",
            encode: text_encode,
            decode: text_decode,
        }
    }
}

impl Default for TextLinesFormat {
    fn default() -> Self {
        Self::new()
    }
}

// A `fn(&T, ..)` with `T = String`, so `&String`.
#[allow(clippy::ptr_arg)]
fn text_encode(item: &String, out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(item.as_bytes());
    Ok(())
}

fn text_decode(line: &[u8]) -> std::result::Result<String, (usize, String)> {
    match std::str::from_utf8(line) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err((e.valid_up_to(), format!("the line is not valid UTF-8: {e}"))),
    }
}

impl Format<Stream<String>> for TextLinesFormat {
    type Output = LinesReader<String>;

    fn id(&self) -> &str {
        Self::ID
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn write(&self, value: Stream<String>, artifact: &dyn ArtifactWriter) -> Result<()> {
        write_lines(artifact, Self::kind(), self.settings, value)
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<LinesReader<String>> {
        LinesReader::open(artifact, Self::kind())
    }

    fn durable_items(&self, artifact: &dyn ArtifactWriter) -> Result<u64> {
        Ok(durable_parts(artifact, Self::kind())?
            .iter()
            .map(|p| p.count)
            .sum())
    }
}

// ---------------------------------------------------------------------------------------------
// Parts.

/// One part as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    /// The number of the part's first item in the stream.
    first: u64,
    /// Its items (lines).
    count: u64,
    /// Its length in bytes of text (decompressed).
    text_len: u64,
    /// Whether it is a zstd frame.
    zstd: bool,
}

impl Part {
    fn name(&self, seq: usize, ext: &str) -> String {
        let zst = if self.zstd { ".zst" } else { "" };
        format!(
            "{PARTS_DIR}{seq:06}-{}-{}.{ext}{zst}",
            self.first, self.count
        )
    }
}

/// The text of a part: the file itself, or its decompressed frame.
enum Text {
    Stored(SharedBytes),
    Decompressed(Vec<u8>),
}

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Stored(b) => (**b).as_ref(),
            Text::Decompressed(v) => v,
        }
    }
}

/// A part's text and where its lines start.
struct LoadedPart {
    seq: usize,
    name: String,
    text: Text,
    /// The start of each line, then the end of the text.
    starts: Vec<usize>,
}

impl LoadedPart {
    /// Line `k` without its newline, and its offset in the text.
    fn line(&self, k: usize) -> Option<(&[u8], usize)> {
        let start = *self.starts.get(k)?;
        let end = self.starts.get(k + 1)?.checked_sub(1)?;
        Some((self.text.bytes().get(start..end)?, start))
    }
}

/// Reads part `seq` (described by `part`) from `bytes`: decompresses it if it is a zstd frame,
/// checks its length and that it holds exactly its lines, and finds where they start.
fn load_part(bytes: SharedBytes, seq: usize, part: &Part, name: String) -> Result<LoadedPart> {
    let text = if part.zstd {
        let mut out = Vec::new();
        FrameDecoder::new()
            .decode(
                (*bytes).as_ref(),
                Magic::Stored,
                Expect::Exactly(part.text_len),
                &mut out,
            )
            .map_err(|e| e.corrupt(&name, 0, 0))?;
        Text::Decompressed(out)
    } else {
        let len = (*bytes).as_ref().len() as u64;
        if len != part.text_len {
            return Err(Error::corrupt(
                &name,
                len.min(part.text_len),
                format!("the index says {} bytes, the part has {len}", part.text_len),
            ));
        }
        Text::Stored(bytes)
    };
    let all = text.bytes();
    // Every line takes at least its newline: the count cannot make this allocation lie.
    let mut starts = Vec::with_capacity((part.count as usize).min(all.len()) + 1);
    starts.push(0);
    for (at, _) in all.iter().enumerate().filter(|(_, &b)| b == b'\n') {
        if starts.len() as u64 > part.count {
            return Err(Error::corrupt(
                &name,
                at as u64,
                format!("more than the {} lines the index says", part.count),
            ));
        }
        starts.push(at + 1);
    }
    let last = starts.last().copied().unwrap_or(0);
    if last != all.len() {
        return Err(Error::corrupt(
            &name,
            all.len() as u64,
            "truncated: the last line does not end with a newline",
        ));
    }
    if (starts.len() - 1) as u64 != part.count {
        return Err(Error::corrupt(
            &name,
            all.len() as u64,
            format!("{} lines, the index says {}", starts.len() - 1, part.count),
        ));
    }
    Ok(LoadedPart {
        seq,
        name,
        text,
        starts,
    })
}

/// The parts an earlier, interrupted write left (a run of `parts/{seq}-{first}-{count}` files
/// from 0, each continuing the one before), each read back to check it and learn its text
/// length.
fn durable_parts<T>(artifact: &dyn ArtifactWriter, kind: Kind<T>) -> Result<Vec<Part>> {
    let mut found: Vec<(usize, Part, String)> = Vec::new();
    for entry in artifact.durable_files() {
        let Some(rest) = entry.name.strip_prefix(PARTS_DIR) else {
            continue;
        };
        let part = parse_part_name(rest, kind.ext).ok_or_else(|| {
            Error::corrupt(
                &entry.name,
                0,
                format!("not a part of a {} stream", kind.id),
            )
        })?;
        found.push((part.0, part.1, entry.name.clone()));
    }
    found.sort_by_key(|(seq, _, _)| *seq);
    let mut parts = Vec::with_capacity(found.len());
    let mut next = 0u64;
    for (i, (seq, mut part, name)) in found.into_iter().enumerate() {
        if seq != i || part.first != next {
            return Err(Error::corrupt(
                &name,
                0,
                format!("expected part {i} starting at item {next}"),
            ));
        }
        let bytes = artifact.durable_bytes(&name)?;
        part.text_len = if part.zstd {
            let mut out = Vec::new();
            FrameDecoder::new()
                .decode(
                    (*bytes).as_ref(),
                    Magic::Stored,
                    Expect::AtMost(MAX_PART_BYTES),
                    &mut out,
                )
                .map_err(|e| e.corrupt(&name, 0, 0))?;
            out.len() as u64
        } else {
            (*bytes).as_ref().len() as u64
        };
        load_part(bytes, seq, &part, name)?;
        next += part.count;
        parts.push(part);
    }
    Ok(parts)
}

/// `{seq:06}-{first}-{count}.{ext}[.zst]` as (seq, part with an unknown text length).
fn parse_part_name(name: &str, ext: &str) -> Option<(usize, Part)> {
    let (stem, zstd) = match name.strip_suffix(".zst") {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    let stem = stem.strip_suffix(ext)?.strip_suffix('.')?;
    let mut fields = stem.splitn(3, '-');
    let seq = fields.next()?.parse().ok()?;
    let first = fields.next()?.parse().ok()?;
    let count = fields.next()?.parse().ok()?;
    Some((
        seq,
        Part {
            first,
            count,
            text_len: 0,
            zstd,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// Writes the parts of `items` after those an interrupted write left, then the index.
fn write_lines<T>(
    artifact: &dyn ArtifactWriter,
    kind: Kind<T>,
    settings: Settings,
    items: Stream<T>,
) -> Result<()> {
    let mut parts = durable_parts(artifact, kind)?;
    let mut writer = PartWriter::new(settings)?;
    let mut text = Vec::new();
    let mut count = 0u64;
    let mut next: u64 = parts.iter().map(|p| p.count).sum();
    let part_bytes = settings.part_bytes.min(MAX_PART_BYTES as usize);
    for item in items {
        let item = item?;
        let start = text.len();
        (kind.encode)(&item, &mut text)?;
        if let Some(at) = text
            .get(start..)
            .and_then(|line| line.iter().position(|&b| b == b'\n'))
        {
            return Err(Error::Encode {
                what: format!("item {}", next + count),
                reason: format!("a line cannot hold a newline (byte {at} of the item)"),
            });
        }
        text.push(b'\n');
        count += 1;
        if text.len() as u64 > MAX_PART_BYTES {
            return Err(Error::Encode {
                what: format!("item {}", next + count - 1),
                reason: "a part holds at most 1 GiB of text".into(),
            });
        }
        if text.len() >= part_bytes {
            parts.push(writer.write(artifact, kind, parts.len(), next, count, &text)?);
            next += count;
            count = 0;
            text.clear();
        }
    }
    if count > 0 {
        parts.push(writer.write(artifact, kind, parts.len(), next, count, &text)?);
    }
    let mut index = Vec::with_capacity(64 + parts.len() * ENTRY_LEN);
    Envelope::new(kind.id, 1).encode_into(&mut index)?;
    let total: u64 = parts.iter().map(|p| p.count).sum();
    index.extend_from_slice(&total.to_le_bytes());
    let n = u32::try_from(parts.len()).map_err(|_| Error::Encode {
        what: INDEX_FILE.into(),
        reason: "more than 2^32 parts".into(),
    })?;
    index.extend_from_slice(&n.to_le_bytes());
    for p in &parts {
        index.extend_from_slice(&p.count.to_le_bytes());
        index.extend_from_slice(&p.text_len.to_le_bytes());
        index.push(u8::from(p.zstd));
    }
    write_file(artifact, INDEX_FILE, &index)
}

fn write_file(artifact: &dyn ArtifactWriter, name: &str, bytes: &[u8]) -> Result<()> {
    let mut file = artifact.create(name)?;
    std::io::Write::write_all(&mut file, bytes).map_err(|e| Error::io(name, e))?;
    file.finish()?;
    Ok(())
}

/// Compresses (or not) and writes parts.
struct PartWriter {
    cctx: Option<zstd::zstd_safe::CCtx<'static>>,
    out: Vec<u8>,
}

impl PartWriter {
    fn new(settings: Settings) -> Result<Self> {
        let cctx = match settings.compression {
            Compression::Zstd { level } => Some(zstd_cctx(level, &[], true, "a part")?),
            _ => None,
        };
        Ok(PartWriter {
            cctx,
            out: Vec::new(),
        })
    }

    fn write<T>(
        &mut self,
        artifact: &dyn ArtifactWriter,
        kind: Kind<T>,
        seq: usize,
        first: u64,
        count: u64,
        text: &[u8],
    ) -> Result<Part> {
        let part = Part {
            first,
            count,
            text_len: text.len() as u64,
            zstd: self.cctx.is_some(),
        };
        let name = part.name(seq, kind.ext);
        match &mut self.cctx {
            Some(cctx) => {
                self.out.clear();
                self.out
                    .reserve(zstd::zstd_safe::compress_bound(text.len()));
                cctx.compress2(&mut self.out, text)
                    .map_err(|code| Error::Encode {
                        what: name.clone(),
                        reason: format!("zstd: {}", zstd::zstd_safe::get_error_name(code)),
                    })?;
                write_file(artifact, &name, &self.out)?;
            }
            None => write_file(artifact, &name, text)?,
        }
        Ok(part)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// How long a follower waits for the writer at a time before it looks at the artifact again.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// What a reader knows of the parts: all of them once the index is read, or those a writer
/// still at work has finished so far.
#[derive(Debug)]
struct Known {
    parts: Vec<Part>,
    /// The item count, once the index is read (the write is complete).
    total: Option<u64>,
}

impl Known {
    fn items(&self) -> u64 {
        self.parts.iter().map(|p| p.count).sum()
    }
}

/// A stored stream of lines, read lazily: what [`JsonLinesFormat`] and [`TextLinesFormat`]
/// return.
///
/// [`iter`](Self::iter) loads one part at a time; [`get`](Self::get) loads the part that holds
/// the item (the last part loaded is kept). Every problem is a typed error naming the part file
/// and the offset of the line. Clones share the index and the kept part.
///
/// # Following a write in progress
/// A reader opened on an artifact that is still being written (the engine's
/// `Workspace::follow`, see [`ArtifactStatus`]) follows it: it learns of each part when the
/// writer finishes that part file, reads every item of the finished parts, and waits for the
/// next part, or for the index that ends the stream. A part is a finished, content-verified
/// artifact file before a reader can see it, so a follower never reads half a line or a part
/// that is still growing. [`len`](Self::len) waits for the end; [`get`](Self::get) waits only
/// for the part that holds the item. A writer that fails or dies ends the stream with
/// [`Error::WriterDied`] (after the items of the parts it finished), never a short stream; a
/// later attempt that resumes the write (see [`Format::durable_items`]) continues after those
/// parts.
///
/// Following is for readers that go through milonga. The part files themselves are plain
/// `.jsonl`/`.txt` files that other tools read once they are finished, but a file being
/// written is never visible to them half-done (a part appears whole or not at all), so a
/// `tail -f` of a growing file is not how to follow one.
pub struct LinesReader<T> {
    artifact: ArtifactHandle,
    kind: Kind<T>,
    known: Arc<Mutex<Known>>,
    kept: Arc<Mutex<Option<Arc<LoadedPart>>>>,
}

impl<T> Clone for LinesReader<T> {
    fn clone(&self) -> Self {
        LinesReader {
            artifact: Arc::clone(&self.artifact),
            kind: self.kind,
            known: Arc::clone(&self.known),
            kept: Arc::clone(&self.kept),
        }
    }
}

impl<T> fmt::Debug for LinesReader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = self.known();
        f.debug_struct("LinesReader")
            .field("format", &self.kind.id)
            .field("len", &known.total)
            .field("parts", &known.parts.len())
            .finish()
    }
}

/// Reads the index of a complete artifact: its parts, each present, and the item count.
fn read_index<T>(artifact: &ArtifactHandle, kind: Kind<T>) -> Result<(Vec<Part>, u64)> {
    let bytes = artifact.bytes(INDEX_FILE)?;
    let all = (*bytes).as_ref();
    let (_, payload) = open_envelope(all, kind.id, 1, INDEX_FILE)?;
    let at = all.len() - payload.len();
    let corrupt =
        |offset: usize, reason: String| Error::corrupt(INDEX_FILE, (at + offset) as u64, reason);
    let Some((head, mut entries)) = payload.split_first_chunk::<INDEX_HEAD>() else {
        return Err(corrupt(
            payload.len(),
            format!("truncated: the index needs {INDEX_HEAD} bytes after its envelope"),
        ));
    };
    let (total, n) = head.split_at(8);
    let total = u64::from_le_bytes(total.try_into().unwrap_or_default());
    let n = u32::from_le_bytes(n.try_into().unwrap_or_default()) as usize;
    if entries.len() != n.saturating_mul(ENTRY_LEN) {
        return Err(corrupt(
            INDEX_HEAD,
            format!(
                "{n} parts need {} bytes of entries, the index has {}",
                n.saturating_mul(ENTRY_LEN),
                entries.len()
            ),
        ));
    }
    let mut parts = Vec::with_capacity(n);
    let mut first = 0u64;
    while let Some((entry, rest)) = entries.split_first_chunk::<ENTRY_LEN>() {
        let offset = INDEX_HEAD + parts.len() * ENTRY_LEN;
        let (count, rest_entry) = entry.split_at(8);
        let (text_len, compression) = rest_entry.split_at(8);
        let count = u64::from_le_bytes(count.try_into().unwrap_or_default());
        let text_len = u64::from_le_bytes(text_len.try_into().unwrap_or_default());
        let zstd = match compression {
            [0] => false,
            [1] => true,
            other => {
                return Err(corrupt(
                    offset + 16,
                    format!("unknown compression {other:?} (0 = none, 1 = zstd)"),
                ))
            }
        };
        if count == 0 || count > text_len || text_len > MAX_PART_BYTES {
            return Err(corrupt(
                offset,
                format!(
                    "a part of {count} lines in {text_len} bytes (1 or more lines of at \
                     least one byte, at most 1 GiB)"
                ),
            ));
        }
        parts.push(Part {
            first,
            count,
            text_len,
            zstd,
        });
        first = first.saturating_add(count);
        entries = rest;
    }
    if first != total {
        return Err(corrupt(
            0,
            format!("the index says {total} items, its parts hold {first}"),
        ));
    }
    // Every part the index names is there, with no other part beside them.
    let files: std::collections::HashSet<String> =
        artifact.files().into_iter().map(|f| f.name).collect();
    for (seq, p) in parts.iter().enumerate() {
        let name = p.name(seq, kind.ext);
        if !files.contains(&name) {
            return Err(Error::MissingFile { file: name });
        }
    }
    Ok((parts, total))
}

impl<T> LinesReader<T> {
    fn open(artifact: ArtifactHandle, kind: Kind<T>) -> Result<Self> {
        // The status first: once it says complete (or failed), the listing is final.
        let status = artifact.status();
        let has_index = artifact.files().iter().any(|f| f.name == INDEX_FILE);
        let known = if has_index || status == ArtifactStatus::Complete {
            let (parts, total) = read_index(&artifact, kind)?;
            Known {
                parts,
                total: Some(total),
            }
        } else {
            // A write in progress (or one that failed): follow it.
            Known {
                parts: Vec::new(),
                total: None,
            }
        };
        Ok(LinesReader {
            artifact,
            kind,
            known: Arc::new(Mutex::new(known)),
            kept: Arc::new(Mutex::new(None)),
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Learns what the writer finished since the last look: new parts, in order, each loaded
    /// and checked, or the index. Returns the status seen and the number of files listed.
    fn sync(&self) -> Result<(ArtifactStatus, usize)> {
        let status = self.artifact.status();
        let files = self.artifact.files();
        let mut known = self.known();
        if known.total.is_some() {
            return Ok((status, files.len()));
        }
        if files.iter().any(|f| f.name == INDEX_FILE) {
            let (parts, total) = read_index(&self.artifact, self.kind)?;
            if let Some(seq) = (0..known.parts.len()).find(|&i| parts.get(i) != known.parts.get(i))
            {
                return Err(Error::corrupt(
                    INDEX_FILE,
                    0,
                    format!("part {seq} is not the part file that was read while it was written"),
                ));
            }
            *known = Known {
                parts,
                total: Some(total),
            };
            return Ok((status, files.len()));
        }
        let mut found = std::collections::BTreeMap::new();
        for entry in &files {
            if let Some(rest) = entry.name.strip_prefix(PARTS_DIR) {
                let (seq, part) = parse_part_name(rest, self.kind.ext).ok_or_else(|| {
                    Error::corrupt(
                        &entry.name,
                        0,
                        format!("not a part of a {} stream", self.kind.id),
                    )
                })?;
                found.insert(seq, (part, entry));
            }
        }
        while let Some((mut part, entry)) = found.remove(&known.parts.len()) {
            let seq = known.parts.len();
            let next = known.items();
            if part.first != next || part.count == 0 {
                return Err(Error::corrupt(
                    &entry.name,
                    0,
                    format!("expected part {seq} starting at item {next}, with items"),
                ));
            }
            let bytes = self.artifact.bytes(&entry.name)?;
            let file = format!("{}: {}", self.artifact.describe(), entry.name);
            part.text_len = if part.zstd {
                let mut out = Vec::new();
                FrameDecoder::new()
                    .decode(
                        (*bytes).as_ref(),
                        Magic::Stored,
                        Expect::AtMost(MAX_PART_BYTES),
                        &mut out,
                    )
                    .map_err(|e| e.corrupt(&file, 0, 0))?;
                out.len() as u64
            } else {
                entry.len
            };
            let loaded = load_part(bytes, seq, &part, file)?;
            *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(loaded));
            known.parts.push(part);
        }
        Ok((status, files.len()))
    }

    /// Part `seq` as the index (or the writer, so far) describes it, waiting for a writer at
    /// work to finish it; `None` past the last part of a complete stream.
    fn wait_for_part(&self, seq: usize) -> Result<Option<Part>> {
        let known_part = |known: &Known| match known.parts.get(seq) {
            Some(p) => Some(Some(p.clone())),
            None if known.total.is_some() => Some(None),
            None => None,
        };
        loop {
            if let Some(p) = known_part(&self.known()) {
                return Ok(p);
            }
            let (status, listed) = self.sync()?;
            if let Some(p) = known_part(&self.known()) {
                return Ok(p);
            }
            match status {
                ArtifactStatus::Writing => self.artifact.wait_for_change(listed, WAIT_SLICE)?,
                ArtifactStatus::Complete => {
                    return Err(Error::MissingFile {
                        file: INDEX_FILE.into(),
                    })
                }
                ArtifactStatus::Failed(why) => {
                    let items = self.known().items();
                    return Err(Error::writer_died(self.artifact.describe(), items, why));
                }
                other => {
                    return Err(Error::unsupported(format!(
                        "artifact status {other:?} of {}",
                        self.artifact.describe()
                    )))
                }
            }
        }
    }

    /// The number of items; a reader following a write waits for the end.
    ///
    /// # Errors
    /// A writer that failed ([`Error::WriterDied`]), a damaged index or part.
    pub fn len(&self) -> Result<u64> {
        loop {
            let next = {
                let known = self.known();
                if let Some(total) = known.total {
                    return Ok(total);
                }
                known.parts.len()
            };
            self.wait_for_part(next)?;
        }
    }

    /// Whether there are no items (a follower waits for the first part or the end).
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.wait_for_part(0)?.is_none())
    }

    /// Whether the stream is complete (its index read): `false` while a follower has not seen
    /// the end of the write.
    pub fn is_complete(&self) -> bool {
        self.known().total.is_some()
    }

    /// The names of the part files, in order: concatenated (and decompressed, for `.zst`
    /// parts), they are the whole stream as one plain file. A follower waits for the end.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn part_files(&self) -> Result<Vec<String>> {
        self.len()?;
        Ok(self
            .known()
            .parts
            .iter()
            .enumerate()
            .map(|(seq, p)| p.name(seq, self.kind.ext))
            .collect())
    }

    /// Part `seq`, from the kept one or loaded (and then kept).
    fn part(&self, seq: usize) -> Result<Arc<LoadedPart>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(p) = kept.filter(|p| p.seq == seq) {
            return Ok(p);
        }
        let Some(part) = self.wait_for_part(seq)? else {
            return Err(Error::corrupt(INDEX_FILE, 0, format!("no part {seq}")));
        };
        let name = part.name(seq, self.kind.ext);
        let bytes = self.artifact.bytes(&name)?;
        let file = format!("{}: {name}", self.artifact.describe());
        let loaded = Arc::new(load_part(bytes, seq, &part, file)?);
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Item `k` of a loaded part.
    fn decode(&self, part: &LoadedPart, k: usize) -> Result<T> {
        let Some((line, at)) = part.line(k) else {
            return Err(Error::corrupt(&part.name, 0, format!("no line {k}")));
        };
        (self.kind.decode)(line).map_err(|(within, reason)| Error::Decode {
            file: part.name.clone(),
            offset: (at + within) as u64,
            reason: format!("line {k}: {reason}"),
        })
    }

    /// Item `index`, scanning the part that holds it; a follower waits for that part.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] past the end; a missing, corrupt or undecodable part;
    /// [`Error::WriterDied`] for an item a failed writer never finished.
    pub fn get(&self, index: u64) -> Result<T> {
        loop {
            let (holder, next) = {
                let known = self.known();
                if let Some(len) = known.total.filter(|&len| index >= len) {
                    return Err(Error::OutOfRange {
                        file: INDEX_FILE.into(),
                        index,
                        len,
                    });
                }
                let seq = known
                    .parts
                    .partition_point(|p| p.first <= index)
                    .saturating_sub(1);
                let holder = known
                    .parts
                    .get(seq)
                    .filter(|p| p.first <= index && index - p.first < p.count)
                    .map(|p| (seq, p.first));
                (holder, known.parts.len())
            };
            if let Some((seq, first)) = holder {
                let part = self.part(seq)?;
                return self.decode(&part, (index - first) as usize);
            }
            self.wait_for_part(next)?;
        }
    }

    /// Every item, in order, one part in memory at a time; a follower yields the items of
    /// each part as the writer finishes it. After an error it yields nothing more.
    pub fn iter(&self) -> LinesIter<T> {
        LinesIter {
            reader: self.clone(),
            seq: 0,
            k: 0,
            current: None,
            done: false,
        }
    }
}

/// The items of a [`LinesReader`], in order; see [`LinesReader::iter`].
pub struct LinesIter<T> {
    reader: LinesReader<T>,
    seq: usize,
    k: usize,
    current: Option<Arc<LoadedPart>>,
    done: bool,
}

impl<T> fmt::Debug for LinesIter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinesIter")
            .field("part", &self.seq)
            .field("line", &self.k)
            .finish()
    }
}

impl<T> Iterator for LinesIter<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            if self.done {
                return None;
            }
            let count = match self.reader.wait_for_part(self.seq) {
                Ok(Some(part)) => part.count,
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if self.k as u64 >= count {
                self.seq += 1;
                self.k = 0;
                self.current = None;
                continue;
            }
            let part = match &self.current {
                Some(p) => Arc::clone(p),
                None => match self.reader.part(self.seq) {
                    Ok(p) => {
                        self.current = Some(Arc::clone(&p));
                        p
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            };
            let item = self.reader.decode(&part, self.k);
            self.k += 1;
            if item.is_err() {
                self.done = true;
            }
            return Some(item);
        }
    }
}
