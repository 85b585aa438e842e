//! Writing a chunked stream: items are cut into blocks and chunks on the producer's thread;
//! compression, checksums and the artifact writes run on background threads behind bounded
//! channels; every sealed chunk becomes its own durable artifact file; the end record closes it.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use crossbeam_channel::bounded;
use milonga_sdk::{ArtifactWriter, Error, FileEntry, Result};

use crate::varint::varint_len;

use super::chunk::{ChunkEncoder, ChunkInfo, Compression, RawBlock, MAX_CHUNK_PAYLOAD};
use super::end::{EndRecord, IndexEntry, StreamLayout};
use super::live::{self, LiveWriter, Segment};

/// How a stream is cut into chunks and blocks, and how it is compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChunkOptions {
    /// Target uncompressed size of a chunk (one artifact file) in bytes; a chunk is sealed as
    /// soon as its items reach it. Default 1 MiB; at most 1 GiB.
    pub chunk_size: usize,
    /// Target uncompressed size of a block (the unit of compression and of random access within
    /// a chunk). Default 16 KiB: a random `get` decompresses one block.
    pub block_size: usize,
    /// How blocks are compressed. Default zstd level 3.
    pub compression: Compression,
    /// Compression threads. Default: the available parallelism, at most 4.
    pub workers: usize,
    /// Sealed chunks that may wait between two stages (producer → compression → writer). A slow
    /// disk makes the producer wait once these queues are full. Default 2.
    pub queue: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            chunk_size: 1 << 20,
            block_size: 16 << 10,
            compression: Compression::DEFAULT,
            workers: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(1, 4),
            queue: 2,
        }
    }
}

impl ChunkOptions {
    fn check(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Encode {
                what: "chunk options".into(),
                reason,
            })
        };
        if self.chunk_size == 0 || self.chunk_size as u64 > MAX_CHUNK_PAYLOAD {
            return bad(format!(
                "chunk_size {} is not in 1..=1 GiB",
                self.chunk_size
            ));
        }
        if self.block_size == 0 {
            return bad("block_size must be at least 1".into());
        }
        Ok(())
    }
}

/// The durable prefix of a stream that an earlier, interrupted write left behind: where a new
/// write continues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumePoint {
    chunks: Vec<IndexEntry>,
    end: Option<EndRecord>,
}

impl ResumePoint {
    /// The start of a new stream.
    pub fn start() -> Self {
        Self::default()
    }

    /// Reads the stream's files in `artifact.durable_files()`: its chunks (which must be
    /// numbered 0, 1, 2 … with contiguous items) and, if the earlier write got that far, its
    /// end record. Each chunk is read with `durable_bytes` (verified by the backend) and its own
    /// header and checksum are checked, so a resumed stream never builds on a bad chunk.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::ChecksumMismatch`] for a bad chunk, a gap in the numbering
    /// or a stray file; [`Error::WrongFormat`] if the chunks were written with another codec.
    pub fn from_durable(
        artifact: &dyn ArtifactWriter,
        layout: &StreamLayout,
        codec_id: &str,
    ) -> Result<Self> {
        let files: Vec<FileEntry> = artifact
            .durable_files()
            .into_iter()
            .filter(|f| layout.owns(&f.name))
            .collect();
        let mut chunks: BTreeMap<u64, (FileEntry, u64, u32)> = BTreeMap::new();
        let mut end_file = None;
        for f in files {
            if f.name == layout.end_name() {
                end_file = Some(f);
                continue;
            }
            match layout.parse_chunk_name(&f.name) {
                Some(Ok((seq, first, count))) => {
                    if chunks.insert(seq, (f.clone(), first, count)).is_some() {
                        return Err(Error::corrupt(&f.name, 0, format!("chunk {seq} twice")));
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Err(Error::corrupt(&f.name, 0, "not a file of this stream")),
            }
        }
        let mut out = Vec::with_capacity(chunks.len());
        let mut next_item = 0u64;
        for (i, (seq, (f, first, count))) in chunks.into_iter().enumerate() {
            if seq != i as u64 || first != next_item {
                return Err(Error::corrupt(
                    &f.name,
                    0,
                    format!(
                        "durable chunk {seq} at item {first} follows {i} chunks ending at item \
                         {next_item}: the stream has a gap"
                    ),
                ));
            }
            let bytes = artifact.durable_bytes(&f.name)?;
            let info = ChunkInfo::parse((*bytes).as_ref(), &f.name)?;
            check_chunk(&info, &f.name, first, count, codec_id)?;
            next_item = first + u64::from(count);
            out.push(IndexEntry {
                first_item: first,
                item_count: count,
                len: f.len,
                id: f.id,
            });
        }
        let end = match end_file {
            None => None,
            Some(f) => {
                let bytes = artifact.durable_bytes(&f.name)?;
                let rec = EndRecord::decode((*bytes).as_ref(), &f.name)?;
                if rec.chunks != out {
                    return Err(Error::corrupt(
                        &f.name,
                        0,
                        "the end record does not list the durable chunks",
                    ));
                }
                Some(rec)
            }
        };
        Ok(ResumePoint { chunks: out, end })
    }

    /// Items already durable.
    pub fn items(&self) -> u64 {
        self.chunks.last().map_or(0, IndexEntry::end_item)
    }

    /// The durable chunks, in order.
    pub fn chunks(&self) -> &[IndexEntry] {
        &self.chunks
    }

    /// Whether the earlier write finished the stream (wrote its end record).
    pub fn is_finished(&self) -> bool {
        self.end.is_some()
    }
}

/// Checks a parsed chunk against what its name (or index entry) says.
pub(crate) fn check_chunk(
    info: &ChunkInfo,
    name: &str,
    first: u64,
    count: u32,
    codec_id: &str,
) -> Result<()> {
    if info.first_item != first || info.item_count != count {
        return Err(Error::corrupt(
            name,
            8,
            format!(
                "chunk out of place: it holds items {}..{}, the stream expects items {}..{} here",
                info.first_item,
                info.first_item + u64::from(info.item_count),
                first,
                first + u64::from(count)
            ),
        ));
    }
    if info.codec_id != codec_id {
        return Err(Error::WrongFormat {
            file: name.to_owned(),
            expected: format!("items encoded with codec {codec_id:?}"),
            found: format!("items encoded with codec {:?}", info.codec_id),
        });
    }
    Ok(())
}

struct Job {
    seq: u64,
    first_item: u64,
    item_count: u32,
    /// Shared with the live stream's followers, if any.
    blocks: Arc<[RawBlock]>,
}

/// Where the producer puts encoded items; see [`write_chunked`].
pub struct ChunkSink<'a> {
    options: &'a ChunkOptions,
    tx: Option<crossbeam_channel::Sender<Job>>,
    blocks: Vec<RawBlock>,
    current: RawBlock,
    chunk_bytes: usize,
    chunk_items: u64,
    seq: u64,
    first_item: u64,
    scratch: Vec<u8>,
    closed: bool,
    /// Followers in this process that take sealed chunks from memory.
    live: LiveWriter,
}

impl std::fmt::Debug for ChunkSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSink")
            .field("items", &self.items())
            .finish_non_exhaustive()
    }
}

impl ChunkSink<'_> {
    /// Items in the stream so far, including those of an earlier write that this one resumes.
    pub fn items(&self) -> u64 {
        self.first_item + self.chunk_items
    }

    /// Appends one item, given as its encoded bytes.
    ///
    /// # Errors
    /// [`Error::Encode`] for an item over 1 GiB or after the stream was closed;
    /// [`Error::Unsupported`] if a background stage stopped (its own error is what
    /// [`write_chunked`] returns).
    pub fn push(&mut self, item: &[u8]) -> Result<()> {
        if self.closed {
            return Err(Error::Encode {
                what: format!("item {}", self.items()),
                reason: "the stream was already finished by an earlier write".into(),
            });
        }
        let len = varint_len(item.len() as u64) + item.len();
        if len as u64 > MAX_CHUNK_PAYLOAD {
            return Err(Error::Encode {
                what: format!("item {}", self.items()),
                reason: format!("{} bytes exceed the 1 GiB item limit", item.len()),
            });
        }
        if self.chunk_items > 0
            && ((self.chunk_bytes + len) as u64 > MAX_CHUNK_PAYLOAD
                || self.chunk_items == u64::from(u32::MAX))
        {
            self.seal_chunk()?;
        }
        if !self.current.data.is_empty() && self.current.data.len() + len > u32::MAX as usize {
            self.seal_block();
        }
        self.current.push(item);
        self.chunk_bytes += len;
        self.chunk_items += 1;
        if self.current.data.len() >= self.options.block_size {
            self.seal_block();
        }
        if self.chunk_bytes >= self.options.chunk_size {
            self.seal_chunk()?;
        }
        Ok(())
    }

    /// Appends one item that `encode` appends to the buffer it is given.
    ///
    /// # Errors
    /// What `encode` returns, or as [`push`](ChunkSink::push).
    pub fn push_with(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let r = encode(&mut buf).and_then(|()| self.push(&buf));
        self.scratch = buf;
        r
    }

    fn seal_block(&mut self) {
        if self.current.item_count > 0 {
            self.blocks.push(std::mem::take(&mut self.current));
        }
    }

    fn seal_chunk(&mut self) -> Result<()> {
        self.seal_block();
        if self.blocks.is_empty() {
            return Ok(());
        }
        let job = Job {
            seq: self.seq,
            first_item: self.first_item,
            item_count: self.chunk_items as u32,
            blocks: std::mem::take(&mut self.blocks).into(),
        };
        self.live.push(|| Segment {
            seq: job.seq,
            first_item: job.first_item,
            item_count: job.item_count,
            blocks: Arc::clone(&job.blocks),
        });
        self.seq += 1;
        self.first_item += self.chunk_items;
        self.chunk_items = 0;
        self.chunk_bytes = 0;
        let stopped = || Error::unsupported("the stream's background writer stopped");
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }
}

/// Writes one chunked stream into `artifact` under `layout`, continuing after `resume`.
///
/// `produce` runs on the calling thread and pushes encoded items into the [`ChunkSink`]; full
/// chunks are compressed by `options.workers` threads and written, in order, by a writer thread,
/// each as its own artifact file that is durable once finished. When `produce` returns `Ok`, the
/// last partial chunk is sealed, and the end record (`layout.end_name()`) is written last. When
/// it returns an error (or panics), the chunks sealed so far are still written (so a later write
/// can resume after them) but the partial chunk and the end record are not, and that error is
/// returned (or the panic resumed).
///
/// Chunk boundaries depend only on the items and the options, so a stream written in one go and
/// one interrupted and resumed at a chunk boundary consist of the same bytes.
///
/// If `resume` is a finished stream, nothing is written and `produce` must not push anything.
///
/// # Errors
/// `produce`'s error; encoding, compression or I/O errors of the background stages (the first
/// one wins).
pub fn write_chunked<F>(
    artifact: &dyn ArtifactWriter,
    layout: &StreamLayout,
    codec_id: &str,
    options: &ChunkOptions,
    resume: ResumePoint,
    produce: F,
) -> Result<EndRecord>
where
    F: FnOnce(&mut ChunkSink<'_>) -> Result<()>,
{
    options.check()?;
    // Checks the codec id and compression level before any thread starts.
    drop(ChunkEncoder::new(codec_id, options.compression)?);
    let mut sink = ChunkSink {
        options,
        tx: None,
        blocks: Vec::new(),
        current: RawBlock::default(),
        chunk_bytes: 0,
        chunk_items: 0,
        seq: resume.chunks.len() as u64,
        first_item: resume.items(),
        scratch: Vec::new(),
        closed: resume.end.is_some(),
        live: LiveWriter(None),
    };
    if let Some(end) = resume.end {
        produce(&mut sink)?;
        return Ok(end);
    }
    if let Some(key) = artifact.live_key() {
        sink.live = LiveWriter(Some(live::publish(format!("{key}\0{}", layout.prefix()))));
    }
    let queue = options.queue.max(1);
    let workers = options.workers.max(1);
    let (job_tx, job_rx) = bounded::<Job>(queue);
    let (done_tx, done_rx) = bounded::<(Job, Result<Vec<u8>>)>(queue + workers);
    let (produced, written) = std::thread::scope(|s| {
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            std::thread::Builder::new()
                .name("milonga-chunk-compress".into())
                .spawn_scoped(s, move || {
                    let mut enc = ChunkEncoder::new(codec_id, options.compression);
                    for mut job in job_rx {
                        let r = match &mut enc {
                            Ok(enc) => enc.encode(job.first_item, &job.blocks),
                            Err(e) => Err(Error::Encode {
                                what: "chunk".into(),
                                reason: e.to_string(),
                            }),
                        };
                        job.blocks = Arc::from(Vec::new());
                        if done_tx.send((job, r)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::io("compression thread", e))?;
        }
        drop(job_rx);
        drop(done_tx);
        let first_seq = sink.seq;
        let writer = std::thread::Builder::new()
            .name("milonga-chunk-write".into())
            .spawn_scoped(s, move || -> Result<Vec<IndexEntry>> {
                let mut pending: BTreeMap<u64, (Job, Result<Vec<u8>>)> = BTreeMap::new();
                let mut next = first_seq;
                let mut written = Vec::new();
                for (job, bytes) in done_rx {
                    pending.insert(job.seq, (job, bytes));
                    while let Some((job, bytes)) = pending.remove(&next) {
                        let bytes = bytes?;
                        let name = layout.chunk_name(job.seq, job.first_item, job.item_count);
                        let mut file = artifact.create(&name)?;
                        file.write_all(&bytes).map_err(|e| Error::io(&name, e))?;
                        let entry = file.finish()?;
                        written.push(IndexEntry {
                            first_item: job.first_item,
                            item_count: job.item_count,
                            len: entry.len,
                            id: entry.id,
                        });
                        next += 1;
                    }
                }
                if let Some(seq) = pending.keys().next() {
                    return Err(Error::unsupported(format!(
                        "chunk {seq} was compressed but chunk {next} never was"
                    )));
                }
                Ok(written)
            })
            .map_err(|e| Error::io("chunk writer thread", e))?;
        sink.tx = Some(job_tx);
        // A producer that panics must still close the queue: the scope waits for the workers,
        // which wait for the queue to close.
        let produced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            produce(&mut sink).and_then(|()| sink.seal_chunk())
        }));
        // Closing the queue lets the workers and the writer drain what was sealed and stop.
        sink.tx = None;
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::unsupported("the chunk writer panicked")));
        // The chunks sealed before the panic are durable now; the panic goes on.
        let produced = produced.unwrap_or_else(|p| {
            let text = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the producer panicked".into());
            sink.live.fail(format!("panicked: {text}"));
            std::panic::resume_unwind(p)
        });
        if let Err(e) = written.as_ref().and(produced.as_ref()) {
            sink.live.fail(e.to_string());
        }
        Ok::<_, Error>((produced, written))
    })?;
    // A background failure is the cause of a producer's "stopped" error: report it first.
    let written = written?;
    produced?;
    let mut chunks = resume.chunks;
    chunks.extend(written);
    let end = EndRecord::new(chunks);
    let name = layout.end_name();
    let mut file = artifact.create(&name)?;
    file.write_all(&end.encode())
        .map_err(|e| Error::io(&name, e))?;
    file.finish()?;
    std::mem::replace(&mut sink.live, LiveWriter(None)).finish(end.item_count);
    Ok(end)
}
