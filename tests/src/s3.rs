//! The S3-compatible server of the remote tests: started by `scripts/s3-server.sh`, found
//! through the environment it prints.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the test bucket (`s3://bucket`), set by
/// `eval "$(scripts/s3-server.sh start)"`.
pub const TEST_S3_VAR: &str = "MILONGA_TEST_S3";

/// The test bucket's URL, `s3://bucket`. Panics, saying how to start the server, when the
/// environment does not name one: remote tests never skip silently.
pub fn bucket_url() -> String {
    match std::env::var(TEST_S3_VAR) {
        Ok(url) if url.starts_with("s3://") => url.trim_end_matches('/').to_owned(),
        _ => panic!(
            "{TEST_S3_VAR} is not set: the remote tests need the project's local S3 server. \
             Run `eval \"$(scripts/s3-server.sh start)\"` in the repository, then the tests \
             (`scripts/s3-server.sh stop` stops it)"
        ),
    }
}

/// A fresh location in the test bucket for one test: `s3://bucket/tests/<name>-<pid>-<n>-<nanos>`
/// (tests of several runs and processes never share objects).
pub fn fresh_url(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}/tests/{name}-{}-{}-{nanos}",
        bucket_url(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The server script.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("s3-server.sh")
}

/// Kills the server at once (SIGKILL) and starts it again on the same data and port, as
/// `scripts/s3-server.sh restart` does; returns when it answers again.
pub fn restart_server() {
    let out = Command::new("bash")
        .arg(script())
        .arg("restart")
        .output()
        .expect("run scripts/s3-server.sh restart");
    assert!(
        out.status.success(),
        "scripts/s3-server.sh restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `len` pseudo-random bytes from `seed` (xorshift; the same bytes for the same seed): test
/// objects that do not compress and differ from one another.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Uploads objects one after another, `upload(i)` the `i`-th (returning its id and length),
/// while the server is killed and restarted (see [`restart_server`]) as soon as the first has
/// gone up, so that the second is on its way; stops when two more have gone up after the
/// restart. Returns every upload's id and length, for the caller to check on the server.
pub fn upload_across_a_restart<Id: Send>(
    upload: impl FnMut(u64) -> (Id, u64) + Send,
) -> Vec<(Id, u64)> {
    use std::sync::atomic::AtomicBool;
    let restarted = AtomicBool::new(false);
    let first_done = AtomicBool::new(false);
    let mut upload = upload;
    std::thread::scope(|s| {
        let uploader = s.spawn(|| {
            let mut written = Vec::new();
            let mut after = 0;
            for i in 0u64.. {
                written.push(upload(i));
                first_done.store(true, Ordering::SeqCst);
                if restarted.load(Ordering::SeqCst) {
                    after += 1;
                    if after == 2 {
                        break;
                    }
                }
            }
            written
        });
        while !first_done.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        restart_server();
        restarted.store(true, Ordering::SeqCst);
        uploader.join().expect("the uploading thread panicked")
    })
}
