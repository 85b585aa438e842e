//! Opening a remote workspace (`s3://bucket/prefix`, feature `s3`): objects through the
//! remote object store, metadata and leases as objects under the prefix (the remote side of
//! the backend seam), and a local directory for per-machine state.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The environment variable naming the directory of per-machine state of remote workspaces
/// (work folders of running steps, materialized files, the read-through cache).
pub const CACHE_DIR_ENV: &str = "MILONGA_CACHE_DIR";

/// The local directory of remote workspace `url`: under [`CACHE_DIR_ENV`], else
/// `$XDG_CACHE_HOME/milonga`, else `~/.cache/milonga`, else the temporary directory; one folder
/// per workspace URL (a readable part of the URL and a hash of all of it).
pub(crate) fn local_dir_for(url: &str) -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = env(CACHE_DIR_ENV)
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("milonga")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("milonga")))
        .unwrap_or_else(|| std::env::temp_dir().join("milonga-cache"));
    let readable: String = url
        .trim_start_matches("s3://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let hash = blake3::hash(url.as_bytes()).to_hex();
    base.join(format!("{readable}-{}", &hash[..16]))
}

/// Splits `s3://bucket/prefix` into bucket and prefix (no leading or trailing `/`).
pub(crate) fn split_s3_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::UnknownScheme { url: url.into() })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::UnknownScheme { url: url.into() });
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_s3_url_splits_into_bucket_and_prefix() {
        assert_eq!(
            split_s3_url("s3://b/x/y/").unwrap(),
            ("b".to_owned(), "x/y".to_owned())
        );
        assert_eq!(
            split_s3_url("s3://b").unwrap(),
            ("b".to_owned(), String::new())
        );
        assert!(split_s3_url("s3:///x").is_err());
    }

    #[test]
    fn each_workspace_url_has_its_own_local_dir() {
        let a = local_dir_for("s3://b/one");
        let b = local_dir_for("s3://b/two");
        assert_ne!(a, b);
        assert_eq!(a, local_dir_for("s3://b/one"));
        assert!(a
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("b_one-"));
    }
}

#[cfg(feature = "s3")]
pub(crate) use s3::open_s3;

#[cfg(feature = "s3")]
mod s3 {
    use std::io::{Cursor, Write};
    use std::ops::Range;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, OnceLock};

    use milonga_sdk::{ContentId, ReadSeek, SharedBytes};

    use super::{local_dir_for, split_s3_url};
    use crate::error::{Error, Result};
    use crate::remote::lease::{lease_duration_from_env, RemoteLeases, RemoteLeasesHandle};
    use crate::remote::meta::{Kv, ObjectStoreKv, RemoteMeta};
    use crate::store::{ObjectStore, ObjectWriter};
    use crate::workspace::Workspace;

    /// The small runtime that drives `object_store` from synchronous code.
    fn runtime() -> Result<tokio::runtime::Handle> {
        static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("milonga-s3")
                .enable_time()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map(|rt| rt.handle().clone())
        .map_err(|e| Error::io("s3 runtime", std::io::Error::other(e.clone())))
    }

    /// Opens the remote workspace at `url` (`s3://bucket/prefix`).
    pub(crate) fn open_s3(url: &str) -> Result<Workspace> {
        let (bucket, prefix) = split_s3_url(url)?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&bucket)
                .build()
                .map_err(|e| Error::io(url, std::io::Error::other(e)))?,
        );
        let url = url.trim_end_matches('/').to_owned();
        let kv: Arc<dyn Kv> = Arc::new(ObjectStoreKv::new(
            Arc::clone(&store),
            runtime()?,
            &prefix,
            &url,
        ));
        let leases = RemoteLeases::new(Arc::clone(&kv), lease_duration_from_env());
        let meta = RemoteMeta::new(Arc::clone(&kv), Arc::clone(&leases));
        let objects = Arc::new(KvObjects {
            kv: Arc::clone(&kv),
            url: url.clone(),
        });
        let ages: crate::workspace::ObjectAges = Box::new(move || {
            Ok(kv
                .list("objects/v1/blake3/")?
                .iter()
                .filter_map(|e| {
                    let id = ContentId::from_hex(e.key.rsplit('/').next()?)?;
                    Some((id, (e.modified_ms, e.size)))
                })
                .collect())
        });
        Workspace::with_backend(
            url.clone(),
            objects,
            Box::new(meta),
            Box::new(RemoteLeasesHandle(leases)),
            local_dir_for(&url),
            Some(ages),
        )
    }

    /// Objects as whole keys `objects/v1/blake3/HEX`, verified on every read.
    struct KvObjects {
        kv: Arc<dyn Kv>,
        url: String,
    }

    fn key(id: &ContentId) -> String {
        format!("objects/v1/blake3/{}", id.to_hex())
    }

    impl KvObjects {
        fn get(&self, id: &ContentId, len: Option<u64>) -> milonga_sdk::Result<Arc<Vec<u8>>> {
            let o = self
                .kv
                .get(&key(id))
                .map_err(|e| milonga_sdk::Error::Io {
                    path: self.describe(id),
                    source: std::io::Error::other(e.to_string()),
                })?
                .ok_or_else(|| milonga_sdk::Error::MissingObject {
                    object: id.to_hex(),
                    path: self.describe(id),
                })?;
            if let Some(l) = len {
                if o.bytes.len() as u64 != l {
                    return Err(milonga_sdk::Error::corrupt(
                        self.describe(id),
                        0,
                        format!("{} bytes, {l} recorded", o.bytes.len()),
                    ));
                }
            }
            let actual = ContentId(*blake3::hash(&o.bytes).as_bytes());
            if actual != *id {
                return Err(milonga_sdk::Error::ChecksumMismatch {
                    file: self.describe(id),
                    expected: id.to_hex(),
                    actual: actual.to_hex(),
                });
            }
            Ok(Arc::new(o.bytes))
        }

        fn put(&self, bytes: &[u8]) -> milonga_sdk::Result<(ContentId, u64)> {
            let id = ContentId(*blake3::hash(bytes).as_bytes());
            if self
                .kv
                .create(&key(&id), bytes)
                .map_err(|e| milonga_sdk::Error::Io {
                    path: self.describe(&id),
                    source: std::io::Error::other(e.to_string()),
                })?
                .is_none()
            {
                // Present: success once it verifies; a damaged copy is replaced.
                if self.get(&id, Some(bytes.len() as u64)).is_err() {
                    self.kv
                        .put(&key(&id), bytes)
                        .map_err(|e| milonga_sdk::Error::Io {
                            path: self.describe(&id),
                            source: std::io::Error::other(e.to_string()),
                        })?;
                }
            }
            Ok((id, bytes.len() as u64))
        }
    }

    struct Shared(Arc<Vec<u8>>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    struct KvWriter {
        objects: Arc<KvObjects>,
        buf: Vec<u8>,
    }

    impl Write for KvWriter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.buf.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl ObjectWriter for KvWriter {
        fn commit(self: Box<Self>) -> milonga_sdk::Result<(ContentId, u64)> {
            self.objects.put(&self.buf)
        }
    }

    impl ObjectStore for KvObjects {
        fn describe(&self, id: &ContentId) -> String {
            format!("{}/{}", self.url, key(id))
        }

        fn writer(&self) -> milonga_sdk::Result<Box<dyn ObjectWriter>> {
            Ok(Box::new(KvWriter {
                objects: Arc::new(KvObjects {
                    kv: Arc::clone(&self.kv),
                    url: self.url.clone(),
                }),
                buf: Vec::new(),
            }))
        }

        fn ingest(&self, path: &Path) -> milonga_sdk::Result<(ContentId, u64)> {
            let bytes =
                std::fs::read(path).map_err(|e| milonga_sdk::Error::io(path.display(), e))?;
            let r = self.put(&bytes)?;
            let _ = std::fs::remove_file(path);
            Ok(r)
        }

        fn contains(&self, id: &ContentId) -> bool {
            self.kv.get(&key(id)).is_ok_and(|o| o.is_some())
        }

        fn open(&self, id: &ContentId, len: Option<u64>) -> milonga_sdk::Result<Box<dyn ReadSeek>> {
            Ok(Box::new(Cursor::new(Shared(self.get(id, len)?))))
        }

        fn bytes(&self, id: &ContentId, len: Option<u64>) -> milonga_sdk::Result<SharedBytes> {
            Ok(Arc::new(Shared(self.get(id, len)?)))
        }

        fn read_range(
            &self,
            id: &ContentId,
            len: u64,
            range: Range<u64>,
        ) -> milonga_sdk::Result<Vec<u8>> {
            let data = self.get(id, Some(len))?;
            usize::try_from(range.start)
                .ok()
                .zip(usize::try_from(range.end).ok())
                .and_then(|(s, e)| data.get(s..e))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| milonga_sdk::Error::OutOfRange {
                    file: self.describe(id),
                    index: range.end,
                    len,
                })
        }

        fn verify_object(&self, id: &ContentId, len: Option<u64>) -> milonga_sdk::Result<u64> {
            Ok(self.get(id, len)?.len() as u64)
        }

        fn quarantine(&self, id: &ContentId) -> milonga_sdk::Result<Option<String>> {
            self.remove(id)?;
            Ok(None)
        }

        fn local_path(&self, _id: &ContentId) -> milonga_sdk::Result<Option<PathBuf>> {
            Ok(None)
        }

        fn list(&self) -> milonga_sdk::Result<Vec<ContentId>> {
            Ok(self
                .kv
                .list("objects/v1/blake3/")
                .map_err(|e| milonga_sdk::Error::Io {
                    path: self.url.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .iter()
                .filter_map(|e| ContentId::from_hex(e.key.rsplit('/').next()?))
                .collect())
        }

        fn remove(&self, id: &ContentId) -> milonga_sdk::Result<()> {
            self.kv
                .delete(&key(id))
                .map_err(|e| milonga_sdk::Error::Io {
                    path: self.describe(id),
                    source: std::io::Error::other(e.to_string()),
                })
        }
    }
}
