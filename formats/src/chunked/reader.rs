//! Reading a chunked stream: the chunk index, verified chunk loading with a bounded cache,
//! random access by item number, sequential reading with a read-ahead thread, and following a
//! stream that is still being written.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use milonga_sdk::outboard::GROUP_BYTES;
use milonga_sdk::{ArtifactHandle, ArtifactStatus, Error, FileEntry, Result, SharedBytes};

use super::chunk::{ChunkInfo, Decompressor, Items, RawBlock};
use super::end::{EndRecord, IndexEntry, StreamLayout};
use super::live::{self, Live, Next};
use super::writer::check_chunk;

/// Default budget of the cache of parsed chunk headers (block tables) used by random access, in
/// bytes of memory: 4 MiB holds the headers of about 3,000 chunks of 50 blocks.
pub const DEFAULT_CHUNK_CACHE_BYTES: usize = 4 << 20;

/// Target size of the decompressed segments that sequential reading hands over between threads.
pub const SEGMENT_BYTES: usize = 256 << 10;

/// How long one call to `wait_for_change` may block before the reader checks again.
const WAIT_SLICE: Duration = Duration::from_secs(1);

/// A chunk the reader knows about: its file name and index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownChunk {
    /// The chunk's position in the stream (0, 1, 2 …).
    pub seq: u64,
    /// The artifact file holding it.
    pub name: String,
    /// Its items, length and content id.
    pub entry: IndexEntry,
}

/// A chunk file read and checked (checksum, header against the index, codec).
#[derive(Clone)]
pub struct LoadedChunk {
    /// Which chunk.
    pub chunk: KnownChunk,
    /// The file's bytes (a memory map on local backends).
    pub bytes: SharedBytes,
    /// Its decoded header and block table.
    pub info: ChunkInfo,
}

impl std::fmt::Debug for LoadedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedChunk")
            .field("chunk", &self.chunk)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Consecutive blocks of one chunk (the whole chunk, or a segment of it), decompressed for
/// sequential reading: their items, back to back.
#[derive(Debug)]
pub struct DecodedChunk {
    /// Which chunk.
    pub chunk: KnownChunk,
    /// Number of the first item of `payload` within the stream.
    pub first_item: u64,
    /// How many items `payload` holds.
    pub item_count: u32,
    /// The blocks, decompressed and concatenated: length-prefixed items.
    pub payload: Payload,
}

/// The decompressed items of a [`DecodedChunk`]: a buffer of its own (read from the files), or
/// one block shared with a writer in this process (a followed stream; no copy is made).
/// Dereferences to the bytes.
#[derive(Clone)]
pub struct Payload(PayloadRepr);

#[derive(Clone)]
enum PayloadRepr {
    Owned(Vec<u8>),
    /// Block `index` of a chunk the writer sealed.
    Shared(Arc<[RawBlock]>, usize),
}

impl Payload {
    /// A block of `blocks` shared with the writer.
    pub(crate) fn shared(blocks: Arc<[RawBlock]>, index: usize) -> Payload {
        Payload(PayloadRepr::Shared(blocks, index))
    }

    /// The buffer, if this payload owns one (to reuse it).
    pub(crate) fn into_buffer(self) -> Option<Vec<u8>> {
        match self.0 {
            PayloadRepr::Owned(v) => Some(v),
            PayloadRepr::Shared(..) => None,
        }
    }

    /// The bytes as a vector of their own (a copy when they are shared).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            PayloadRepr::Owned(v) => v,
            PayloadRepr::Shared(..) => self.to_vec(),
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(PayloadRepr::Owned(v))
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            PayloadRepr::Owned(v) => v,
            PayloadRepr::Shared(blocks, i) => blocks.get(*i).map_or(&[][..], |b| &b.data[..]),
        }
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = matches!(self.0, PayloadRepr::Shared(..));
        f.debug_struct("Payload")
            .field("len", &self.len())
            .field("shared", &shared)
            .finish()
    }
}

impl DecodedChunk {
    /// The items of the payload.
    pub fn items(&self) -> Items<'_> {
        Items::new(&self.payload, u64::from(self.item_count))
    }

    /// One past the number of the payload's last item.
    pub fn end_item(&self) -> u64 {
        self.first_item + u64::from(self.item_count)
    }

    /// A corruption error about the item that starts at byte `pos` of the payload.
    pub fn item_error(&self, item: u64, pos: usize, reason: impl std::fmt::Display) -> Error {
        Error::corrupt(
            &self.chunk.name,
            0,
            format!(
                "item {item} (byte {pos} of the decompressed items {}..{}, chunk items {}..{}): \
                 {reason}",
                self.first_item,
                self.end_item(),
                self.chunk.entry.first_item,
                self.chunk.entry.end_item()
            ),
        )
    }
}

/// How an error about one item names it: its chunk file, its number and the artifact.
pub(crate) fn item_file(chunk: &str, item: u64, artifact: &str) -> String {
    format!("{chunk} item {item} of {artifact}")
}

#[derive(Default)]
struct State {
    /// Chunks known so far, in order, contiguous from chunk 0.
    chunks: Vec<KnownChunk>,
    /// Set once the end record was read and checked: the stream is complete.
    end: Option<u64>,
    /// Length of the newest listing applied to `chunks`. While the artifact is being written its
    /// listing only grows, so a shorter one is a stale snapshot (taken by another thread before
    /// this one was applied) and is ignored rather than taken for a vanished chunk.
    listed: usize,
}

/// What random access keeps: the parsed headers (block tables) of the chunks it touched, in a
/// budget of bytes of header, and the last block it decompressed.
struct Cache {
    budget: usize,
    used: usize,
    tick: u64,
    headers: HashMap<u64, (Arc<ChunkInfo>, u64)>,
    /// The last block decompressed for random access: `(seq, block, payload)`.
    block: Option<(u64, usize, Arc<Vec<u8>>)>,
}

/// The memory a parsed header takes, roughly: its block table.
fn header_cost(info: &ChunkInfo) -> usize {
    64 + info.blocks.len() * 24 + info.codec_id.len()
}

impl Cache {
    fn get(&mut self, seq: u64) -> Option<Arc<ChunkInfo>> {
        self.tick += 1;
        let tick = self.tick;
        let (info, used) = self.headers.get_mut(&seq)?;
        *used = tick;
        Some(Arc::clone(info))
    }

    fn put(&mut self, seq: u64, info: Arc<ChunkInfo>) {
        if self.headers.contains_key(&seq) {
            return;
        }
        self.tick += 1;
        self.used += header_cost(&info);
        self.headers.insert(seq, (info, self.tick));
        // Evict the least recently used headers (an O(n) scan, only when over budget).
        while self.used > self.budget && self.headers.len() > 1 {
            let Some(old) = self
                .headers
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(s, _)| *s)
            else {
                break;
            };
            if let Some((c, _)) = self.headers.remove(&old) {
                self.used -= header_cost(&c);
            }
        }
    }
}

struct Inner {
    artifact: ArtifactHandle,
    layout: StreamLayout,
    codec_id: String,
    state: Mutex<State>,
    cache: Mutex<Cache>,
    dctx: Mutex<Decompressor>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A reader over one chunked stream of an artifact.
///
/// It is cheap to clone (clones share the index and cache) and keeps the artifact alive. For a
/// complete artifact, opening it reads the end record and checks it against the artifact's
/// files; for an artifact still being written (its status is
/// [`Writing`](ArtifactStatus::Writing)) the reader knows the chunks committed so far and waits
/// for more when asked for items past them, until the writer completes (the end record must
/// then agree with what was read) or fails (an error, never a silently short stream).
#[derive(Clone)]
pub struct ChunkedReader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChunkedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedReader")
            .field("artifact", &self.inner.artifact.describe())
            .field("layout", &self.inner.layout)
            .finish_non_exhaustive()
    }
}

impl ChunkedReader {
    /// Opens the stream `layout` of `artifact`, whose items must have been encoded with the codec
    /// `codec_id`.
    ///
    /// # Errors
    /// For a complete artifact: a missing, corrupt or inconsistent end record, or chunk files
    /// that disagree with it (see the stream spec). For one being written: a malformed listing.
    pub fn open(artifact: ArtifactHandle, layout: StreamLayout, codec_id: &str) -> Result<Self> {
        let reader = ChunkedReader {
            inner: Arc::new(Inner {
                artifact,
                layout,
                codec_id: codec_id.to_owned(),
                state: Mutex::new(State::default()),
                cache: Mutex::new(Cache {
                    budget: DEFAULT_CHUNK_CACHE_BYTES,
                    used: 0,
                    tick: 0,
                    headers: HashMap::new(),
                    block: None,
                }),
                dctx: Mutex::new(Decompressor::new()),
            }),
        };
        let files = reader.inner.artifact.files();
        match reader.inner.artifact.status() {
            ArtifactStatus::Complete => reader.inner.load_complete()?,
            _ => reader.inner.sync_listing(&files)?,
        }
        Ok(reader)
    }

    /// Sets the budget of the cache of chunk headers used by [`with_item`](Self::with_item), in
    /// bytes (default [`DEFAULT_CHUNK_CACHE_BYTES`]). At least one header is always kept.
    pub fn set_cache_bytes(&self, bytes: usize) {
        lock(&self.inner.cache).budget = bytes;
    }

    /// The artifact read.
    pub fn artifact(&self) -> &ArtifactHandle {
        &self.inner.artifact
    }

    /// Whether the end record was read: the stream is complete and its length final.
    pub fn is_complete(&self) -> bool {
        lock(&self.inner.state).end.is_some()
    }

    /// Items in the chunks known so far, without waiting (the final length once complete).
    pub fn committed_len(&self) -> u64 {
        let st = lock(&self.inner.state);
        st.chunks.last().map_or(0, |c| c.entry.end_item())
    }

    /// The stream's length. For a stream still being written, waits until the writer finishes.
    ///
    /// # Errors
    /// As [`chunk`](Self::chunk); a failed writer is an error.
    pub fn len(&self) -> Result<u64> {
        loop {
            let (n, end) = {
                let st = lock(&self.inner.state);
                (st.chunks.len() as u64, st.end)
            };
            if let Some(len) = end {
                return Ok(len);
            }
            let _ = self.chunk(n)?;
        }
    }

    /// Whether the stream has no items (waits like [`len`](Self::len)).
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The chunks known so far, in order.
    pub fn known_chunks(&self) -> Vec<KnownChunk> {
        lock(&self.inner.state).chunks.clone()
    }

    /// Chunk `seq`, waiting for it if the stream is still being written; `None` past the last
    /// chunk of a complete stream.
    ///
    /// # Errors
    /// A writer that failed before writing it ([`Error::WriterDied`]), an inconsistent listing or
    /// end record, or an error from the artifact while waiting.
    pub fn chunk(&self, seq: u64) -> Result<Option<KnownChunk>> {
        self.inner.chunk(seq, &|| false)
    }

    /// The chunk holding item `item`, waiting for it if the stream is still being written.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] past the end of a complete stream, or as [`chunk`](Self::chunk).
    pub fn chunk_of(&self, item: u64) -> Result<KnownChunk> {
        loop {
            let next = {
                let st = lock(&self.inner.state);
                let i = st.chunks.partition_point(|c| c.entry.first_item <= item);
                if let Some(c) = i.checked_sub(1).and_then(|i| st.chunks.get(i)) {
                    if item < c.entry.end_item() {
                        return Ok(c.clone());
                    }
                }
                if let Some(len) = st.end {
                    return Err(Error::OutOfRange {
                        file: self.inner.artifact.describe(),
                        index: item,
                        len,
                    });
                }
                st.chunks.len() as u64
            };
            let _ = self.chunk(next)?;
        }
    }

    /// Reads and checks a chunk file: verified bytes from the artifact, the checksum, the header
    /// against the index (item numbers, count) and the codec.
    ///
    /// # Errors
    /// [`Error::MissingFile`] naming the chunk and its items, [`Error::ChecksumMismatch`],
    /// [`Error::Corrupt`] or [`Error::WrongFormat`].
    #[doc(hidden)]
    pub fn load(&self, chunk: &KnownChunk) -> Result<LoadedChunk> {
        self.inner.load(chunk)
    }

    /// Decompresses a whole chunk for sequential reading, into `buf` (cleared first; pass a
    /// recycled buffer to avoid an allocation).
    ///
    /// # Errors
    /// As [`load`](Self::load), or a block that does not decompress.
    #[doc(hidden)]
    pub fn decode(
        &self,
        chunk: &KnownChunk,
        dctx: &mut Decompressor,
        mut buf: Vec<u8>,
    ) -> Result<DecodedChunk> {
        let loaded = self.inner.load(chunk)?;
        buf.clear();
        loaded
            .info
            .decompress_all((*loaded.bytes).as_ref(), &chunk.name, &mut buf, dctx)?;
        Ok(DecodedChunk {
            first_item: chunk.entry.first_item,
            item_count: chunk.entry.item_count,
            chunk: loaded.chunk,
            payload: buf.into(),
        })
    }

    /// Calls `f` with the encoded bytes of item `item`, reading and decompressing only the one
    /// block that holds it: the chunk's header and the block are verified range reads of the
    /// chunk file (only the 16 KiB groups that cover them are read and hashed). Parsed headers
    /// are kept in a bounded cache, and the last block decompressed too.
    ///
    /// # Errors
    /// [`Error::OutOfRange`], or as [`load`](Self::load) and [`chunk_of`](Self::chunk_of);
    /// `f`'s error (an [`Error::Decode`] without a file gets the chunk file and item number).
    pub fn with_item<R>(&self, item: u64, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        let known = self.chunk_of(item)?;
        let seq = known.seq;
        let cached = lock(&self.inner.cache).get(seq);
        let info = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.inner.header(&known)?);
                lock(&self.inner.cache).put(seq, Arc::clone(&c));
                c
            }
        };
        let within = (item - known.entry.first_item) as u32;
        let Some((block, block_first)) = info.block_of(within) else {
            return Err(Error::corrupt(
                &known.name,
                0,
                format!("no block holds item {item}"),
            ));
        };
        let cached_block = {
            let cache = lock(&self.inner.cache);
            match &cache.block {
                Some((s, b, p)) if *s == seq && *b == block => Some(Arc::clone(p)),
                _ => None,
            }
        };
        let payload = match cached_block {
            Some(p) => p,
            None => {
                let range = info.block_range(block, &known.name)?;
                let stored = self.inner.read_range(&known, range)?;
                let mut out = Vec::new();
                // Reuse the reader's decompression context (creating one costs more than a
                // small block's decompression); a concurrent get makes its own.
                match self.inner.dctx.try_lock() {
                    Ok(mut dctx) => {
                        info.decompress_stored(&stored, block, &known.name, &mut out, &mut dctx)?
                    }
                    Err(_) => info.decompress_stored(
                        &stored,
                        block,
                        &known.name,
                        &mut out,
                        &mut Decompressor::new(),
                    )?,
                }
                let p = Arc::new(out);
                lock(&self.inner.cache).block = Some((seq, block, Arc::clone(&p)));
                p
            }
        };
        let block_items = info
            .blocks
            .get(block)
            .map_or(0, |b| u64::from(b.item_count));
        let at = info.block_offsets.get(block).copied().unwrap_or(0) as u64;
        let mut items = Items::new(&payload, block_items);
        // Names the item that does not parse (which may come before `item` in its block) and its
        // byte offset within the decompressed block.
        let block_item0 = known.entry.first_item + u64::from(block_first);
        let bad = |items: &Items<'_>, reason: &dyn std::fmt::Display| {
            Error::corrupt(
                &known.name,
                at,
                format!(
                    "block {block}, item {} (byte {} of the decompressed block), reading item \
                     {item}: {reason}",
                    block_item0 + items.yielded(),
                    items.position()
                ),
            )
        };
        items
            .skip_items(u64::from(within - block_first))
            .map_err(|r| bad(&items, &r))?;
        match items.next_item().map_err(|r| bad(&items, &r))? {
            Some(bytes) => f(bytes).map_err(|e| {
                e.in_file(
                    item_file(&known.name, item, &self.inner.artifact.describe()),
                    0,
                )
            }),
            None => Err(bad(&items, &"the block ends before the item")),
        }
    }

    /// The stream's items from chunk `first_seq` on, decompressed by a background thread in
    /// segments of about [`SEGMENT_BYTES`] (the very first segment is one block, so that the
    /// first item comes quickly), skipping the blocks that end before item `from_item`. At most
    /// `ahead` segments wait. The next few chunk files already known are loaded (read and
    /// verified; downloaded on a remote workspace) ahead, on threads of their own, while one is
    /// decompressed. Follows the stream while it is being written.
    pub fn decoded_chunks(&self, first_seq: u64, from_item: u64, ahead: usize) -> DecodedChunks {
        DecodedChunks::start(self.clone(), first_seq, from_item, ahead)
    }
}

impl Inner {
    /// Chunk `seq`, waiting while the stream is being written; `Ok(None)` also when `cancelled`
    /// says to stop waiting.
    fn chunk(&self, seq: u64, cancelled: &dyn Fn() -> bool) -> Result<Option<KnownChunk>> {
        loop {
            if cancelled() {
                return Ok(None);
            }
            {
                let st = lock(&self.state);
                if let Some(c) = usize::try_from(seq).ok().and_then(|i| st.chunks.get(i)) {
                    return Ok(Some(c.clone()));
                }
                if st.end.is_some() {
                    return Ok(None);
                }
            }
            let files = self.artifact.files();
            match self.artifact.status() {
                ArtifactStatus::Complete => self.load_complete()?,
                ArtifactStatus::Writing => {
                    self.sync_listing(&files)?;
                    if !self.has(seq) {
                        self.artifact.wait_for_change(files.len(), WAIT_SLICE)?;
                    }
                }
                ArtifactStatus::Failed(why) => {
                    self.sync_listing(&self.artifact.files())?;
                    if !self.has(seq) {
                        let (n, items) = {
                            let st = lock(&self.state);
                            (
                                st.chunks.len(),
                                st.chunks.last().map_or(0, |c| c.entry.end_item()),
                            )
                        };
                        return Err(Error::writer_died(
                            self.artifact.describe(),
                            items,
                            format_args!("{why} ({n} chunks are durable)"),
                        ));
                    }
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

    /// Chunk `seq` if it is known already (never waits, never reads).
    fn known(&self, seq: u64) -> Option<KnownChunk> {
        let st = lock(&self.state);
        usize::try_from(seq)
            .ok()
            .and_then(|i| st.chunks.get(i))
            .cloned()
    }

    fn has(&self, seq: u64) -> bool {
        let st = lock(&self.state);
        st.end.is_some() || (st.chunks.len() as u64) > seq
    }

    /// Adds the chunks of `files` that follow the known ones.
    fn sync_listing(&self, files: &[FileEntry]) -> Result<()> {
        let mut found: BTreeMap<u64, KnownChunk> = BTreeMap::new();
        for f in files {
            if let Some(parsed) = self.layout.parse_chunk_name(&f.name) {
                let (seq, first_item, item_count) = parsed?;
                let known = KnownChunk {
                    seq,
                    name: f.name.clone(),
                    entry: IndexEntry {
                        first_item,
                        item_count,
                        len: f.len,
                        id: f.id,
                    },
                };
                if found.insert(seq, known).is_some() {
                    return Err(Error::corrupt(
                        &f.name,
                        0,
                        format!("chunk {seq} is listed twice"),
                    ));
                }
            }
        }
        let mut st = lock(&self.state);
        if st.end.is_some() || files.len() < st.listed {
            return Ok(());
        }
        st.listed = files.len();
        for (i, c) in st.chunks.iter().enumerate() {
            match found.get(&(i as u64)) {
                Some(f) if f == c => {}
                _ => {
                    return Err(Error::corrupt(
                        &c.name,
                        0,
                        "a chunk already read changed or vanished from the listing",
                    ))
                }
            }
        }
        let mut next_item = st.chunks.last().map_or(0, |c| c.entry.end_item());
        let mut seq = st.chunks.len() as u64;
        while let Some(c) = found.remove(&seq) {
            if c.entry.first_item != next_item {
                return Err(Error::corrupt(
                    &c.name,
                    0,
                    format!(
                        "chunk {seq} starts at item {}, the previous chunk ends at item {next_item}",
                        c.entry.first_item
                    ),
                ));
            }
            next_item = c.entry.end_item();
            st.chunks.push(c);
            seq += 1;
        }
        if let Some((later, c)) = found.range(seq..).next() {
            return Err(Error::MissingFile {
                file: format!(
                    "chunk {seq} of {} (items from {next_item}; chunk {later}, {}, is present)",
                    self.artifact.describe(),
                    c.name
                ),
            });
        }
        Ok(())
    }

    /// Reads the end record of a complete artifact and checks it against the listing and the
    /// chunks already known.
    fn load_complete(&self) -> Result<()> {
        let files = self.artifact.files();
        let end_name = self.layout.end_name();
        let listed: HashMap<&str, &FileEntry> = files
            .iter()
            .filter(|f| self.layout.owns(&f.name))
            .map(|f| (f.name.as_str(), f))
            .collect();
        if !listed.contains_key(end_name.as_str()) {
            let chunks = listed.len();
            let items: u64 = files
                .iter()
                .filter_map(|f| self.layout.parse_chunk_name(&f.name))
                .filter_map(Result::ok)
                .map(|(_, _, n)| u64::from(n))
                .sum();
            return Err(Error::corrupt(
                &end_name,
                0,
                format!(
                    "{} is complete but its stream has no end record: the stream is truncated \
                     ({chunks} chunk files with {items} items are present), not a shorter stream",
                    self.artifact.describe()
                ),
            ));
        }
        let bytes = self.artifact.bytes(&end_name)?;
        let end = EndRecord::decode((*bytes).as_ref(), &end_name)?;
        let mut chunks = Vec::with_capacity(end.chunks.len());
        for (seq, entry) in end.chunks.iter().enumerate() {
            let name = self
                .layout
                .chunk_name(seq as u64, entry.first_item, entry.item_count);
            match listed.get(name.as_str()) {
                None => {
                    return Err(Error::MissingFile {
                        file: format!(
                            "{name} (chunk {seq}, items {}..{}) of {}",
                            entry.first_item,
                            entry.end_item(),
                            self.artifact.describe()
                        ),
                    })
                }
                Some(f) if f.id != entry.id || f.len != entry.len => {
                    return Err(Error::ChecksumMismatch {
                        file: format!(
                            "{name} (chunk {seq}, items {}..{}): the end record lists another file",
                            entry.first_item,
                            entry.end_item()
                        ),
                        expected: entry.id.to_hex(),
                        actual: f.id.to_hex(),
                    })
                }
                Some(_) => {}
            }
            chunks.push(KnownChunk {
                seq: seq as u64,
                name,
                entry: entry.clone(),
            });
        }
        if listed.len() != chunks.len() + 1 {
            let stray = listed
                .keys()
                .find(|n| **n != end_name && !chunks.iter().any(|c| c.name == **n))
                .map_or_else(String::new, |n| (*n).to_owned());
            return Err(Error::corrupt(
                &end_name,
                0,
                format!(
                    "the end record lists {} chunks, the artifact has {} files of this stream \
                     ({stray} is not in the end record)",
                    chunks.len(),
                    listed.len() - 1
                ),
            ));
        }
        let mut st = lock(&self.state);
        for (i, known) in st.chunks.iter().enumerate() {
            if chunks.get(i) != Some(known) {
                return Err(Error::corrupt(
                    &end_name,
                    0,
                    format!(
                        "the end record disagrees with chunk {i} ({}) read while the stream \
                         was being written",
                        known.name
                    ),
                ));
            }
        }
        st.chunks = chunks;
        st.end = Some(end.item_count);
        Ok(())
    }

    /// Names the chunk in a missing-file error.
    fn name_missing(&self, chunk: &KnownChunk, e: Error) -> Error {
        match e {
            Error::MissingFile { .. } => Error::MissingFile {
                file: format!(
                    "{} (chunk {}, items {}..{}) of {}",
                    chunk.name,
                    chunk.seq,
                    chunk.entry.first_item,
                    chunk.entry.end_item(),
                    self.artifact.describe()
                ),
            },
            other => other,
        }
    }

    /// Verified bytes `range` of a chunk file.
    fn read_range(&self, chunk: &KnownChunk, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        self.artifact
            .read_range(&chunk.name, range)
            .map_err(|e| self.name_missing(chunk, e))
    }

    /// Reads and checks a chunk's header and block table through verified range reads: the
    /// first 16 KiB group (which holds the whole header of chunks of up to ~1,300 blocks), and
    /// the rest of the block table if it is longer.
    fn header(&self, chunk: &KnownChunk) -> Result<ChunkInfo> {
        let len = chunk.entry.len;
        let mut head = self.read_range(chunk, 0..len.min(GROUP_BYTES))?;
        if let Some(want) = ChunkInfo::header_len(&head) {
            if want > head.len() as u64 && want <= len {
                head = self.read_range(chunk, 0..want)?;
            }
        }
        let info = ChunkInfo::parse_header(&head, len, &chunk.name)?;
        self.check_in_place(&info, chunk)?;
        Ok(info)
    }

    /// The chunk's header against the index: its items and codec.
    fn check_in_place(&self, info: &ChunkInfo, chunk: &KnownChunk) -> Result<()> {
        check_chunk(
            info,
            &chunk.name,
            chunk.entry.first_item,
            chunk.entry.item_count,
            &self.codec_id,
        )
    }

    fn load(&self, chunk: &KnownChunk) -> Result<LoadedChunk> {
        let bytes = self
            .artifact
            .bytes(&chunk.name)
            .map_err(|e| self.name_missing(chunk, e))?;
        let raw: &[u8] = (*bytes).as_ref();
        if raw.len() as u64 != chunk.entry.len {
            return Err(Error::corrupt(
                &chunk.name,
                raw.len() as u64,
                format!(
                    "chunk of items {}..{} has {} bytes, {} were recorded",
                    chunk.entry.first_item,
                    chunk.entry.end_item(),
                    raw.len(),
                    chunk.entry.len
                ),
            ));
        }
        let info = ChunkInfo::parse(raw, &chunk.name)?;
        self.check_in_place(&info, chunk)?;
        Ok(LoadedChunk {
            chunk: chunk.clone(),
            bytes,
            info,
        })
    }
}

enum Msg {
    Chunk(Result<DecodedChunk>),
    End,
}

/// How many chunk files sequential reading loads ahead of the one it decompresses, each on a
/// thread of its own: on a remote workspace a load is a download (latency, then transfer), on a
/// local one a verification (hashing); either way it overlaps with the decompression of the
/// chunk before it. Only chunks already known are loaded ahead (a stream being written is not
/// waited for), and at most this many loaded chunks wait in memory (≤ 1 GiB each by the
/// format, ~1 MiB with the default chunk size).
const LOAD_AHEAD: usize = 3;

/// The chunk loads started ahead of sequential reading, in stream order.
struct LoadAhead {
    pending: std::collections::VecDeque<(u64, Receiver<Result<LoadedChunk>>)>,
    /// The next chunk to start loading.
    next: u64,
}

impl LoadAhead {
    fn new(first_seq: u64) -> Self {
        LoadAhead {
            pending: std::collections::VecDeque::with_capacity(LOAD_AHEAD),
            next: first_seq,
        }
    }

    /// The load of chunk `seq`, if one was started ahead (waiting for it to finish).
    fn take(&mut self, seq: u64) -> Option<Result<LoadedChunk>> {
        while let Some((s, _)) = self.pending.front() {
            if *s >= seq {
                break;
            }
            self.pending.pop_front();
        }
        match self.pending.front() {
            Some((s, _)) if *s == seq => {
                let (_, rx) = self.pending.pop_front()?;
                // A loader that ended without an answer (it could not be spawned, or it
                // panicked): load here instead.
                rx.recv().ok()
            }
            _ => None,
        }
    }

    /// Starts loading the known chunks from `from` on, up to [`LOAD_AHEAD`] in flight.
    fn start(&mut self, reader: &ChunkedReader, from: u64) {
        self.next = self.next.max(from);
        while self.pending.len() < LOAD_AHEAD {
            let Some(known) = reader.inner.known(self.next) else {
                return;
            };
            let (tx, rx) = bounded(1);
            let r = reader.clone();
            let spawned = std::thread::Builder::new()
                .name("milonga-stream-load".into())
                .spawn(move || {
                    let _ = tx.send(r.inner.load(&known));
                });
            if spawned.is_err() {
                // No thread: the chunk is loaded in order when it is reached.
                return;
            }
            self.pending.push_back((self.next, rx));
            self.next += 1;
        }
    }
}

/// Decoded chunks in stream order, read ahead by a background thread; see
/// [`ChunkedReader::decoded_chunks`]. Dropping it stops the thread.
pub struct DecodedChunks {
    rx: Option<Receiver<Msg>>,
    recycle: Sender<Vec<u8>>,
    done: bool,
    stop: Arc<AtomicBool>,
    /// Chunks taken from a writer in this process (see the `live` module) until it is behind.
    live: Option<LiveCursor>,
    /// How many chunks came from the writer's memory.
    from_memory: u64,
}

/// Where a follower taking chunks from memory is, and what it needs to go on from the files.
struct LiveCursor {
    live: Arc<Live>,
    /// Its number among the live stream's followers.
    follower: u64,
    reader: ChunkedReader,
    next_seq: u64,
    next_item: u64,
    ahead: usize,
    /// While it reads from the files the chunks the writer no longer keeps: the item (a chunk
    /// boundary) where it takes chunks from memory again.
    rejoin_at: Option<u64>,
}

impl Drop for DecodedChunks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for LiveCursor {
    fn drop(&mut self) {
        self.live.leave(self.follower);
    }
}

impl std::fmt::Debug for DecodedChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedChunks")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl DecodedChunks {
    fn start(reader: ChunkedReader, first_seq: u64, from_item: u64, ahead: usize) -> Self {
        // A stream that a writer in this process is writing now: its chunks come from memory.
        let key = reader
            .inner
            .artifact
            .live_key()
            .map(|k| format!("{k}\0{}", reader.inner.layout.prefix()));
        if let Some(live) = key.as_deref().and_then(live::find) {
            let (recycle, _) = bounded::<Vec<u8>>(1);
            return DecodedChunks {
                rx: None,
                recycle,
                done: false,
                stop: Arc::new(AtomicBool::new(false)),
                live: Some(LiveCursor {
                    follower: live.join(from_item),
                    live,
                    reader,
                    next_seq: first_seq,
                    next_item: from_item,
                    ahead,
                    rejoin_at: None,
                }),
                from_memory: 0,
            };
        }
        Self::from_files(reader, first_seq, from_item, ahead)
    }

    /// The next chunk from the writer's memory; `None` to read the next one from the files
    /// (which this starts when the writer no longer keeps the chunk the follower needs).
    fn next_live(&mut self) -> Option<Option<Result<DecodedChunk>>> {
        let cur = self.live.as_mut()?;
        if cur.rejoin_at.is_some() {
            return None;
        }
        match cur.live.at(cur.follower, cur.next_item) {
            Next::Segment(s) => {
                // The block holding the next item (a follower may join inside a chunk).
                let mut first = s.first_item;
                let mut index = 0;
                for b in s.blocks.iter() {
                    let end = first + u64::from(b.item_count);
                    if cur.next_item < end {
                        break;
                    }
                    first = end;
                    index += 1;
                }
                let Some(block) = s.blocks.get(index) else {
                    // Cannot happen: the segment holds the item. Read it from the files.
                    cur.rejoin_at = Some(s.end_item());
                    let (seq, item, ahead) = (s.seq, cur.next_item, cur.ahead);
                    let files = Self::from_files(cur.reader.clone(), seq, item, ahead);
                    self.use_files(files);
                    return None;
                };
                let end = first + u64::from(block.item_count);
                cur.next_item = end;
                if index + 1 == s.blocks.len() {
                    cur.next_seq = s.seq + 1;
                    self.from_memory += 1;
                } else {
                    cur.next_seq = s.seq;
                }
                let name = cur
                    .reader
                    .inner
                    .layout
                    .chunk_name(s.seq, s.first_item, s.item_count);
                Some(Some(Ok(DecodedChunk {
                    chunk: KnownChunk {
                        seq: s.seq,
                        name,
                        entry: IndexEntry {
                            first_item: s.first_item,
                            item_count: s.item_count,
                            len: 0,
                            id: milonga_sdk::ContentId([0; 32]),
                        },
                    },
                    first_item: first,
                    item_count: block.item_count,
                    payload: Payload::shared(Arc::clone(&s.blocks), index),
                })))
            }
            Next::End => {
                self.done = true;
                Some(None)
            }
            Next::Failed(why) => {
                self.done = true;
                Some(Some(Err(Error::writer_died(
                    cur.reader.inner.artifact.describe(),
                    cur.next_item,
                    why,
                ))))
            }
            Next::Behind(oldest) => {
                // Read the gap from the files, asking the writer to keep what follows it.
                cur.live.reserve(cur.follower, oldest);
                cur.rejoin_at = Some(oldest);
                let (seq, item, ahead) = (cur.next_seq, cur.next_item, cur.ahead);
                let files = Self::from_files(cur.reader.clone(), seq, item, ahead);
                self.use_files(files);
                None
            }
        }
    }

    /// Reads from `files` from now on (stopping any earlier read-ahead thread).
    fn use_files(&mut self, mut files: DecodedChunks) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx = files.rx.take();
        self.recycle = files.recycle.clone();
        self.stop = Arc::clone(&files.stop);
        // `files` is dropped without stopping the thread it started: that thread is ours now.
        files.stop = Arc::new(AtomicBool::new(false));
    }

    /// After a chunk read from the files: back to memory once the gap is read.
    fn after_file_chunk(&mut self, chunk: &DecodedChunk) {
        let Some(cur) = self.live.as_mut() else {
            return;
        };
        if cur.rejoin_at.is_some_and(|at| chunk.end_item() >= at) {
            cur.rejoin_at = None;
            cur.next_item = chunk.end_item();
            cur.next_seq = chunk.chunk.seq + 1;
            self.stop.store(true, Ordering::Relaxed);
            self.rx = None;
        }
    }

    fn from_files(reader: ChunkedReader, first_seq: u64, from_item: u64, ahead: usize) -> Self {
        let (tx, rx) = bounded::<Msg>(ahead.max(1));
        let (recycle, recycled) = bounded::<Vec<u8>>(ahead.max(1) + 2);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("milonga-stream-read".into())
            .spawn(move || {
                let cancelled = || stopped.load(Ordering::Relaxed);
                let mut dctx = Decompressor::new();
                let mut target = 1;
                let mut ahead = LoadAhead::new(first_seq);
                for seq in first_seq.. {
                    let loaded = match ahead.take(seq) {
                        Some(loaded) => loaded,
                        None => match reader.inner.chunk(seq, &cancelled) {
                            Ok(None) => {
                                let _ = tx.send(Msg::End);
                                return;
                            }
                            Ok(Some(c)) => reader.inner.load(&c),
                            Err(e) => Err(e),
                        },
                    };
                    if loaded.is_ok() {
                        ahead.start(&reader, seq + 1);
                    }
                    let loaded = match loaded {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = tx.send(Msg::Chunk(Err(e)));
                            return;
                        }
                    };
                    let info = &loaded.info;
                    let first = loaded.chunk.entry.first_item;
                    let mut b = 0;
                    let mut next_first = first;
                    for blk in &info.blocks {
                        let end = next_first + u64::from(blk.item_count);
                        if end > from_item {
                            break;
                        }
                        next_first = end;
                        b += 1;
                    }
                    while b < info.blocks.len() {
                        let mut buf = recycled.try_recv().unwrap_or_default();
                        buf.clear();
                        let seg_first = next_first;
                        let mut items = 0u32;
                        while let Some(blk) = info.blocks.get(b) {
                            if items > 0 && buf.len() >= target {
                                break;
                            }
                            if let Err(e) = info.decompress_block(
                                (*loaded.bytes).as_ref(),
                                b,
                                &loaded.chunk.name,
                                &mut buf,
                                &mut dctx,
                            ) {
                                let _ = tx.send(Msg::Chunk(Err(e)));
                                return;
                            }
                            items += blk.item_count;
                            b += 1;
                        }
                        target = SEGMENT_BYTES;
                        next_first += u64::from(items);
                        let seg = DecodedChunk {
                            chunk: loaded.chunk.clone(),
                            first_item: seg_first,
                            item_count: items,
                            payload: buf.into(),
                        };
                        if tx.send(Msg::Chunk(Ok(seg))).is_err() {
                            return;
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => DecodedChunks {
                rx: Some(rx),
                recycle,
                done: false,
                stop,
                live: None,
                from_memory: 0,
            },
            Err(e) => {
                let (tx, rx) = bounded(1);
                let _ = tx.send(Msg::Chunk(Err(Error::io("stream read-ahead thread", e))));
                DecodedChunks {
                    rx: Some(rx),
                    recycle,
                    done: false,
                    stop,
                    live: None,
                    from_memory: 0,
                }
            }
        }
    }

    /// How many of the chunks returned so far came from the memory of a writer in this process
    /// (a stream followed while it is written) instead of being read back from their files.
    pub fn from_memory(&self) -> u64 {
        self.from_memory
    }

    /// Gives a finished chunk's buffer back for reuse.
    pub fn recycle(&self, chunk: DecodedChunk) {
        if let Some(buf) = chunk.payload.into_buffer() {
            let _ = self.recycle.try_send(buf);
        }
    }
}

impl Iterator for DecodedChunks {
    type Item = Result<DecodedChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(next) = self.next_live() {
            return next;
        }
        let msg = self.rx.as_ref().map(Receiver::recv);
        match msg {
            Some(Ok(Msg::Chunk(Ok(c)))) => {
                self.after_file_chunk(&c);
                Some(Ok(c))
            }
            Some(Ok(Msg::Chunk(Err(e)))) => {
                self.done = true;
                Some(Err(e))
            }
            Some(Ok(Msg::End)) => {
                self.done = true;
                None
            }
            Some(Err(_)) | None => {
                self.done = true;
                Some(Err(Error::unsupported(
                    "the stream read-ahead thread stopped unexpectedly",
                )))
            }
        }
    }
}
