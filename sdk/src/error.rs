//! The SDK error type.

use std::fmt;
use std::io;

/// A `Result` whose error is the SDK [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error, boxed: what [`Error::Source`], [`Error::Unsupported`] and [`Error::Backend`] carry
/// (a `String` or `&str` converts into it with `.into()`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while a format writes or reads an artifact.
///
/// Every variant that concerns stored bytes names the file (an artifact file name, an object id
/// or a path) and, where it is known, the byte offset. Formats add the file name at the place the
/// I/O happens (see [`Error::in_file`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The bytes of `file` do not follow the format's layout.
    #[error("{file} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file that is corrupt.
        file: String,
        /// Byte offset where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The content hash of `file` is not the one recorded for it.
    #[error("{file}: checksum mismatch (expected {expected}, found {actual})")]
    ChecksumMismatch {
        /// The file whose content changed.
        file: String,
        /// The hash that was recorded.
        expected: String,
        /// The hash of the bytes found.
        actual: String,
    },
    /// `file` was written by a version of `format` this build does not read.
    #[error(
        "{file}: written by {format} version {found}, this build reads versions up to {supported}"
    )]
    UnsupportedVersion {
        /// The file that was read.
        file: String,
        /// The format id.
        format: String,
        /// The version found in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// `file` was written by another format than the one reading it.
    #[error("{file}: written by format {found:?}, read as {expected:?}")]
    WrongFormat {
        /// The file that was read.
        file: String,
        /// The format that tried to read it.
        expected: String,
        /// The format recorded in the file.
        found: String,
    },
    /// No format with this id is known.
    #[error("unknown format {0:?}")]
    UnknownFormat(String),
    /// The artifact has no file with this name.
    #[error("the artifact has no file named {file:?}")]
    MissingFile {
        /// The name that was asked for.
        file: String,
    },
    /// An object that a manifest or record refers to is not in the store.
    #[error("object {object} is missing from the store ({path})")]
    MissingObject {
        /// The object's content id (hex).
        object: String,
        /// Where it was looked for (a path or URL).
        path: String,
    },
    /// A value could not be decoded from `file`.
    #[error("cannot decode {file} at byte {offset}: {reason}")]
    Decode {
        /// The file (or item) being decoded; empty when a codec does not know it yet.
        file: String,
        /// Byte offset of the encoded value within the file, where known.
        offset: u64,
        /// What the decoder said.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// What the encoder said.
        reason: String,
    },
    /// An index or range past the end of a sequence.
    #[error("index {index} is out of range for {file} of length {len}")]
    OutOfRange {
        /// The sequence.
        file: String,
        /// The index asked for.
        index: u64,
        /// The sequence's length.
        len: u64,
    },
    /// The operation is not supported by this backend or format. Build it with
    /// [`Error::unsupported`].
    #[error("unsupported: {0}")]
    Unsupported(#[source] BoxError),
    /// A user-provided step or iterator reported an error while its value was being written;
    /// the error is kept as this error's [`source`](std::error::Error::source). Build it with
    /// [`Error::source_failed`].
    #[error("the value being written failed: {0}")]
    Source(#[source] BoxError),
    /// The writer of a stream that is being read while it is written (or was left incomplete)
    /// failed or died before finishing it: the items past `items` will never come.
    #[error(
        "the writer of {file} failed after {items} items, so the stream is incomplete: {reason}"
    )]
    WriterDied {
        /// The artifact (or file) being written.
        file: String,
        /// How many items it holds for good.
        items: u64,
        /// What the writer (or its record) said when it stopped.
        reason: String,
    },
    /// The storage behind the artifact (the engine's workspace, a remote store) failed in a way
    /// that is not an I/O error on a file; the backend's own error is kept (downcast it to the
    /// backend's error type, e.g. `milonga::Error`). Build it with [`Error::backend`].
    #[error(transparent)]
    Backend(BoxError),
    /// Remote object storage refused or failed a request about `url` (an `s3://` URL): bad
    /// credentials, a missing bucket, a server that stayed unreachable through every retry.
    #[error("{url}: {reason}")]
    Remote {
        /// The remote object or location (`s3://bucket/prefix/key`).
        url: String,
        /// What went wrong, and what to check.
        reason: String,
    },
}

impl Error {
    /// An I/O error on `path`. If `source` wraps an SDK error (as readers that verify while
    /// reading produce), that error is returned unchanged.
    pub fn io(path: impl fmt::Display, source: io::Error) -> Self {
        let source = if source.get_ref().is_some_and(|e| e.is::<Error>()) {
            // Unwrap our own error carried through an io::Error.
            let kind = source.kind();
            match source.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(error)) => return *error,
                Some(Err(other)) => io::Error::new(kind, other),
                None => io::Error::from(kind),
            }
        } else {
            source
        };
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    /// An [`Error::Unsupported`]: `what` is a message (`String`, `&str`) or an error.
    pub fn unsupported(what: impl Into<BoxError>) -> Self {
        Error::Unsupported(what.into())
    }

    /// An [`Error::Source`]: the value being written (a step, an iterator of items) failed with
    /// `source`, a message or an error, which stays this error's source.
    pub fn source_failed(source: impl Into<BoxError>) -> Self {
        Error::Source(source.into())
    }

    /// An [`Error::WriterDied`]: the writer of `file` stopped after `items` items, saying
    /// `reason`.
    pub fn writer_died(file: impl fmt::Display, items: u64, reason: impl fmt::Display) -> Self {
        Error::WriterDied {
            file: file.to_string(),
            items,
            reason: reason.to_string(),
        }
    }

    /// An [`Error::Backend`]: the storage behind an artifact failed with `source`. An SDK error
    /// given here (boxed) is returned unchanged, so that wrapping never nests.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        match source.into().downcast::<Error>() {
            Ok(e) => *e,
            Err(other) => Error::Backend(other),
        }
    }

    /// A corruption report.
    pub fn corrupt(file: impl fmt::Display, offset: u64, reason: impl fmt::Display) -> Self {
        Error::Corrupt {
            file: file.to_string(),
            offset,
            reason: reason.to_string(),
        }
    }

    /// A decoding failure without a file name yet (codecs produce these; formats add the name
    /// with [`Error::in_file`]).
    pub fn decode(reason: impl fmt::Display) -> Self {
        Error::Decode {
            file: String::new(),
            offset: 0,
            reason: reason.to_string(),
        }
    }

    /// Fills in the file name (and offset) of a [`Error::Decode`] that has none yet; other
    /// errors are returned unchanged.
    #[must_use]
    pub fn in_file(self, file: impl fmt::Display, offset: u64) -> Self {
        match self {
            Error::Decode {
                file: f,
                offset: o,
                reason,
            } if f.is_empty() => Error::Decode {
                file: file.to_string(),
                offset: o + offset,
                reason,
            },
            other => other,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            Error::MissingFile { .. } | Error::MissingObject { .. } => io::ErrorKind::NotFound,
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
            Error::Remote { .. } => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
