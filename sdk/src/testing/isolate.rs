//! Running a check in a child process, so that a process abort is a reported failure.
//!
//! On stable Rust a global allocator must not unwind, and a refused allocation ends in Rust's
//! allocation-failure handler, which aborts the process. A decoder that trusts a lying `u64`
//! count therefore cannot be caught in-process. So the kit re-runs the current test in a child
//! process (the current test binary, filtered to this one test with `--exact`, as the
//! `rusty-fork` crate does), told by environment variables which check to run; the child runs
//! that check in-process and writes its result to a file; the parent reads it. When the child
//! dies instead, the parent reports how, the generated value and mutation seed of the case it
//! was in, and, when the metering allocator refused a request
//! ([`allocation_meter!`](crate::allocation_meter)), the mutation and the input's files, which
//! it also writes under the target directory.
//!
//! Each test thread of the standard test harness is named after its test, which is how the
//! parent knows what to re-run. Where that name is missing (a doctest, a `main`, a custom
//! harness), or with `MILONGA_KIT_ISOLATE=0`, checks run in-process.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::alloc::{CONTEXT_PREFIX, FILE_PREFIX, REFUSED_PREFIX};
use super::report::{Check, Failure};

/// Set in the child: the number (from 1) of the check to run in this test.
const CHILD_ENV: &str = "MILONGA_KIT_CHILD";
/// Set in the child: where to write the result.
const REPORT_ENV: &str = "MILONGA_KIT_REPORT";
/// `0` turns isolation off for every check.
const ISOLATE_ENV: &str = "MILONGA_KIT_ISOLATE";

thread_local! {
    /// How many checks this thread (one test) has started.
    static CHECKS: Cell<u32> = const { Cell::new(0) };
    /// In the parent: the results of this thread's isolated checks, by number, for the children
    /// of later checks (which skip the earlier ones and must see the same results).
    static RESULTS: RefCell<Vec<(u32, String)>> = const { RefCell::new(Vec::new()) };
}

/// How the check about to run must run.
pub(crate) enum Mode {
    /// Here, and its result is the check's result.
    InProcess,
    /// Here, in the child, and its result goes to the parent through this file.
    Child(PathBuf),
    /// In the child only: an earlier isolated check of the test, which the parent already ran,
    /// with its result.
    Skip(Result<(), Failure>),
    /// In a child process that runs the test `name` up to this check (number `n`).
    Parent { name: String, n: u32 },
}

/// Decides how the next check of this thread runs; `isolate`: whether the caller wants a child.
pub(crate) fn mode(isolate: bool) -> Mode {
    let n = CHECKS.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    if let Ok(target) = std::env::var(CHILD_ENV) {
        return match target.parse::<u32>() {
            Ok(t) if t == n => match std::env::var(REPORT_ENV) {
                Ok(path) => Mode::Child(PathBuf::from(path)),
                Err(_) => Mode::InProcess,
            },
            Ok(t) if n < t && isolate => match std::env::var(REPORT_ENV)
                .ok()
                .and_then(|r| std::fs::read_to_string(previous_file(Path::new(&r), n)).ok())
                .and_then(|text| parse_report(&text))
            {
                Some(result) => Mode::Skip(result),
                None => Mode::InProcess,
            },
            _ => Mode::InProcess,
        };
    }
    if !isolate || std::env::var(ISOLATE_ENV).is_ok_and(|v| v == "0") {
        return Mode::InProcess;
    }
    match std::thread::current().name() {
        Some(name) if name != "main" && !name.is_empty() => Mode::Parent {
            name: name.to_owned(),
            n,
        },
        _ => Mode::InProcess,
    }
}

/// The file beside the report with the result of the earlier check number `n`.
fn previous_file(report: &Path, n: u32) -> PathBuf {
    report.with_extension(format!("prev{n}"))
}

/// In the parent: keeps the result of isolated check number `n`, for the children of later
/// checks of the same test.
pub(crate) fn record(n: u32, result: &Result<(), Failure>) {
    RESULTS.with(|r| r.borrow_mut().push((n, serialize(result))));
}

fn serialize(result: &Result<(), Failure>) -> String {
    match result {
        Ok(()) => "ok\n".to_owned(),
        Err(f) => format!(
            "{}\n{}\n{}{}",
            f.check.name(),
            f.message.len(),
            f.message,
            f.input
        ),
    }
}

/// The file beside the report where the child writes the case it is in.
fn case_file(report: &Path) -> PathBuf {
    report.with_extension("case")
}

/// In the child: notes the case about to run (the generated value and seed, the input file),
/// which the parent reports if the child dies in it.
pub(crate) fn note_case(report: &Path, case: &str) {
    let _ = std::fs::write(case_file(report), case);
}

/// Runs `here` (given the child's report path, to note cases in) where [`mode`] says: in a
/// child process, which gives its result, or in this one.
pub(crate) fn isolated(
    isolate: bool,
    here: impl FnOnce(Option<&Path>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    match mode(isolate) {
        Mode::Skip(result) => result,
        Mode::InProcess => here(None),
        Mode::Child(report) => {
            let result = here(Some(&report));
            finish_child(&report, &result)
        }
        Mode::Parent { name, n } => {
            let result = match run_in_child(&name, n) {
                Some(result) => result,
                None => here(None),
            };
            record(n, &result);
            result
        }
    }
}

/// In the child: writes the check's result for the parent, and ends the process (the rest of
/// the test is the parent's business).
pub(crate) fn finish_child(report: &Path, result: &Result<(), Failure>) -> ! {
    let code = match std::fs::write(report, serialize(result)) {
        Ok(()) => 0,
        Err(_) => 3,
    };
    std::process::exit(code)
}

fn parse_report(text: &str) -> Option<Result<(), Failure>> {
    if text == "ok\n" {
        return Some(Ok(()));
    }
    let (check, rest) = text.split_once('\n')?;
    let (len, rest) = rest.split_once('\n')?;
    let len: usize = len.parse().ok()?;
    let check = Check::ALL.into_iter().find(|c| c.name() == check)?;
    let message = rest.get(..len)?.to_owned();
    let input = rest.get(len..)?.to_owned();
    Some(Err(Failure {
        check,
        message,
        input,
    }))
}

/// Where the kit writes its files: `<target dir>/milonga-kit/`, found from the test binary's
/// path (`<target>/<profile>/deps/<binary>`), or the system's temporary directory.
fn kit_dir() -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        let profile = if deps.file_name()? == "deps" {
            deps.parent()?
        } else {
            deps
        };
        Some(profile.parent()?.join("milonga-kit"))
    });
    let dir = from_exe.unwrap_or_else(|| std::env::temp_dir().join("milonga-kit"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// In the parent: runs check number `n` of test `name` in a child process and returns its
/// result, or, when the child could not run it, `None` (the caller then runs it here).
pub(crate) fn run_in_child(name: &str, n: u32) -> Option<Result<(), Failure>> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let exe = std::env::current_exe().ok()?;
    let stem = format!(
        "{}-{}-{}-{n}",
        sanitize(name),
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    let dir = kit_dir();
    let report = dir.join(format!("{stem}.report"));
    let previous: Vec<PathBuf> = RESULTS.with(|r| {
        r.borrow()
            .iter()
            .filter_map(|(j, text)| {
                let path = previous_file(&report, *j);
                std::fs::write(&path, text).ok().map(|()| path)
            })
            .collect()
    });
    let output = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .arg("--include-ignored")
        .env(CHILD_ENV, n.to_string())
        .env(REPORT_ENV, &report)
        .output();
    for path in previous {
        let _ = std::fs::remove_file(path);
    }
    let output = output.ok()?;
    let case = std::fs::read_to_string(case_file(&report)).ok();
    let _ = std::fs::remove_file(case_file(&report));
    if let Ok(text) = std::fs::read_to_string(&report) {
        let _ = std::fs::remove_file(&report);
        return parse_report(&text);
    }
    if output.status.success() {
        // The child ended without reaching the check: the test does not run the same checks
        // every time. Run it here.
        return None;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Some(Err(died(&dir, &stem, &output.status, &stderr, case)))
}

/// The failure for a child that died: how, in which case, and (when the allocator refused a
/// request) on which input, which is written to files under `dir`.
fn died(
    dir: &Path,
    stem: &str,
    status: &std::process::ExitStatus,
    stderr: &str,
    case: Option<String>,
) -> Failure {
    let refused = stderr.lines().find(|l| l.starts_with(REFUSED_PREFIX));
    let reading = stderr
        .lines()
        .find_map(|l| l.strip_prefix(CONTEXT_PREFIX))
        .map(str::trim);
    let mut message = String::new();
    let check = if let Some(line) = refused {
        let _ = write!(
            message,
            "reading {} asked for {}. The metering allocator refused it and the process \
             aborted ({status}); the kit ran the check in a child process, so only the child \
             died.",
            reading.unwrap_or("a mutated input"),
            line.trim_start_matches(REFUSED_PREFIX).trim(),
        );
        Check::Allocation
    } else {
        let _ = write!(
            message,
            "the check ran in a child process, which died ({status}) without a report: a \
             process abort (an allocation the system refused, a stack overflow) or an exit. \
             Its last lines of output:"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        for l in &lines[lines.len().saturating_sub(12)..] {
            let _ = write!(message, "\n    {l}");
        }
        Check::NoPanic
    };
    let mut written = Vec::new();
    for (i, line) in stderr
        .lines()
        .filter_map(|l| l.strip_prefix(FILE_PREFIX))
        .enumerate()
    {
        let mut parts = line.split_whitespace();
        let (Some(_len), Some(name), Some(bytes)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let name = String::from_utf8_lossy(&unhex(name)).into_owned();
        let bytes = unhex(bytes);
        let path = dir.join(format!("{stem}-file{i}-{}.bin", sanitize(&name)));
        if std::fs::write(&path, &bytes).is_ok() {
            let shown: String = bytes.iter().take(48).map(|b| format!("{b:02x}")).collect();
            let more = if bytes.len() > 48 { "…" } else { "" };
            written.push(format!(
                "file {name:?} ({} bytes: {shown}{more}) written to {}",
                bytes.len(),
                path.display()
            ));
        }
    }
    if !written.is_empty() {
        let _ = write!(message, "\n  the input: {}", written.join("; "));
    }
    Failure {
        check,
        message,
        input: case.unwrap_or_else(|| "(the child died before its first case)".to_owned()),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks_exact(2)
        .filter_map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_survive_the_trip_through_a_file() {
        let f = Failure {
            check: Check::Allocation,
            message: "two\nlines".into(),
            input: "[1, 2] (mutation seed 7)".into(),
        };
        let text = serialize(&Err(f.clone()));
        assert_eq!(parse_report(&text), Some(Err(f)));
        assert_eq!(parse_report("ok\n"), Some(Ok(())));
        assert_eq!(parse_report("nonsense"), None);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex("00ff10"), vec![0, 255, 16]);
    }
}
