//! What the commands share: opening the workspace, finding a step, printing.

use std::io::Write;

use crate::error::BoxError;
use crate::workspace::{StepInfo, Workspace};

use super::Global;

/// What a command returns.
pub(crate) type CmdResult = std::result::Result<std::process::ExitCode, BoxError>;

/// An error the command line reports as it is (a usage problem, not a storage error).
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Returns a usage error.
pub(crate) fn usage(message: impl Into<String>) -> BoxError {
    Box::new(Usage(message.into()))
}

/// Opens the workspace named by the global options. Inspecting a path that is not a workspace
/// never creates one there.
pub(crate) fn open(global: &Global) -> Result<Workspace, BoxError> {
    let Some(url) = global.workspace.as_deref() else {
        return Err(usage(
            "no workspace: give one with -w PATH (or set MILONGA_WORKSPACE)",
        ));
    };
    let local = match url.strip_prefix("file://") {
        Some(path) => Some(path),
        None if !url.contains("://") => Some(url),
        None => None,
    };
    Ok(match local {
        Some(path) if global.read_only => Workspace::open_read_only(path)?,
        Some(path) => Workspace::open_existing(path)?,
        None => Workspace::from_url(url)?,
    })
}

/// Opens the workspace named by the global options, creating a local one that does not exist
/// (for `run`).
pub(crate) fn open_or_create(global: &Global) -> Result<Workspace, BoxError> {
    let Some(url) = global.workspace.as_deref() else {
        return Err(usage(
            "no workspace: give one with -w PATH (or set MILONGA_WORKSPACE)",
        ));
    };
    if global.read_only {
        return Err(usage(
            "running a pipeline writes to the workspace; drop --read-only",
        ));
    }
    Ok(match url.strip_prefix("file://") {
        Some(path) => Workspace::open(path)?,
        None if !url.contains("://") => Workspace::open(url)?,
        None => Workspace::from_url(url)?,
    })
}

/// Text from the workspace (a step name, an id, an error) made safe to print on a terminal:
/// control characters (escape sequences, carriage returns, newlines) are shown escaped
/// (`\u{1b}`), everything else as it is.
pub fn sanitize(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Finds the step a command line argument names: a unique id, a unique prefix of one, or a
/// step name (`Step::NAME`, or the last segment of it) that only one record has.
pub(crate) fn resolve(ws: &Workspace, arg: &str) -> Result<StepInfo, BoxError> {
    if let Some(info) = ws.step_info(arg)? {
        return Ok(info);
    }
    let steps = ws.steps()?;
    let by_prefix: Vec<&StepInfo> = steps
        .iter()
        .filter(|s| s.unique_id.starts_with(arg))
        .collect();
    let candidates = if by_prefix.is_empty() {
        steps
            .iter()
            .filter(|s| s.step_type == arg || s.step_type.rsplit("::").next() == Some(arg))
            .collect()
    } else {
        by_prefix
    };
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(usage(format!(
            "no step {} in {}",
            sanitize(arg),
            sanitize(ws.url())
        ))),
        many => {
            let mut names: Vec<String> = many
                .iter()
                .take(10)
                .map(|s| sanitize(&s.unique_id))
                .collect();
            if many.len() > 10 {
                names.push(format!("… {} more", many.len() - 10));
            }
            Err(usage(format!(
                "{} names {} steps; give more of the id: {}",
                sanitize(arg),
                many.len(),
                names.join(", ")
            )))
        }
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`.
pub(crate) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// A duration in seconds, short: `42s`, `5m`, `3h`, `2d`.
pub(crate) fn age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    crate::workspace::now_millis()
}

/// Prints one JSON document on standard output.
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), BoxError> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Reports an error on standard error (text), or as `{"error": …}` on standard output (JSON).
pub(crate) fn report_error(bin: &str, global: &Global, e: &BoxError) {
    if global.json {
        let _ = print_json(&serde_json::json!({ "error": e.to_string() }));
    } else {
        eprintln!("{bin}: {}", sanitize(&e.to_string()));
    }
}
