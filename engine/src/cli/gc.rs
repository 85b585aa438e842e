//! `gc`: retention policies (runs are roots), then remove objects nothing kept refers to.

use std::process::ExitCode;
use std::time::Duration;

use crate::workspace::GcPolicy;

use super::common::{human, open, print_json, sanitize, usage, CmdResult};
use super::Global;

/// Remove objects no step refers to; with a policy, first drop old runs and results first.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Runs are roots: --keep-last and --max-age remove whole runs (and the step \
    records only they had); --max-age and --max-size also remove step records outside any run \
    (by last access, least recent first, until under the size). Records of kept runs are never \
    evicted by size.\n\nExamples:\n  milonga -w ./ws gc\n  milonga -w ./ws gc --keep-last 10 \
    --dry-run\n  milonga -w ./ws gc --max-age 30d --max-size 50G --json"
)]
pub(crate) struct Args {
    /// Keep unreferenced objects younger than this many seconds (a writer may be about to
    /// record them).
    #[arg(long, default_value_t = 3600)]
    grace_secs: u64,
    /// Keep only the newest N runs.
    #[arg(long, value_name = "N")]
    keep_last: Option<usize>,
    /// Remove runs started longer ago than this, and results outside runs not used for this
    /// long: `90s`, `45m`, `12h`, `30d`, `2w`.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    max_age: Option<Duration>,
    /// Remove results outside runs, least recently used first, until the results kept add up
    /// to at most this: `500M`, `50G`, `2T`, or bytes.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
    /// List what would go; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `90s`, `45m`, `12h`, `30d`, `2w` (a plain number is seconds).
fn parse_age(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (s, m, h, d, w)"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d, w)")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// `500M`, `50G`, `2T`, `64K` (binary units, optional trailing `B`/`iB`), or bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (K, M, G, T)"))?;
    let shift = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (K, M, G, T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let ws = open(global)?;
    if args.keep_last == Some(0) {
        return Err(usage(
            "--keep-last 0 would remove every run; use run-rm to remove runs by name",
        ));
    }
    let mut policy = GcPolicy::new()
        .with_grace(Duration::from_secs(args.grace_secs))
        .with_dry_run(args.dry_run);
    policy.keep_last_runs = args.keep_last;
    policy.max_age = args.max_age;
    policy.max_size = args.max_size;
    let r = ws.gc_with(&policy)?;
    if global.json {
        print_json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (verb, objects) = if r.dry_run {
        ("would remove", "would free")
    } else {
        ("removed", "freed")
    };
    for run in &r.removed_runs {
        println!("{verb} run {}", sanitize(run));
    }
    for step in &r.removed_steps {
        println!("{verb} step {}", sanitize(step));
    }
    if !r.removed_runs.is_empty() || !r.removed_steps.is_empty() {
        println!(
            "{verb} {} runs and {} step records",
            r.removed_runs.len(),
            r.removed_steps.len()
        );
    }
    println!(
        "{verb} {} objects and {} staging files, {objects} {}; kept {} live and {} recent objects",
        r.removed_objects,
        r.removed_staging_files,
        human(r.freed_bytes),
        r.live_objects,
        r.young_objects
    );
    if r.over_size_by > 0 {
        println!(
            "the results of the kept runs exceed --max-size by {}: keep fewer runs \
             (--keep-last, --max-age) to go under it",
            human(r.over_size_by)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes_parse_with_units() {
        assert_eq!(parse_age("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_age("2w").unwrap(), Duration::from_secs(14 * 86_400));
        assert!(parse_age("3y").unwrap_err().contains("unit"));
        assert!(parse_age("d").is_err());
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("50GiB").unwrap(), 50 << 30);
        assert_eq!(parse_size("2TB").unwrap(), 2 << 40);
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("5X").is_err());
    }
}
