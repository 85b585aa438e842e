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
