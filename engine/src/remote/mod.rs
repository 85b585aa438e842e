//! Remote storage on S3-compatible object stores (feature `s3`).
//!
//! [`Remote`] is a handle on an `s3://bucket/prefix` location, built from the URL and the usual
//! `AWS_*` environment variables, with blocking helpers over the `object_store` crate: get,
//! ranged get, head, create-if-absent, conditional update, delete and paged listing, every key
//! under the URL's prefix. Transient failures (connection errors, 5xx, a server restarting) are
//! retried with backoff; permanent ones (bad credentials, a missing bucket, access denied) are
//! immediate [`Error::Remote`](milonga_sdk::Error::Remote) errors naming the URL.
//!
//! [`RemoteStore`] is the [`ObjectStore`](crate::store::ObjectStore) on top of it: objects and
//! their outboards under `<prefix>/objects/v1/blake3/`, verified range reads that fetch only the
//! 16 KiB groups they need, and a local read-through cache directory with a size cap (see
//! `docs/FORMAT.md`, "Remote objects").

mod cache;
mod client;
pub(crate) mod lease;
pub(crate) mod meta;
mod store;

pub use cache::{ReadCache, DEFAULT_CACHE_BYTES};
pub use client::{
    Created, ListIter, ObjectInfo, Remote, Updated, Version, COMPLETION_CLAIMS,
    DEFAULT_MAX_RETRIES, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, DEFAULT_RETRY_TIMEOUT,
    MAX_OBJECT_SIZE, MAX_SINGLE_PUT, MIN_PART_SIZE,
};
pub use lease::{DEFAULT_LEASE_DURATION, LEASE_SECONDS_ENV};
pub use store::{ReadRequests, RemoteStore, REMOTE_QUARANTINE_DIR};
