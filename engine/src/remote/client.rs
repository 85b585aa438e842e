//! The S3 client: a blocking handle over `object_store`'s asynchronous Amazon S3 client, run
//! on a small tokio runtime the handle owns.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use milonga_sdk::{Error, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, HeaderMap, HeaderValue, ObjectMeta,
    ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, PutResult, RetryConfig,
    UpdateVersion,
};

/// How long a failing request is retried before its error is returned: long enough to ride out
/// a server restart of several seconds (the waits between attempts are drawn at random between
/// 100 ms and three times the previous one, at most 2 s). Set per URL with the `retry_timeout`
/// option (seconds).
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a failing request is retried, at most (URL option `max_retries`): enough that
/// the retry timeout, not the count, ends the retries.
pub const DEFAULT_MAX_RETRIES: usize = 100;

/// Objects larger than this many bytes are uploaded in parts (a multipart upload): a failed
/// part is sent again alone, and objects beyond the 5 GiB of one PUT request can be stored.
/// Set per URL with the `multipart_threshold` option (bytes).
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
/// The size of the parts of a multipart upload, in bytes (URL option `part_size`); raised for
/// objects that would otherwise need more than 10,000 parts.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// The smallest part size S3 accepts (every part but the last): 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// The most bytes one PUT request may carry on Amazon S3 (5 GiB): the largest
/// `multipart_threshold`.
pub const MAX_SINGLE_PUT: u64 = 5 << 30;
/// The largest object S3 stores (5 TiB).
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// The most parts of one multipart upload on S3.
const MAX_PARTS: u64 = 10_000;
/// Parts of one upload sent at the same time.
const PARTS_IN_FLIGHT: usize = 4;
/// The folder (under the prefix) of the claims that serialize the completions of multipart
/// uploads of one key: `<COMPLETION_CLAIMS>/<key>` exists while an upload of `<key>` is being
/// completed (see `docs/FORMAT.md`, "Remote objects").
pub const COMPLETION_CLAIMS: &str = "completing";
/// A completion claim older than this is a dead holder's: the longest a completion can last is
/// the client's request timeout (300 s) with its retries (60 s by default).
const CLAIM_STALE: Duration = Duration::from_secs(6 * 60);

/// The version of a stored object: what a conditional update must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Version {
    /// The object's entity tag.
    pub e_tag: Option<String>,
    /// The object's version id, on buckets that keep versions.
    pub version: Option<String>,
}

impl From<PutResult> for Version {
    fn from(r: PutResult) -> Self {
        Version {
            e_tag: r.e_tag,
            version: r.version,
        }
    }
}

/// What is known about a stored object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key, relative to the remote's prefix.
    pub key: String,
    /// Its length in bytes.
    pub size: u64,
    /// Its version, for conditional updates.
    pub version: Version,
    /// When it was last written, in milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
}

/// The outcome of [`Remote::put_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call created the object.
    Created(Version),
    /// An object already existed under the key: nothing was written.
    AlreadyExists,
}

/// The stage of a multipart upload that failed.
enum Step {
    /// Starting the upload or sending its parts.
    Parts(object_store::Error),
    /// Completing it.
    Complete(object_store::Error),
}

impl From<object_store::Error> for Step {
    fn from(e: object_store::Error) -> Self {
        Step::Parts(e)
    }
}

/// The outcome of [`Remote::put_if_match`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// The object had the expected version and now holds the new content.
    Updated(Version),
    /// The object changed (or vanished) since the expected version was read: nothing was
    /// written.
    Conflict,
}

/// A handle on an `s3://bucket/prefix` location. Cloning it is cheap; clones share one HTTP
/// client and one runtime.
///
/// Its methods block the calling thread; they must not be called from inside an asynchronous
/// task of a single-threaded tokio runtime (they may be from any other thread, including a
/// thread of another multi-threaded runtime).
#[derive(Clone)]
pub struct Remote {
    inner: Arc<Inner>,
}

struct Inner {
    /// `s3://bucket` or `s3://bucket/prefix`, without options or a trailing slash.
    url: String,
    bucket: String,
    /// The key prefix, without slashes at either end ("" for the bucket's root).
    prefix: String,
    endpoint: String,
    store: Arc<AmazonS3>,
    /// The same client configuration with `If-None-Match: *` on every request: used only to
    /// complete multipart uploads, so that a completion never replaces an existing object
    /// (`object_store` completes its multipart uploads unconditionally).
    create_store: Arc<AmazonS3>,
    /// Objects larger than this are uploaded in parts.
    multipart_threshold: u64,
    /// The size of those parts.
    part_size: u64,
    runtime: Arc<Runtime>,
    /// Whether a listing succeeded: "not found" then means a missing object, not a missing
    /// bucket (shared by the handles of one client).
    checked: Arc<AtomicBool>,
}

/// The client's runtime: two worker threads that drive its requests.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            // Never wait for the runtime's threads (dropping a runtime blocks, and panics when
            // done from inside another runtime).
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.inner.url)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

/// A parsed URL: bucket, prefix and options.
type Parsed = (String, String, Vec<(String, String)>);

/// Splits `s3://bucket/prefix?k=v&...` into bucket, prefix and options.
fn parse_url(url: &str) -> Result<Parsed> {
    let bad = |reason: &str| Error::Remote {
        url: url.split('?').next().unwrap_or(url).to_owned(),
        reason: format!("not a valid S3 URL: {reason} (expected s3://bucket/prefix)"),
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("it does not start with s3://"))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let (bucket, prefix) = match path.split_once('/') {
        Some((b, p)) => (b, p.trim_matches('/')),
        None => (path, ""),
    };
    if bucket.is_empty() {
        return Err(bad("no bucket name"));
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(bad(
            "a bucket name has only lowercase letters, digits, '-' and '.'",
        ));
    }
    if prefix.split('/').any(|part| part == "." || part == "..") {
        return Err(bad("the prefix has a '.' or '..' segment"));
    }
    if prefix.contains("//") {
        return Err(bad("the prefix has an empty segment ('//')"));
    }
    let mut options = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(&format!("option {pair:?} has no '=value'")))?;
        options.push((k.to_owned(), v.to_owned()));
    }
    Ok((bucket.to_owned(), prefix.to_owned(), options))
}

impl Remote {
    /// Opens the location `url` (`s3://bucket/prefix`) and checks that it can be listed, so that
    /// bad credentials or a missing bucket are reported here, naming the URL.
    ///
    /// The endpoint, region and credentials come from the usual `AWS_*` environment variables
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP`, ...), overridden by options in the URL's query
    /// (`s3://bucket/prefix?endpoint=http://127.0.0.1:8333&allow_http=true`): any key
    /// `object_store`'s `AmazonS3ConfigKey` or `ClientConfigKey` accepts, plus `retry_timeout`
    /// (seconds, default 60), `max_retries` (default 100), `multipart_threshold` (bytes: larger
    /// objects are uploaded in parts; default [`DEFAULT_MULTIPART_THRESHOLD`], at most
    /// [`MAX_SINGLE_PUT`]) and `part_size` (bytes, default [`DEFAULT_PART_SIZE`], at least
    /// [`MIN_PART_SIZE`]).
    ///
    /// # Errors
    /// [`Error::Remote`] naming the URL: a malformed URL or option, bad credentials, a missing
    /// bucket, an unreachable endpoint (after retries).
    pub fn from_url(url: &str) -> Result<Remote> {
        let remote = Remote::from_url_unchecked(url)?;
        remote.check()?;
        Ok(remote)
    }

    /// As [`from_url`](Remote::from_url), without the listing that checks access.
    ///
    /// # Errors
    /// [`Error::Remote`] for a malformed URL or option.
    pub fn from_url_unchecked(url: &str) -> Result<Remote> {
        let (bucket, prefix, options) = parse_url(url)?;
        let clean = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let bad_option = |reason: String| Error::Remote {
            url: clean.clone(),
            reason,
        };
        // Defaults first, then the environment (as `AmazonS3Builder::from_env` reads it), then
        // the URL's options.
        let mut config: Vec<(AmazonS3ConfigKey, String)> = vec![
            (AmazonS3ConfigKey::Region, "us-east-1".to_owned()),
            // Payloads are content-addressed and verified on every read, and TLS protects them
            // in transit: hashing each upload with SHA-256 for the signature is not needed.
            (AmazonS3ConfigKey::UnsignedPayload, "true".to_owned()),
            (
                AmazonS3ConfigKey::Client(object_store::ClientConfigKey::Timeout),
                "300s".to_owned(),
            ),
            (
                AmazonS3ConfigKey::Client(object_store::ClientConfigKey::ConnectTimeout),
                "5s".to_owned(),
            ),
        ];
        for (key, value) in std::env::vars() {
            if key.starts_with("AWS_") {
                if let Ok(k) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    config.push((k, value));
                }
            }
        }
        let mut retry_timeout = DEFAULT_RETRY_TIMEOUT;
        let mut max_retries = DEFAULT_MAX_RETRIES;
        let mut multipart_threshold = DEFAULT_MULTIPART_THRESHOLD;
        let mut part_size = DEFAULT_PART_SIZE;
        let bytes_option = |k: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad_option(format!("option {k}={v:?} is not a number of bytes")))
        };
        for (k, v) in &options {
            match k.as_str() {
                "multipart_threshold" => {
                    multipart_threshold = bytes_option(k, v)?;
                    if multipart_threshold > MAX_SINGLE_PUT {
                        return Err(bad_option(format!(
                            "option multipart_threshold={v} is over {MAX_SINGLE_PUT} bytes, the \
                             most one S3 PUT request may carry"
                        )));
                    }
                }
                "part_size" => {
                    part_size = bytes_option(k, v)?;
                    if !(MIN_PART_SIZE..=MAX_SINGLE_PUT).contains(&part_size) {
                        return Err(bad_option(format!(
                            "option part_size={v} is outside {MIN_PART_SIZE}..={MAX_SINGLE_PUT} \
                             bytes, the part sizes S3 accepts"
                        )));
                    }
                }
                "retry_timeout" => {
                    let secs: f64 = v.parse().map_err(|_| {
                        bad_option(format!(
                            "option retry_timeout={v:?} is not a number of seconds"
                        ))
                    })?;
                    retry_timeout = Duration::try_from_secs_f64(secs).map_err(|_| {
                        bad_option(format!("option retry_timeout={v:?} is out of range"))
                    })?;
                }
                "max_retries" => {
                    max_retries = v.parse().map_err(|_| {
                        bad_option(format!("option max_retries={v:?} is not a whole number"))
                    })?;
                }
                "bucket" | "aws_bucket" | "bucket_name" | "aws_bucket_name" => {
                    return Err(bad_option(
                        "the bucket is named by the URL, not by an option".to_owned(),
                    ))
                }
                _ => {
                    let key = k
                        .parse::<AmazonS3ConfigKey>()
                        .map_err(|_| bad_option(format!("unknown option {k:?}")))?;
                    config.push((key, v.clone()));
                }
            }
        }
        // Signatures and TLS through ring (the `s3` feature does not build aws-lc-rs). Installing
        // fails harmlessly when the process already has a default provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |headers: HeaderMap| {
            let mut builder = AmazonS3Builder::new()
                .with_client_options(ClientOptions::new().with_default_headers(headers));
            for (k, v) in &config {
                builder = builder.with_config(*k, v.clone());
            }
            builder.with_bucket_name(&bucket).with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 3.0,
                },
                max_retries,
                retry_timeout,
            })
        };
        let endpoint = build(HeaderMap::new())
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .unwrap_or_else(|| "AWS".to_owned());
        let store = build(HeaderMap::new())
            .build()
            .map_err(|e| bad_option(format!("cannot configure the S3 client: {e}")))?;
        let mut if_none_match = HeaderMap::new();
        if_none_match.insert("if-none-match", HeaderValue::from_static("*"));
        let create_store = build(if_none_match)
            .build()
            .map_err(|e| bad_option(format!("cannot configure the S3 client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("milonga-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io(format!("the S3 client runtime for {clean}"), e))?;
        Ok(Remote {
            inner: Arc::new(Inner {
                url: clean,
                bucket,
                prefix,
                endpoint,
                store: Arc::new(store),
                create_store: Arc::new(create_store),
                multipart_threshold,
                part_size,
                runtime: Arc::new(Runtime(Some(runtime))),
                checked: Arc::new(AtomicBool::new(false)),
            }),
        })
    }

    /// The location, `s3://bucket/prefix` (without options: they may hold secrets).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The key prefix under the bucket ("" for the bucket's root).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The URL of `key` (relative to the prefix), for messages.
    pub fn url_of(&self, key: &str) -> String {
        if key.is_empty() {
            self.inner.url.clone()
        } else {
            format!("{}/{}", self.inner.url, key.trim_start_matches('/'))
        }
    }

    /// A handle on the location `sub` under this one (`s3://bucket/prefix/sub`), sharing its
    /// client and runtime.
    pub fn join(&self, sub: &str) -> Remote {
        let sub = sub.trim_matches('/');
        if sub.is_empty() {
            return self.clone();
        }
        let prefix = if self.inner.prefix.is_empty() {
            sub.to_owned()
        } else {
            format!("{}/{sub}", self.inner.prefix)
        };
        Remote {
            inner: Arc::new(Inner {
                url: format!("s3://{}/{prefix}", self.inner.bucket),
                bucket: self.inner.bucket.clone(),
                prefix,
                endpoint: self.inner.endpoint.clone(),
                store: Arc::clone(&self.inner.store),
                create_store: Arc::clone(&self.inner.create_store),
                multipart_threshold: self.inner.multipart_threshold,
                part_size: self.inner.part_size,
                runtime: Arc::clone(&self.inner.runtime),
                checked: Arc::clone(&self.inner.checked),
            }),
        }
    }

    fn path(&self, key: &str) -> StorePath {
        let key = key.trim_start_matches('/');
        if self.inner.prefix.is_empty() {
            StorePath::from(key)
        } else {
            StorePath::from(format!("{}/{key}", self.inner.prefix))
        }
    }

    /// Runs `fut` on the client's runtime and waits for it.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let handle = self.inner.handle()?;
        if tokio::runtime::Handle::try_current().is_err() {
            // Not inside any runtime: drive the future from this thread.
            return Ok(handle.block_on(fut));
        }
        // Inside another runtime (where block_on would panic): run it on our workers and wait.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| Error::Remote {
            url: self.inner.url.clone(),
            reason: "the S3 client's runtime stopped".to_owned(),
        })
    }

    /// Turns an `object_store` error about `key` into an [`Error::Remote`] naming its URL and
    /// saying what to check.
    pub(crate) fn error(&self, key: &str, e: object_store::Error) -> Error {
        let url = self.url_of(key);
        let detail = chain(&e);
        let bucket = &self.inner.bucket;
        let endpoint = &self.inner.endpoint;
        let reason = match &e {
            _ if detail.contains("NoSuchBucket") => format!(
                "bucket {bucket:?} does not exist at {endpoint} (create it first) [{detail}]"
            ),
            _ if detail.contains("InvalidAccessKeyId")
                || detail.contains("SignatureDoesNotMatch")
                || matches!(e, object_store::Error::Unauthenticated { .. }) =>
            {
                format!(
                    "bad credentials: {endpoint} refused the access key or its secret (check \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) [{detail}]"
                )
            }
            object_store::Error::PermissionDenied { .. } => {
                format!("access denied by {endpoint} (HTTP 403) [{detail}]")
            }
            object_store::Error::NotFound { .. } => format!("not found [{detail}]"),
            _ if detail.contains("retries") || detail.contains("error sending request") => {
                format!("{endpoint} failed or did not answer, through every retry [{detail}]")
            }
            _ => detail,
        };
        Error::Remote { url, reason }
    }

    /// Checks that the location can be listed (credentials accepted, bucket present).
    ///
    /// # Errors
    /// [`Error::Remote`] naming the URL and the problem.
    pub fn check(&self) -> Result<()> {
        let store = Arc::clone(&self.inner.store);
        let prefix = self.path("");
        let r = self.run(async move {
            let p = if prefix.as_ref().is_empty() {
                None
            } else {
                Some(prefix)
            };
            store.list_with_delimiter(p.as_ref()).await.map(|_| ())
        })?;
        r.map_err(|e| self.error("", e))?;
        self.inner.checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The whole object `key`, with what is known about it; `None` if there is none.
    ///
    /// # Errors
    /// [`Error::Remote`].
    pub fn get(&self, key: &str) -> Result<Option<(Bytes, ObjectInfo)>> {
        let store = Arc::clone(&self.inner.store);
        let path = self.path(key);
        let r = self.run(async move {
            let got = store.get(&path).await?;
            let meta = got.meta.clone();
            let bytes = got.bytes().await?;
            Ok::<_, object_store::Error>((bytes, meta))
        })?;
        match r {
            Ok((bytes, meta)) => Ok(Some((bytes, self.info(meta)))),
            Err(object_store::Error::NotFound { .. }) => self.missing(key).map(|()| None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// Streams object `key` into `out` (at most a few chunks in memory at a time) and returns
    /// what is known about it; `None` (with nothing written) if there is none.
    ///
    /// # Errors
    /// [`Error::Remote`], or an I/O error from `out` (named `what`).
    pub fn get_to(
        &self,
        key: &str,
        out: &mut dyn Write,
        what: &dyn fmt::Display,
    ) -> Result<Option<ObjectInfo>> {
        let store = Arc::clone(&self.inner.store);
        let path = self.path(key);
        let (tx, rx) = std::sync::mpsc::sync_channel::<object_store::Result<Bytes>>(8);
        let head = self.run(async move {
            let got = store.get(&path).await?;
            let meta = got.meta.clone();
            Ok::<_, object_store::Error>((meta, got.into_stream()))
        })?;
        let (meta, mut stream) = match head {
            Ok(x) => x,
            Err(object_store::Error::NotFound { .. }) => return self.missing(key).map(|()| None),
            Err(e) => return Err(self.error(key, e)),
        };
        // The body arrives on the runtime and is written here, off its threads.
        self.inner.handle()?.spawn(async move {
            while let Some(chunk) = stream.next().await {
                let stop = chunk.is_err();
                if tx.send(chunk).is_err() || stop {
                    break;
                }
            }
        });
        let mut n = 0u64;
        for chunk in rx {
            let chunk = chunk.map_err(|e| self.error(key, e))?;
            out.write_all(&chunk)
                .map_err(|e| Error::io(what.to_string(), e))?;
            n += chunk.len() as u64;
        }
        if n != meta.size {
            return Err(Error::Remote {
                url: self.url_of(key),
                reason: format!(
                    "the download ended after {n} of {} bytes (connection closed early)",
                    meta.size
                ),
            });
        }
        Ok(Some(self.info(meta)))
    }

    /// Bytes `range` of object `key`.
    ///
    /// # Errors
    /// [`Error::Remote`]; [`Error::MissingObject`] if there is no such object; an
    /// [`Error::OutOfRange`] if the object is shorter than `range.end`.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let store = Arc::clone(&self.inner.store);
        let path = self.path(key);
        let want = range.clone();
        let r = self.run(async move {
            let opts = GetOptions::new().with_range(Some(GetRange::Bounded(want)));
            let got = store.get_opts(&path, opts).await?;
            let size = got.meta.size;
            Ok::<_, object_store::Error>((got.bytes().await?, size))
        })?;
        match r {
            Ok((bytes, _)) if bytes.len() as u64 == range.end - range.start => Ok(bytes),
            Ok((bytes, size)) => Err(Error::OutOfRange {
                file: format!(
                    "{} (byte range {}..{}, got {} bytes)",
                    self.url_of(key),
                    range.start,
                    range.end,
                    bytes.len()
                ),
                index: range.end,
                len: size,
            }),
            Err(object_store::Error::NotFound { .. }) => {
                self.missing(key)?;
                Err(Error::MissingObject {
                    object: key.to_owned(),
                    path: self.url_of(key),
                })
            }
            // A range past the end: 416 Range Not Satisfiable, or object_store's own check.
            Err(e) if chain(&e).contains("416") || chain(&e).contains("InvalidRange") => {
                Err(Error::OutOfRange {
                    file: format!(
                        "{} (byte range {}..{})",
                        self.url_of(key),
                        range.start,
                        range.end
                    ),
                    index: range.end,
                    len: 0,
                })
            }
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// What is known about object `key`; `None` if there is none.
    ///
    /// # Errors
    /// [`Error::Remote`].
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let store = Arc::clone(&self.inner.store);
        let path = self.path(key);
        match self.run(async move { store.head(&path).await })? {
            Ok(meta) => Ok(Some(self.info(meta))),
            Err(object_store::Error::NotFound { .. }) => self.missing(key).map(|()| None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// A "not found" answer is a missing object only if the bucket exists: a missing bucket is
    /// an error (a HEAD request cannot say which it was). Checked once per client.
    fn missing(&self, key: &str) -> Result<()> {
        if self.inner.checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.check().map_err(|e| match e {
            Error::Remote { reason, .. } => Error::Remote {
                url: self.url_of(key),
                reason,
            },
            other => other,
        })
    }

    fn put_with(
        &self,
        key: &str,
        payload: PutPayload,
        mode: PutMode,
    ) -> object_store::Result<Version> {
        let store = Arc::clone(&self.inner.store);
        let path = self.path(key);
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self.run(async move { store.put_opts(&path, payload, opts).await }) {
            Ok(r) => r.map(Version::from),
            Err(e) => Err(object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            }),
        }
    }

    /// Writes `data` to `key`, replacing any object there.
    ///
    /// # Errors
    /// [`Error::Remote`].
    pub fn put(&self, key: &str, data: impl Into<Bytes>) -> Result<Version> {
        self.put_with(key, PutPayload::from_bytes(data.into()), PutMode::Overwrite)
            .map_err(|e| self.error(key, e))
    }

    /// Creates object `key` holding `data` only if no object exists under `key` (a conditional
    /// write, `If-None-Match: *`): of concurrent creators, exactly one gets
    /// [`Created::Created`].
    ///
    /// # Errors
    /// [`Error::Remote`].
    pub fn put_if_absent(&self, key: &str, data: impl Into<Bytes>) -> Result<Created> {
        self.put_payload_if_absent(key, PutPayload::from_bytes(data.into()))
    }

    /// As [`put_if_absent`](Remote::put_if_absent), with a payload of several buffers.
    pub(crate) fn put_payload_if_absent(&self, key: &str, payload: PutPayload) -> Result<Created> {
        match self.put_with(key, payload, PutMode::Create) {
            Ok(v) => Ok(Created::Created(v)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// Objects larger than this many bytes are uploaded in parts (URL option
    /// `multipart_threshold`).
    pub fn multipart_threshold(&self) -> u64 {
        self.inner.multipart_threshold
    }

    /// The part size of the multipart uploads of an object of `len` bytes: the `part_size`
    /// option, raised (to whole MiB) when the object would need more than 10,000 parts.
    pub fn part_size_for(&self, len: u64) -> u64 {
        let least = len.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
        self.inner.part_size.max(least)
    }

    /// Creates object `key` holding `data` only if no object exists under `key`, as
    /// [`put_if_absent`](Remote::put_if_absent), but in parts of
    /// [`part_size_for`](Remote::part_size_for) bytes (a multipart upload, a few parts at a
    /// time, each retried alone on transient failures): for objects beyond the 5 GiB of one PUT.
    /// Only the completion is conditional (`If-None-Match: *` on CompleteMultipartUpload): of
    /// concurrent creators exactly one gets [`Created::Created`]. An upload that fails or finds
    /// the object there is aborted, so that no parts are left behind on the server (a process
    /// killed during an upload leaves its parts until a bucket lifecycle rule removes them).
    ///
    /// A completion retried after its answer was lost finds the object there (or its upload
    /// gone): [`Created::AlreadyExists`], which callers verify.
    ///
    /// `data` is sent as slices of itself (a memory-mapped file stays mapped, never copied).
    ///
    /// # Errors
    /// [`Error::Remote`]; an object larger than [`MAX_OBJECT_SIZE`].
    pub fn put_multipart_if_absent(&self, key: &str, data: impl Into<Bytes>) -> Result<Created> {
        let data: Bytes = data.into();
        let len = data.len() as u64;
        if len > MAX_OBJECT_SIZE {
            return Err(Error::Remote {
                url: self.url_of(key),
                reason: format!(
                    "an object of {len} bytes is larger than the {MAX_OBJECT_SIZE} bytes S3 stores"
                ),
            });
        }
        let part = usize::try_from(self.part_size_for(len)).unwrap_or(usize::MAX);
        let store = Arc::clone(&self.inner.store);
        let create_store = Arc::clone(&self.inner.create_store);
        let path = self.path(key);
        let claim = self.path(&format!(
            "{COMPLETION_CLAIMS}/{}",
            key.trim_start_matches('/')
        ));
        let r = self.run(async move {
            let upload = store.create_multipart(&path).await?;
            let sent = async {
                let parts: Vec<PartId> = futures_util::stream::iter(
                    (0..data.len())
                        .step_by(part.max(1))
                        .enumerate()
                        .map(|(i, start)| {
                            let end = start.saturating_add(part).min(data.len());
                            let payload = PutPayload::from_bytes(data.slice(start..end));
                            let (store, path, upload) =
                                (Arc::clone(&store), path.clone(), upload.clone());
                            async move { store.put_part(&path, &upload, i, payload).await }
                        }),
                )
                .buffered(PARTS_IN_FLIGHT)
                .try_collect()
                .await
                .map_err(Step::Parts)?;
                // One completion at a time per key (see `claim_completion`).
                let Some(claim) = claim_completion(&store, &path, &claim).await? else {
                    return Err(Step::Complete(object_store::Error::AlreadyExists {
                        path: path.to_string(),
                        source: "completed by another upload".into(),
                    }));
                };
                let done = create_store
                    .complete_multipart(&path, &upload, parts)
                    .await
                    .map_err(Step::Complete);
                let _ = store.delete(&claim).await;
                done
            }
            .await;
            if sent.is_err() {
                // Best effort: a failed abort leaves parts that a lifecycle rule removes.
                let _ = store.abort_multipart(&path, &upload).await;
            }
            sent
        })?;
        match r {
            Ok(v) => Ok(Created::Created(v.into())),
            Err(Step::Complete(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotModified { .. }
                // The upload is gone: completed by an earlier attempt of this request whose
                // answer was lost (or aborted by someone else); the caller looks.
                | object_store::Error::NotFound { .. },
            )) => Ok(Created::AlreadyExists),
            Err(Step::Parts(e) | Step::Complete(e)) => Err(self.error(key, e)),
        }
    }

    /// Replaces object `key` with `data` only if it still has version `expected` (a conditional
    /// write, `If-Match`): for read-modify-write updates.
    ///
    /// # Errors
    /// [`Error::Remote`]. An object changed or removed since is [`Updated::Conflict`].
    pub fn put_if_match(
        &self,
        key: &str,
        data: impl Into<Bytes>,
        expected: &Version,
    ) -> Result<Updated> {
        if expected.e_tag.is_none() {
            return Err(Error::Remote {
                url: self.url_of(key),
                reason: "a conditional update needs the object's entity tag".to_owned(),
            });
        }
        let mode = PutMode::Update(UpdateVersion {
            e_tag: expected.e_tag.clone(),
            version: expected.version.clone(),
        });
        match self.put_with(key, PutPayload::from_bytes(data.into()), mode) {
            Ok(v) => Ok(Updated::Updated(v)),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(Updated::Conflict),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// Copies object `from` to `to` on the server (replacing any object at `to`).
    ///
    /// # Errors
    /// [`Error::Remote`]; [`Error::MissingObject`] if there is no object `from`.
    pub fn copy(&self, from: &str, to: &str) -> Result<()> {
        let store = Arc::clone(&self.inner.store);
        let (f, t) = (self.path(from), self.path(to));
        match self.run(async move { store.copy(&f, &t).await })? {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => {
                self.missing(from)?;
                Err(Error::MissingObject {
                    object: from.to_owned(),
                    path: self.url_of(from),
                })
            }
            Err(e) => Err(self.error(from, e)),
        }
    }

    /// Deletes object `key`; deleting a missing object is success.
    ///
    /// # Errors
    /// [`Error::Remote`].
    pub fn delete(&self, key: &str) -> Result<()> {
        let store = Arc::clone(&self.inner.store);
        let path = self.path(key);
        match self.run(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// Every object whose key starts with the folder `dir` (relative to the prefix; "" for
    /// all), fetched a page (1,000 keys) at a time as the iterator is consumed: memory stays
    /// bounded however many there are. The order is the store's (S3: by key).
    pub fn list(&self, dir: &str) -> ListIter {
        let store = Arc::clone(&self.inner.store);
        let dir = dir.trim_matches('/');
        let path = self.path(dir);
        let pages = self.run(async move {
            let p = if path.as_ref().is_empty() {
                None
            } else {
                Some(path)
            };
            store.list(p.as_ref()).ready_chunks(1000).boxed()
        });
        ListIter {
            remote: self.clone(),
            dir: dir.to_owned(),
            pages: pages.ok(),
            buf: VecDeque::new(),
        }
    }

    /// The immediate sub-folders of folder `dir` (relative to the prefix), as names.
    ///
    /// # Errors
    /// [`Error::Remote`].
    pub fn list_folders(&self, dir: &str) -> Result<Vec<String>> {
        let store = Arc::clone(&self.inner.store);
        let dir = dir.trim_matches('/');
        let path = self.path(dir);
        let r = self.run(async move {
            let p = if path.as_ref().is_empty() {
                None
            } else {
                Some(path)
            };
            store.list_with_delimiter(p.as_ref()).await
        })?;
        let listed = r.map_err(|e| self.error(dir, e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    fn info(&self, meta: ObjectMeta) -> ObjectInfo {
        let full = meta.location.as_ref();
        let key = if self.inner.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(self.inner.prefix.as_str())
                .map_or(full, |k| k.trim_start_matches('/'))
        };
        ObjectInfo {
            key: key.to_owned(),
            size: meta.size,
            version: Version {
                e_tag: meta.e_tag,
                version: meta.version,
            },
            last_modified_ms: meta.last_modified.timestamp_millis(),
        }
    }
}

impl Inner {
    fn handle(&self) -> Result<tokio::runtime::Handle> {
        match &self.runtime.0 {
            Some(rt) => Ok(rt.handle().clone()),
            None => Err(Error::Remote {
                url: self.url.clone(),
                reason: "the S3 client's runtime stopped".to_owned(),
            }),
        }
    }
}

/// Takes the completion claim `claim` of the multipart upload of `path` (created only if absent:
/// single conditional PUTs hold under concurrency where conditional completions may not, as on
/// SeaweedFS 4.48). While another upload holds it, waits, polling: `None` once the object
/// exists (the other completion made it); the claim once it is free, or taken over (by a
/// conditional update) when older than [`CLAIM_STALE`].
async fn claim_completion(
    store: &AmazonS3,
    path: &StorePath,
    claim: &StorePath,
) -> std::result::Result<Option<StorePath>, Step> {
    let complete = Step::Complete;
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let mut wait = Duration::from_millis(50);
    loop {
        match store
            .put_opts(
                claim,
                PutPayload::from_static(b"completing"),
                create.clone(),
            )
            .await
        {
            Ok(_) => return Ok(Some(claim.clone())),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {}
            Err(e) => return Err(complete(e)),
        }
        match store.head(path).await {
            Ok(_) => return Ok(None),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(complete(e)),
        }
        let held = match store.head(claim).await {
            Ok(meta) => meta,
            // Released meanwhile: claim it again at once.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(complete(e)),
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let age_ms = now_ms.saturating_sub(held.last_modified.timestamp_millis());
        if u128::try_from(age_ms).unwrap_or(0) > CLAIM_STALE.as_millis() {
            let take = PutOptions {
                mode: PutMode::Update(UpdateVersion {
                    e_tag: held.e_tag,
                    version: held.version,
                }),
                ..PutOptions::default()
            };
            match store
                .put_opts(claim, PutPayload::from_static(b"completing"), take)
                .await
            {
                Ok(_) => return Ok(Some(claim.clone())),
                Err(
                    object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
                ) => continue,
                Err(e) => return Err(complete(e)),
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// An object_store error with its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s.replace('\n', " ")
}

/// The objects under a folder, a page at a time (see [`Remote::list`]).
pub struct ListIter {
    remote: Remote,
    dir: String,
    pages: Option<BoxStream<'static, Vec<object_store::Result<ObjectMeta>>>>,
    buf: VecDeque<Result<ObjectInfo>>,
}

impl fmt::Debug for ListIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListIter")
            .field("url", &self.remote.url_of(&self.dir))
            .finish_non_exhaustive()
    }
}

impl Iterator for ListIter {
    type Item = Result<ObjectInfo>;

    fn next(&mut self) -> Option<Result<ObjectInfo>> {
        if self.buf.is_empty() {
            let mut pages = self.pages.take()?;
            let (pages, page) = match self.remote.run(async move {
                let page = pages.next().await;
                (pages, page)
            }) {
                Ok(x) => x,
                Err(e) => return Some(Err(e)),
            };
            let page = page?;
            self.pages = Some(pages);
            for item in page {
                let item = match item {
                    Ok(meta) => Ok(self.remote.info(meta)),
                    Err(e) => {
                        // A failed page ends the listing.
                        self.pages = None;
                        Err(self.remote.error(&self.dir, e))
                    }
                };
                self.buf.push_back(item);
            }
        }
        self.buf.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls_parse_into_bucket_prefix_and_options() {
        let (b, p, o) = parse_url("s3://bucket/a/b/?region=eu-west-1&allow_http=true").unwrap();
        assert_eq!((b.as_str(), p.as_str()), ("bucket", "a/b"));
        assert_eq!(o.len(), 2);
        let (b, p, o) = parse_url("s3://bucket").unwrap();
        assert_eq!((b.as_str(), p.as_str(), o.len()), ("bucket", "", 0));
        for bad in [
            "http://x/y",
            "s3://",
            "s3:///p",
            "s3://Bucket/p",
            "s3://b/../p",
            "s3://b/a//c",
            "s3://b/p?novalue",
        ] {
            let e = parse_url(bad).unwrap_err().to_string();
            assert!(e.contains("not a valid S3 URL"), "{bad}: {e}");
        }
    }
}
