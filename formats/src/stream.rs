//! Streams of items: [`Stream`] is what a streaming step returns, [`StreamFormat`] stores it as a
//! chunked stream (see [`chunked`](crate::chunked)), and [`StreamReader`] reads it back lazily.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use milonga_sdk::{ArtifactHandle, ArtifactWriter, BoxError, Codec, Error, Format, Result};

use crate::chunked::{
    write_chunked, ChunkOptions, ChunkedReader, Compression, DecodedChunk, DecodedChunks,
    ResumePoint, StreamLayout,
};
use crate::codec::PostcardCodec;

type BoxIter<T> = Box<dyn Iterator<Item = std::result::Result<T, BoxError>> + Send>;

/// A sequence of items produced lazily: the value a streaming step returns.
///
/// It wraps any iterator (of items, or of `Result`s of items) that can be sent to another
/// thread. [`StreamFormat`] pulls from it item by item while writing, so the items are never all
/// in memory. An `Err` item stops the write: the chunks sealed before it stay durable and a
/// later run can resume after them (see [`Format::durable_items`]).
///
/// ```
/// use milonga_formats::Stream;
/// let squares = Stream::new((0u64..1_000_000).map(|i| i * i));
/// let parsed = Stream::try_new(["1", "2", "x"].into_iter().map(|s| s.parse::<u32>()));
/// # let _ = (squares, parsed);
/// ```
pub struct Stream<T> {
    items: BoxIter<T>,
}

impl<T: 'static> Stream<T> {
    /// A stream of the items of `items`.
    pub fn new<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Stream {
            items: Box::new(items.into_iter().map(Ok)),
        }
    }

    /// A stream of fallible items: the first `Err` ends the stream with an error
    /// ([`Error::Source`], whose [`source`](std::error::Error::source) is the item's error).
    /// `E` is any error type, or a message (`String`, `&str`).
    pub fn try_new<I, E>(items: I) -> Self
    where
        I: IntoIterator<Item = std::result::Result<T, E>>,
        I::IntoIter: Send + 'static,
        E: Into<BoxError>,
    {
        Stream {
            items: Box::new(items.into_iter().map(|r| r.map_err(Into::into))),
        }
    }

    /// A stream with no items.
    pub fn empty() -> Self {
        Stream {
            items: Box::new(std::iter::empty()),
        }
    }
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}

impl<T> Iterator for Stream<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        self.items.next().map(|r| r.map_err(Error::Source))
    }
}

impl<T: Send + 'static> From<Vec<T>> for Stream<T> {
    fn from(items: Vec<T>) -> Self {
        Stream::new(items)
    }
}

/// Stores a [`Stream`] of `T` as a chunked, compressed, resumable stream of items encoded with
/// the codec `C` (postcard by default), and reads it back as a lazy [`StreamReader`].
///
/// Id `"milonga.stream"`, version 1. The files are those of a chunked stream with an empty
/// prefix (`chunks/…` and `end`), specified in `docs/FORMAT.md` §8.2.
///
/// - **Writing** encodes items on the producer's thread into blocks (16 KiB) and chunks
///   (1 MiB uncompressed by default); each sealed chunk is compressed (zstd level 3 by
///   default) on background threads and written as its own durable artifact file; the end
///   record is written last. Memory stays bounded by a few chunks.
/// - **Resume**: [`durable_items`](Format::durable_items) counts the items in the chunk files an
///   interrupted write left; `write` then continues after them with the items it is given (the
///   remaining ones).
/// - **Reading** is lazy: see [`StreamReader`].
///
/// ```
/// use milonga_formats::{Stream, StreamFormat};
/// use milonga_sdk::{Format, MemoryArtifact};
///
/// let artifact = MemoryArtifact::new();
/// let format = StreamFormat::<u64>::new();
/// format.write(Stream::new(0..10_000u64), &artifact)?;
/// let reader = format.read(artifact.handle())?;
/// assert_eq!(reader.len()?, 10_000);
/// assert_eq!(reader.get(1234)?, 1234);
/// assert_eq!(reader.iter().map(|r| r.unwrap()).sum::<u64>(), (0..10_000u64).sum::<u64>());
/// # Ok::<(), milonga_sdk::Error>(())
/// ```
pub struct StreamFormat<T, C = PostcardCodec> {
    codec: C,
    /// `milonga.stream`, or `milonga.stream+<codec>` for codecs other than postcard, so that
    /// changing the codec changes the ids of the steps that use the format.
    id: std::sync::OnceLock<String>,
    options: ChunkOptions,
    layout: StreamLayout,
    _items: PhantomData<fn() -> T>,
}

impl<T, C: Clone> Clone for StreamFormat<T, C> {
    fn clone(&self) -> Self {
        StreamFormat {
            codec: self.codec.clone(),
            id: self.id.clone(),
            options: self.options.clone(),
            layout: self.layout.clone(),
            _items: PhantomData,
        }
    }
}

impl<T, C: fmt::Debug> fmt::Debug for StreamFormat<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamFormat")
            .field("codec", &self.codec)
            .field("options", &self.options)
            .finish()
    }
}

impl<T> StreamFormat<T, PostcardCodec> {
    /// Items encoded with postcard, default options.
    pub fn new() -> Self {
        Self::with_codec(PostcardCodec)
    }
}

impl<T> Default for StreamFormat<T, PostcardCodec> {
    fn default() -> Self {
        Self::new()
    }
}

/// Items as JSON (id `"milonga.stream+json"`), default options: a step's stream that other
/// tools (and `milonga cat`) can read without the item's Rust type.
impl<T> Default for StreamFormat<T, crate::JsonCodec> {
    fn default() -> Self {
        Self::with_codec(crate::JsonCodec)
    }
}

impl<T, C> StreamFormat<T, C> {
    /// The format id with the default codec (postcard), `"milonga.stream"`; with another codec
    /// the id is `"milonga.stream+<codec id>"`.
    pub const ID: &'static str = "milonga.stream";
    /// The version of the bytes this build writes, `1`.
    pub const VERSION: u32 = 1;

    /// Items encoded with `codec`, default options.
    pub fn with_codec(codec: C) -> Self {
        StreamFormat {
            codec,
            id: std::sync::OnceLock::new(),
            options: ChunkOptions::default(),
            layout: StreamLayout::default(),
            _items: PhantomData,
        }
    }

    /// Sets all chunking options.
    #[must_use]
    pub fn with_options(mut self, options: ChunkOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the target uncompressed chunk size in bytes (default 1 MiB).
    #[must_use]
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.options.chunk_size = bytes;
        self
    }

    /// Sets the target uncompressed block size in bytes (default 16 KiB).
    #[must_use]
    pub fn with_block_size(mut self, bytes: usize) -> Self {
        self.options.block_size = bytes;
        self
    }

    /// Sets the compression (default zstd level 3).
    #[must_use]
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.options.compression = compression;
        self
    }

    /// Sets the number of compression threads.
    #[must_use]
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.options.workers = workers;
        self
    }

    /// The chunking options.
    pub fn options(&self) -> &ChunkOptions {
        &self.options
    }
}

impl<T, C> Format<Stream<T>> for StreamFormat<T, C>
where
    T: 'static,
    C: Codec<T> + Clone + 'static,
{
    type Output = StreamReader<T, C>;

    fn id(&self) -> &str {
        self.id.get_or_init(|| match self.codec.id() {
            "postcard" => Self::ID.to_owned(),
            other => format!("{}+{other}", Self::ID),
        })
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn write(&self, value: Stream<T>, artifact: &dyn ArtifactWriter) -> Result<()> {
        let resume = ResumePoint::from_durable(artifact, &self.layout, self.codec.id())?;
        let codec = &self.codec;
        write_chunked(
            artifact,
            &self.layout,
            codec.id(),
            &self.options,
            resume,
            |sink| {
                for item in value {
                    let item = item?;
                    sink.push_with(|buf| codec.encode(&item, buf))?;
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<StreamReader<T, C>> {
        let chunks = ChunkedReader::open(artifact, self.layout.clone(), self.codec.id())?;
        Ok(StreamReader {
            chunks,
            codec: self.codec.clone(),
            _items: PhantomData,
        })
    }

    fn durable_items(&self, artifact: &dyn ArtifactWriter) -> Result<u64> {
        Ok(ResumePoint::from_durable(artifact, &self.layout, self.codec.id())?.items())
    }
}

/// A stored stream, read lazily: what [`StreamFormat`] returns.
///
/// - [`iter`](Self::iter) reads items in order with a read-ahead thread, holding a few
///   decompressed chunks at most, whatever the length; [`StreamIter::read_into`] and
///   [`StreamIter::next_raw`] reuse buffers.
/// - [`len`](Self::len), [`get`](Self::get) and [`range`](Self::range) find items through the
///   chunk index and decompress only the block (or chunks) they need.
/// - Every chunk is verified (content hash by the backend, its own checksum and header here)
///   before any of its items is returned; problems are typed errors naming the chunk file and
///   the item.
/// - If the artifact is still being written, reads wait for the writer; a writer that fails
///   makes them fail rather than end early.
///
/// Clones share the index and caches.
pub struct StreamReader<T, C = PostcardCodec> {
    chunks: ChunkedReader,
    codec: C,
    _items: PhantomData<fn() -> T>,
}

impl<T, C: Clone> Clone for StreamReader<T, C> {
    fn clone(&self) -> Self {
        StreamReader {
            chunks: self.chunks.clone(),
            codec: self.codec.clone(),
            _items: PhantomData,
        }
    }
}

impl<T, C> fmt::Debug for StreamReader<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("chunks", &self.chunks)
            .finish_non_exhaustive()
    }
}

impl<T, C: Codec<T> + Clone> StreamReader<T, C> {
    /// The underlying chunk reader (chunk index, raw items).
    pub fn chunks(&self) -> &ChunkedReader {
        &self.chunks
    }

    /// The number of items. For a stream still being written, waits until it is complete.
    ///
    /// # Errors
    /// A failed writer, or an inconsistent stream.
    pub fn len(&self) -> Result<u64> {
        self.chunks.len()
    }

    /// Whether the stream has no items (waits like [`len`](Self::len)).
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether the stream is known to be complete (its end record was read).
    pub fn is_complete(&self) -> bool {
        self.chunks.is_complete()
    }

    /// Items committed so far, without waiting.
    pub fn committed_len(&self) -> u64 {
        self.chunks.committed_len()
    }

    /// Item `index`, decompressing only the block that holds it. Waits for it if the stream is
    /// still being written.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] past the end; corruption, decoding or writer errors.
    pub fn get(&self, index: u64) -> Result<T> {
        self.chunks
            .with_item(index, |bytes| self.codec.decode(bytes))
    }

    /// Decodes item `index` into `slot`, reusing its allocations where the codec allows.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn get_into(&self, index: u64, slot: &mut T) -> Result<()> {
        self.chunks
            .with_item(index, |bytes| self.codec.decode_into(bytes, slot))
    }

    /// All items, in order.
    pub fn iter(&self) -> StreamIter<T, C> {
        self.iter_from(0, u64::MAX)
    }

    /// Items `range.start..range.end`, in order, decompressing only the chunks that hold them.
    /// Past the end of the stream, the iterator yields [`Error::OutOfRange`] once.
    pub fn range(&self, range: Range<u64>) -> StreamIter<T, C> {
        self.iter_from(range.start, range.end.max(range.start))
    }

    fn iter_from(&self, start: u64, end: u64) -> StreamIter<T, C> {
        StreamIter {
            reader: self.clone(),
            next: start,
            end,
            chunks: None,
            current: None,
            pos: 0,
            done: start >= end,
            from_memory: 0,
        }
    }

    fn decode(&self, bytes: &[u8], chunk: &str, index: u64) -> Result<T> {
        self.codec
            .decode(bytes)
            .map_err(|e| self.item_error(e, chunk, index))
    }

    /// Names the chunk file and the item in a codec's error.
    fn item_error(&self, e: Error, chunk: &str, index: u64) -> Error {
        e.in_file(
            crate::chunked::item_file(chunk, index, &self.chunks.artifact().describe()),
            0,
        )
    }
}

/// An iterator over the items of a [`StreamReader`], in order; see [`StreamReader::iter`].
///
/// After an error it yields nothing more.
pub struct StreamIter<T, C = PostcardCodec> {
    reader: StreamReader<T, C>,
    /// Number of the next item to yield.
    next: u64,
    /// One past the last item to yield.
    end: u64,
    chunks: Option<DecodedChunks>,
    current: Option<DecodedChunk>,
    /// Byte offset of the next item in `current`'s payload.
    pos: usize,
    done: bool,
    /// Chunks taken from the memory of a writer in this process.
    from_memory: u64,
}

impl<T, C> fmt::Debug for StreamIter<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamIter")
            .field("next", &self.next)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl<T, C: Codec<T> + Clone> StreamIter<T, C> {
    /// How many chunks this iterator has taken from the memory of a writer in this process
    /// instead of reading them back from their files: a stream followed while it is written
    /// in the same process (a pipelined consumer) gets its items as the writer seals them,
    /// without reading, verifying or decompressing them; one that falls more than a few chunks
    /// behind the writer reads the rest from the files.
    pub fn chunks_from_memory(&self) -> u64 {
        self.from_memory
    }

    /// The encoded bytes of the next item (borrowed from the decompressed chunk, no copy), or
    /// `Ok(None)` at the end.
    ///
    /// # Errors
    /// Corruption or writer errors, naming the chunk file and item.
    pub fn next_raw(&mut self) -> Result<Option<&[u8]>> {
        if self.done {
            return Ok(None);
        }
        match self.advance() {
            Ok(Some((start, len))) => {
                let bytes = self
                    .current
                    .as_ref()
                    .and_then(|c| c.payload.get(start..start + len));
                Ok(bytes)
            }
            Ok(None) => {
                self.finish();
                Ok(None)
            }
            Err(e) => {
                self.finish();
                Err(e)
            }
        }
    }

    /// Decodes the next item into `slot`, reusing its allocations where the codec allows;
    /// `Ok(false)` at the end.
    ///
    /// # Errors
    /// As [`next_raw`](Self::next_raw), or a decoding error.
    pub fn read_into(&mut self, slot: &mut T) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let index = self.next;
        let r = match self.advance() {
            Ok(Some((start, len))) => {
                let (bytes, chunk) = self.current_item(start, len);
                self.reader
                    .codec
                    .decode_into(bytes, slot)
                    .map(|()| true)
                    .map_err(|e| self.reader.item_error(e, chunk, index))
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        if !matches!(r, Ok(true)) {
            self.finish();
        }
        r
    }

    /// Ends the iteration: nothing more is yielded, and the read-ahead thread (which would
    /// otherwise keep decoding ahead, or keep following a writer, for as long as the finished
    /// iterator lives) is stopped and its buffers freed.
    fn finish(&mut self) {
        self.done = true;
        self.chunks = None;
        self.current = None;
    }

    /// The bytes at `start..start + len` of the current payload, and the name of its chunk file.
    fn current_item(&self, start: usize, len: usize) -> (&[u8], &str) {
        match &self.current {
            Some(c) => (
                c.payload.get(start..start + len).unwrap_or_default(),
                &c.chunk.name,
            ),
            None => (&[], ""),
        }
    }

    /// Moves to the next item and returns its position `(start, len)` in the current payload.
    fn advance(&mut self) -> Result<Option<(usize, usize)>> {
        if self.next >= self.end {
            return Ok(None);
        }
        loop {
            if let Some(c) = &self.current {
                let seg_end = c.end_item();
                if self.next < seg_end {
                    let mut items = crate::chunked::Items::new(
                        c.payload.get(self.pos..).unwrap_or_default(),
                        seg_end - self.next,
                    );
                    let item = items
                        .next_item()
                        .map_err(|r| c.item_error(self.next, self.pos, r))?;
                    let Some(bytes) = item else {
                        return Err(c.item_error(self.next, self.pos, "missing item"));
                    };
                    let start = self.pos + items.position() - bytes.len();
                    self.pos += items.position();
                    self.next += 1;
                    if self.next == seg_end && self.pos != c.payload.len() {
                        return Err(c.item_error(
                            self.next,
                            self.pos,
                            "bytes after the block's last item",
                        ));
                    }
                    return Ok(Some((start, bytes.len())));
                }
            }
            if self.chunks.is_none() {
                let first_seq = match self.reader.chunks.chunk_of(self.next) {
                    Ok(c) => c.seq,
                    Err(Error::OutOfRange { .. }) if self.end == u64::MAX => return Ok(None),
                    Err(e) => return Err(e),
                };
                self.chunks = Some(self.reader.chunks.decoded_chunks(first_seq, self.next, 4));
            }
            let Some(chunks) = self.chunks.as_mut() else {
                return Ok(None);
            };
            let next = chunks.next();
            self.from_memory = chunks.from_memory();
            match next {
                Some(Ok(c)) => {
                    if let Some(old) = self.current.take() {
                        chunks.recycle(old);
                    }
                    if self.next < c.first_item || self.next >= c.end_item() {
                        return Err(c.item_error(
                            self.next,
                            0,
                            "the read-ahead returned items out of order",
                        ));
                    }
                    let mut items = c.items();
                    // An item that does not parse is named by its own number and offset, not
                    // the segment's first.
                    items.skip_items(self.next - c.first_item).map_err(|r| {
                        c.item_error(c.first_item + items.yielded(), items.position(), r)
                    })?;
                    self.pos = items.position();
                    self.current = Some(c);
                }
                Some(Err(e)) => return Err(e),
                None => {
                    if self.end == u64::MAX {
                        return Ok(None);
                    }
                    let len = self.reader.chunks.committed_len();
                    return Err(Error::OutOfRange {
                        file: self.reader.chunks.artifact().describe(),
                        index: self.next,
                        len,
                    });
                }
            }
        }
    }
}

impl<T, C: Codec<T> + Clone> Iterator for StreamIter<T, C> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        let index = self.next;
        let r = match self.advance() {
            Ok(Some((start, len))) => {
                let (bytes, chunk) = self.current_item(start, len);
                self.reader.decode(bytes, chunk, index)
            }
            Ok(None) => {
                self.finish();
                return None;
            }
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.finish();
        }
        Some(r)
    }
}
