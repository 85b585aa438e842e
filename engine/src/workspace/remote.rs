//! Opening a remote workspace (`s3://bucket/prefix`, feature `s3`): objects through the
//! remote object store, metadata and leases as objects under the prefix (the remote side of
//! the backend seam), and a local directory for per-machine state.

use std::path::PathBuf;

/// The environment variable naming the directory of per-machine state of remote workspaces
/// (work folders of running steps, materialized files, the read-through cache).
pub const CACHE_DIR_ENV: &str = "MILONGA_CACHE_DIR";

/// The local directory of remote workspace `url`: under [`CACHE_DIR_ENV`], else
/// `$XDG_CACHE_HOME/milonga`, else `~/.cache/milonga`, else the temporary directory; one folder
/// per workspace URL (a readable part of the URL and a hash of all of it).
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
    use std::sync::Arc;

    use super::local_dir_for;
    use crate::error::Result;
    use crate::remote::lease::{lease_duration_from_env, RemoteLeases, RemoteLeasesHandle};
    use crate::remote::meta::{Kv, RemoteKv, RemoteMeta};
    use crate::remote::{ReadCache, Remote, RemoteStore};
    use crate::workspace::{ObjectAges, Workspace};

    /// Opens the remote workspace at `url` (`s3://bucket/prefix`): objects through the
    /// [`RemoteStore`] (verified range reads, the read-through cache), metadata and leases as
    /// objects under the prefix.
    pub(crate) fn open_s3(url: &str) -> Result<Workspace> {
        let remote = Remote::from_url(url)?;
        let url = remote.url().trim_end_matches('/').to_owned();
        let cache = ReadCache::open(&ReadCache::default_dir(), ReadCache::default_cap())?;
        let store = Arc::new(RemoteStore::new(remote.clone(), cache));
        let kv: Arc<dyn Kv> = Arc::new(RemoteKv(remote.clone()));
        let leases = RemoteLeases::new(Arc::clone(&kv), lease_duration_from_env());
        let meta = RemoteMeta::new(kv, Arc::clone(&leases));
        // Last-modified times of the objects, for the grace period of garbage collection.
        let lister = Arc::clone(&store);
        let ages: ObjectAges = Box::new(move || {
            let mut out = std::collections::HashMap::new();
            lister.for_each_object(|id, info| {
                out.insert(id, (info.last_modified_ms, info.size));
            })?;
            Ok(out)
        });
        Workspace::with_backend(
            url.clone(),
            store,
            Box::new(meta),
            Box::new(RemoteLeasesHandle(leases)),
            local_dir_for(&url),
            Some(ages),
        )
    }
}
