//! Provenance: where, how and by what a step ran.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Where, how and by what a step (or a run) was computed: recorded once per process and shared
/// by every record it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Provenance {
    /// The git commit checked out in the process's working directory, when it is inside a
    /// repository and `git` is installed.
    pub git_commit: Option<String>,
    /// Whether tracked files differed from that commit (untracked files do not count).
    pub git_dirty: Option<bool>,
    /// The process's command line.
    pub argv: Vec<String>,
    /// The process's working directory.
    pub working_dir: Option<String>,
    /// The host name.
    pub host: String,
    /// The user name (`USER` or `USERNAME`).
    pub user: Option<String>,
    /// The version of milonga that wrote the record.
    pub milonga_version: String,
    /// The version of the compiler that built it.
    pub rustc_version: String,
    /// The operating system and architecture (`linux-x86_64`).
    pub platform: String,
    /// The process id.
    pub pid: u32,
}

fn git(dir: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Provenance {
    /// This process's provenance, found once (the `git` calls run on first use; a missing `git`
    /// or a directory outside a repository leaves the git fields empty).
    pub fn current() -> &'static Provenance {
        static CURRENT: OnceLock<Provenance> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let cwd = std::env::current_dir().ok();
            let (git_commit, git_dirty) = match &cwd {
                Some(dir) => match git(dir, &["rev-parse", "--verify", "-q", "HEAD"]) {
                    Some(commit) if !commit.is_empty() => {
                        let dirty = git(dir, &["status", "--porcelain", "--untracked-files=no"])
                            .map(|s| !s.is_empty());
                        (Some(commit), dirty)
                    }
                    _ => (None, None),
                },
                None => (None, None),
            };
            Provenance {
                git_commit,
                git_dirty,
                argv: std::env::args_os()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
                working_dir: cwd.map(|d| d.display().to_string()),
                host: host_name(),
                user: std::env::var("USER")
                    .or_else(|_| std::env::var("USERNAME"))
                    .ok(),
                milonga_version: env!("CARGO_PKG_VERSION").into(),
                rustc_version: env!("MILONGA_RUSTC_VERSION").into(),
                platform: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
                pid: std::process::id(),
            }
        })
    }
}
