#!/usr/bin/env python3
"""milonga vs ai2-tango 1.3.2: the one command of the side-by-side comparison (issue 6).

    python3 benches/compare/run.py [--quick | --n N] [--only tango|milonga|both]
                                   [--out benches/compare/out/results.json] [--no-probe] ...

Runs the same four workloads on both systems, on the same records, in one run, each workload
phase in its own process (so peak RSS and wall time are per process), then prints ONE table
(row, milonga, tango, milonga advantage) and writes the same data as JSON. Works with the system
python3 (stdlib only); the Tango side runs in benches/compare/.venv, which this script creates
with setup.sh (idempotent) unless --no-setup. The machine probe (benches/src/bin/probe.rs) runs
first unless --no-probe.

Per-process measurements (by this driver)
-----------------------------------------
wall_s          whole-process wall time, from spawn to exit (includes interpreter start-up and
                imports for Tango, process start-up for milonga).
peak_rss_bytes  peak resident set size of the process. Measured with GNU time (`/usr/bin/time
                -f %M`, apt package `time`) used as a tiny launcher when present. NOT with
                os.wait4 on a direct child: on Linux a child inherits its parent's RSS high-water
                mark through fork/vfork + exec (signal->maxrss), so wait4 would report at least
                this driver's own peak. Without /usr/bin/time, the child's self-reported
                `peak_rss_self_bytes` (VmHWM) is used, and failing that wait4 (marked as an
                upper bound). `rss_source` in the JSON says which.

CONTRACT for the milonga side: benches/src/bin/milonga-compare.rs
-------------------------------------------------------------------
Same CLI and JSON as benches/compare/tango_side.py:

    milonga-compare <workload> <phase> --n N --dir DIR

* One phase per process. The driver calls the phases of a workload in the order listed below,
  each in a fresh process, with the same DIR (empty before the first phase; only that workload
  and system use it). Put the workspace anywhere under DIR (tango uses DIR/ws).
* Records: `milonga_benches::records` (bit-exact copy of the Python generator, golden-tested):
  record(i) for i in 0..N, random-get indices `random_indices(N)` (10,000 of them).
* Exit 0 on success. stdout: exactly one JSON object on one line (the driver reads the last line
  of stdout that starts with '{'); logs/progress go to stderr. Non-zero exit = failed phase.
* Times are seconds (f64) unless the key says `_us`. "items_per_s" excludes the time to generate
  the records (`gen_s`, measured by a separate generate-and-discard pass in the same process and
  subtracted from `write_s`).
* `bytes_on_disk` = sum of st_size of the files that hold this step's result (payload + manifest /
  metadata; count content-addressed objects the step references, each file once). The driver
  also records `dir_bytes`, the total under DIR.

Every object has: "system" ("milonga"|"tango"), "workload", "phase", "n" (int), and optionally
"peak_rss_self_bytes" (VmHWM from /proc/self/status at exit). Then, per workload/phase:

  seq (a: random-access sequence; tango: a step with FORMAT = SqliteSequenceFormat returning a
       list of the N records)
    write   write_s, gen_s, items_per_s, bytes_on_disk, unique_id (str)
            - run the step that produces records 0..N as a random-access sequence, cache it
    read    open_s, gets (=10000), get_us (mean µs per get), iter_s, iter_items_per_s,
            check {count, text_bytes, score_sum, get_id_sum}
            - open_s: from just before opening the workspace to the sequence handle in hand
            - then the 10,000 random gets (get_id_sum = sum of the returned records' ids), then a
              full in-order iteration (count/text_bytes/score_sum over it)
  stream (b: tango: a step whose run() is a generator, default DillFormat("gz"))
    write   write_s, gen_s, items_per_s, bytes_on_disk, unique_id
    read    first_item_s (from just before opening the workspace to the first item in hand),
            iter_s (same start, to the last item), iter_items_per_s (= n / iter_s),
            check {count, text_bytes, score_sum}
  hit (c: cache hit)
    prepare write_s, bytes_on_disk, unique_id     - cache a step producing records 0..1000
    fetch   fetch_s, check {count, text_bytes, score_sum}
            - fresh process: open the workspace, fetch that cached result (whole value);
              the table uses the driver's wall_s of this process
    id      ids (number of new step objects), list_len (=1000), id_us (mean), id_us_median,
            unique_id - cost of computing the unique id of a NEW step value whose argument is a
            1,000-element list (ints 0..999), construction included
  chain (d: produce records 0..N -> transform {id, text.upper(), score*2} -> evaluate)
    run1    run_s, steps_run (=3), result {count, text_bytes, mean_score}
    run2    run_s, steps_run (must be 0: everything cached), result {...}
            - both run the whole 3-step pipeline the way the system's executor does; the table
              uses the driver's wall_s of each process. evaluate: count, sum of text lengths,
              mean of scores (plain in-order f64 sum / count).

The driver cross-checks `check` / `result` between the systems (exact for integers, relative
1e-9 for floats) and reports mismatches in the JSON ("checks") and on stderr.

Output JSON (--out): {"schema": 1, "meta": {...machine, versions, commands}, "probe": {...}|null,
"results": {"tango": {workload: {phase: {...object above..., wall_s, peak_rss_bytes, rss_source,
dir_bytes}}}, "milonga": {...}}, "rows": [{"row", "unit", "better", "milonga", "tango", "ratio",
"advantage"}], "checks": [...], "errors": [...]}. "ratio" is milonga's advantage factor (>1 =
milonga better): tango/milonga for times and sizes, milonga/tango for throughputs.
"""

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
VENV_PY = os.path.join(HERE, ".venv", "bin", "python")
TANGO_SIDE = os.path.join(HERE, "tango_side.py")
GNU_TIME = "/usr/bin/time"

WORKLOADS = {
    "seq": ["write", "read"],
    "stream": ["write", "read"],
    "hit": ["prepare", "fetch", "id"],
    "chain": ["run1", "run2"],
}

# (row label, unit, better, workload, phase, key). better: "higher" (throughput), "lower" (time),
# "smaller" (bytes / memory).
ROWS = [
    ("a. seq: write N", "items/s", "higher", "seq", "write", "items_per_s"),
    ("a. seq: open (fresh process)", "ms", "lower", "seq", "read", "open_s"),
    ("a. seq: random get", "µs", "lower", "seq", "read", "get_us"),
    ("a. seq: full iteration", "items/s", "higher", "seq", "read", "iter_items_per_s"),
    ("a. seq: bytes on disk", "MB", "smaller", "seq", "write", "bytes_on_disk"),
    ("a. seq: peak RSS, write", "MiB", "smaller", "seq", "write", "peak_rss_bytes"),
    ("a. seq: peak RSS, read", "MiB", "smaller", "seq", "read", "peak_rss_bytes"),
    ("b. stream: write N", "items/s", "higher", "stream", "write", "items_per_s"),
    ("b. stream: time to first item", "ms", "lower", "stream", "read", "first_item_s"),
    ("b. stream: full iteration", "items/s", "higher", "stream", "read", "iter_items_per_s"),
    ("b. stream: bytes on disk", "MB", "smaller", "stream", "write", "bytes_on_disk"),
    ("b. stream: peak RSS, write", "MiB", "smaller", "stream", "write", "peak_rss_bytes"),
    ("b. stream: peak RSS, read", "MiB", "smaller", "stream", "read", "peak_rss_bytes"),
    ("c. cache hit, fresh process (wall)", "ms", "lower", "hit", "fetch", "wall_s"),
    ("c. cache hit: peak RSS", "MiB", "smaller", "hit", "fetch", "peak_rss_bytes"),
    ("c. cache hit: bytes on disk (1,000 rec.)", "kB", "smaller", "hit", "prepare", "bytes_on_disk"),
    ("c. unique_id, 1,000-element list arg", "µs", "lower", "hit", "id", "id_us"),
    ("d. chain: first run (wall)", "s", "lower", "chain", "run1", "wall_s"),
    ("d. chain: second run, cached (wall)", "s", "lower", "chain", "run2", "wall_s"),
    ("d. chain: peak RSS, first run", "MiB", "smaller", "chain", "run1", "peak_rss_bytes"),
]

# Unit conversion from the JSON value (seconds, bytes, µs, items/s) to the displayed unit.
SCALE = {"items/s": 1.0, "ms": 1e3, "s": 1.0, "µs": 1.0, "MB": 1e-6, "kB": 1e-3, "MiB": 1 / 2**20}


def log(*args):
    print("[run]", *args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------
def driver_peak_rss_bytes():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_measured(cmd, cwd=None, env=None):
    """Runs cmd; returns (exit_code, stdout_text, wall_s, peak_rss_bytes, rss_source)."""
    use_time = os.access(GNU_TIME, os.X_OK)
    rss_file = None
    full = list(cmd)
    if use_time:
        fd, rss_file = tempfile.mkstemp(prefix="milonga-compare-rss-")
        os.close(fd)
        full = [GNU_TIME, "-f", "%M", "-o", rss_file] + full
    t0 = time.perf_counter()
    p = subprocess.Popen(full, cwd=cwd, env=env, stdout=subprocess.PIPE)
    out = p.stdout.read()
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = code = os.waitstatus_to_exitcode(status)
    rss, source = None, None
    if rss_file is not None:
        try:
            with open(rss_file) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            rss, source = int(lines[-1]) * 1024, "gnu-time"
        except (OSError, ValueError, IndexError):
            pass
        finally:
            os.unlink(rss_file)
    if rss is None:
        rss = ru.ru_maxrss * 1024
        source = f"wait4 (upper bound: includes the driver's {driver_peak_rss_bytes() >> 20} MiB)"
    return code, out.decode("utf-8", "replace"), wall, rss, source


def last_json(stdout):
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON object on stdout")


def dir_bytes(path):
    total, seen = 0, set()
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            st = os.lstat(p)
            if os.path.isfile(p) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def run_workload(system, argv0, workload, n, work, results, errors):
    d = os.path.join(work, system, workload)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    results.setdefault(system, {})[workload] = phases = {}
    for phase in WORKLOADS[workload]:
        cmd = argv0 + [workload, phase, "--n", str(n), "--dir", d]
        log(f"{system:7} {workload:6} {phase:7} ...")
        code, out, wall, rss, source = run_measured(cmd, cwd=d)
        if code != 0:
            msg = f"{system} {workload} {phase}: exit code {code}"
            log("FAILED:", msg, "| stdout tail:", out[-500:])
            errors.append(msg)
            return
        try:
            obj = last_json(out)
        except ValueError as e:
            errors.append(f"{system} {workload} {phase}: {e}")
            log("FAILED:", errors[-1], "| stdout tail:", out[-500:])
            return
        if source != "gnu-time" and obj.get("peak_rss_self_bytes"):
            rss, source = obj["peak_rss_self_bytes"], "self-reported VmHWM"
        obj.update(wall_s=wall, peak_rss_bytes=rss, rss_source=source, dir_bytes=dir_bytes(d))
        phases[phase] = obj
        log(f"{system:7} {workload:6} {phase:7} wall {wall:8.2f} s  peak RSS {rss / 2**20:7.1f} MiB")


# --------------------------------------------------------------------------------------------
# Set-up: venv, milonga binary, probe
# --------------------------------------------------------------------------------------------
def setup_tango():
    subprocess.run(["bash", os.path.join(HERE, "setup.sh")], check=True, stdout=sys.stderr)
    return [VENV_PY, TANGO_SIDE]


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")


def cargo_build(bin_name):
    """Builds a release binary of milonga-benches; returns (ok, stderr text)."""
    cmd = ["cargo", "build", "--release", "-p", "milonga-benches", "--bin", bin_name]
    log(" ".join(cmd))
    p = subprocess.run(cmd, cwd=REPO, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        return False, p.stderr
    return True, ""


def setup_milonga(args):
    """Returns the argv prefix of milonga-compare, or (None, reason)."""
    binary = args.milonga_bin or os.path.join(target_dir(), "release", "milonga-compare")
    if not args.no_build and not args.milonga_bin:
        if shutil.which("cargo") is None:
            return None, "cargo not found"
        ok, err = cargo_build("milonga-compare")
        if not ok:
            if "no bin target named" in err:
                return None, (
                    "benches/src/bin/milonga-compare.rs does not exist yet (see the contract at "
                    "the top of benches/compare/run.py)"
                )
            sys.stderr.write(err[-3000:])
            return None, "cargo build of milonga-compare failed (errors above)"
    if not os.access(binary, os.X_OK):
        return None, f"{binary} is not built"
    return [binary], None


def run_probe(work):
    if shutil.which("cargo") is None:
        return None, "cargo not found"
    ok, err = cargo_build("probe")
    if not ok:
        sys.stderr.write(err[-3000:])
        return None, "cargo build of probe failed"
    binary = os.path.join(target_dir(), "release", "probe")
    d = os.path.join(work, "probe")
    os.makedirs(d, exist_ok=True)
    p = subprocess.run([binary, "--dir", d], stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        return None, f"probe exited with {p.returncode}"
    for line in p.stdout.splitlines():
        if not line.startswith("{"):
            print(line, file=sys.stderr)
    return last_json(p.stdout), None


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def lookup(results, system, workload, phase, key):
    v = results.get(system, {}).get(workload, {}).get(phase, {}).get(key)
    return float(v) if isinstance(v, (int, float)) else None


def fmt_value(v, unit):
    if v is None:
        return "—"
    x = v * SCALE[unit]
    if unit == "items/s":
        for div, suf in ((1e6, "M"), (1e3, "k")):
            if x >= div:
                return f"{x / div:.3g}{suf}/s"
        return f"{x:.3g}/s"
    if x >= 1000:
        return f"{x:,.0f} {unit}"
    return f"{x:.3g} {unit}"


def advantage(m, t, better):
    if m is None or t is None or m <= 0 or t <= 0:
        return None, "—"
    r = m / t if better == "higher" else t / m
    good, bad = ("less", "more") if better == "smaller" else ("faster", "slower")
    f, word = (r, good) if r >= 1 else (1 / r, bad)
    num = f"{f:.0f}" if f >= 10 else f"{f:.1f}"
    return r, f"{num}x {word}"


def build_rows(results):
    rows = []
    for label, unit, better, w, ph, key in ROWS:
        m = lookup(results, "milonga", w, ph, key)
        t = lookup(results, "tango", w, ph, key)
        ratio, adv = advantage(m, t, better)
        rows.append(
            {
                "row": label,
                "unit": unit,
                "better": better,
                "milonga": m,
                "tango": t,
                "ratio": ratio,
                "advantage": adv,
            }
        )
    return rows


def print_table(rows, n, file=sys.stdout):
    head = (f"rows (N = {n:,})", "milonga", "ai2-tango 1.3.2", "milonga advantage")
    cells = [head] + [
        (r["row"], fmt_value(r["milonga"], r["unit"]), fmt_value(r["tango"], r["unit"]), r["advantage"])
        for r in rows
    ]
    w = [max(len(c[i]) for c in cells) for i in range(4)]
    line = lambda c: f"| {c[0]:<{w[0]}} | {c[1]:>{w[1]}} | {c[2]:>{w[2]}} | {c[3]:<{w[3]}} |"  # noqa: E731
    print(line(head), file=file)
    print("|" + "|".join([":" + "-" * (w[0] + 1)] + ["-" * (x + 1) + ":" for x in w[1:3]] + [":" + "-" * (w[3] + 1)]) + "|", file=file)
    for c in cells[1:]:
        print(line(c), file=file)


def cross_checks(results):
    out = []
    if "milonga" not in results or "tango" not in results:
        return out
    for w, ph, key in (
        ("seq", "read", "check"),
        ("stream", "read", "check"),
        ("hit", "fetch", "check"),
        ("chain", "run1", "result"),
        ("chain", "run2", "result"),
    ):
        a = results["milonga"].get(w, {}).get(ph, {}).get(key)
        b = results["tango"].get(w, {}).get(ph, {}).get(key)
        if a is None or b is None:
            continue
        for k in sorted(set(a) | set(b)):
            x, y = a.get(k), b.get(k)
            if isinstance(x, float) or isinstance(y, float):
                ok = x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
            else:
                ok = x == y
            out.append({"what": f"{w}.{ph}.{key}.{k}", "milonga": x, "tango": y, "ok": ok})
            if not ok:
                log(f"CHECK MISMATCH {w}.{ph}.{key}.{k}: milonga={x} tango={y}")
    for side in ("milonga", "tango"):
        v = lookup(results, side, "chain", "run2", "steps_run")
        if v is not None and v != 0:
            out.append({"what": f"{side}: chain.run2.steps_run", "milonga": None, "tango": None, "ok": False})
            log(f"CHECK FAILED: {side} re-ran {v:.0f} step(s) in the cached second chain run")
    return out


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_meta(work):
    meta = {"cores": os.cpu_count(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            meta["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
        with open("/proc/meminfo") as f:
            meta["mem_total_kib"] = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        pass
    df = sh(["df", "-hT", work])
    if df:
        meta["disk"] = df.splitlines()[-1]
    meta["rustc"] = sh(["rustc", "--version"])
    meta["git_commit"] = sh(["git", "-C", REPO, "rev-parse", "HEAD"])
    meta["git_dirty"] = bool(sh(["git", "-C", REPO, "status", "--porcelain"]))
    return meta


# --------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description="milonga vs ai2-tango 1.3.2, side by side")
    ap.add_argument("--n", type=int, default=1_000_000, help="records per workload (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="N = 100,000")
    ap.add_argument("--only", choices=("tango", "milonga", "both"), default="both")
    ap.add_argument("--workloads", default="seq,stream,hit,chain", help="comma-separated subset")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "results.json"))
    ap.add_argument("--work", default=os.path.join(HERE, "out", "work"), help="scratch dir for the workspaces")
    ap.add_argument("--no-probe", action="store_true", help="skip the machine probe")
    ap.add_argument("--no-setup", action="store_true", help="do not run setup.sh (venv must exist)")
    ap.add_argument("--no-build", action="store_true", help="do not cargo build milonga-compare")
    ap.add_argument("--milonga-bin", help="path to a built milonga-compare (implies --no-build)")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.n
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")

    started = datetime.datetime.now(datetime.timezone.utc)
    errors, skipped = [], {}
    systems = {}
    if args.only in ("tango", "both"):
        if not args.no_setup:
            setup_tango()
        systems["tango"] = [VENV_PY, TANGO_SIDE]
    if args.only in ("milonga", "both"):
        argv0, why = setup_milonga(args)
        if argv0 is None:
            skipped["milonga"] = why
            log(f"SKIPPING the milonga side: {why}")
        else:
            systems["milonga"] = argv0

    probe = None
    if not args.no_probe:
        probe, why = run_probe(work)
        if probe is None:
            skipped["probe"] = why
            log(f"SKIPPING the probe: {why}")

    results = {}
    for w in workloads:
        for system, argv0 in systems.items():
            run_workload(system, argv0, w, n, work, results, errors)

    rows = build_rows(results)
    checks = cross_checks(results)
    meta = machine_meta(work)
    meta.update(
        n=n,
        started=started.isoformat(timespec="seconds"),
        command=" ".join([os.path.basename(sys.executable)] + sys.argv),
        systems=list(systems),
        skipped=skipped,
        tango_version="1.3.2",
        python=sh([VENV_PY, "--version"]) if "tango" in systems else None,
        peak_rss_method="gnu-time" if os.access(GNU_TIME, os.X_OK) else "self-reported VmHWM / wait4",
    )
    doc = {
        "schema": 1,
        "meta": meta,
        "probe": probe,
        "results": results,
        "rows": rows,
        "checks": checks,
        "errors": errors,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")

    print_table(rows, n)
    for what, why in skipped.items():
        print(f"({what} skipped: {why})")
    bad = [c["what"] for c in checks if not c["ok"]]
    if bad:
        print(f"CROSS-CHECK MISMATCHES: {', '.join(bad)}")
    if errors:
        print(f"ERRORS: {'; '.join(errors)}")
    print(f"(JSON: {os.path.relpath(args.out)})")
    return 1 if errors or bad else 0


if __name__ == "__main__":
    sys.exit(main())
