#!/usr/bin/env python3
"""The ai2-tango 1.3.2 side of the milonga comparison harness.

Runs ONE phase of ONE workload per invocation (so the driver, run.py, can measure peak RSS and
whole-process wall time per process) and prints ONE JSON object on stdout (progress/logs go to
stderr). The CLI and the JSON keys are the contract documented at the top of run.py; the Rust
binary `milonga-compare` implements the same contract.

    python tango_side.py <workload> <phase> --n N --dir DIR
    python tango_side.py records --n 3          # dump generated records as JSON lines (debug)

Must run with the interpreter of benches/compare/.venv (created by setup.sh).

Benchmark records (copy this recipe exactly on the Rust side: benches/src/records.rs)
------------------------------------------------------------------------------------
Record i (i = 0 .. N-1) is {"id": i, "text": str, "score": float}, generated from i alone:

    M64   = 2**64 - 1                     (all arithmetic on u64, wrapping)
    MUL   = 6364136223846793005           (Knuth MMIX LCG multiplier)
    INC   = 1442695040888963407           (Knuth MMIX LCG increment)
    seed  = splitmix64(i):  z = i + 0x9E3779B97F4A7C15
                            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
                            z = (z ^ (z >> 27)) * 0x94D049BB133111EB
                            z = z ^ (z >> 31)
    next():  s = s * MUL + INC; return s
    text:    start with ""; repeat { if text is not empty: append " ";
                                     append WORDS[next() >> 58] }  until len(text) >= 100
             (so 100 .. 100+max word length bytes, ASCII lowercase)
    score:   (next() >> 11) / 2**53       (exact f64 in [0, 1))

Random-get indices (workload "seq", phase "read"): GETS = 10,000 indices from one LCG with
    s = 0x853C49E6748FEA9B; for k in 0..GETS: s = s * MUL + INC; index = (s >> 33) % N

Checks printed by readers (compared across systems by run.py):
    count      = number of items iterated
    text_bytes = sum of len(text) over the items iterated
    score_sum  = sum of score over the items iterated, in index order, plain f64 addition
    get_id_sum = sum of the ids of the records returned by the random gets
"""

import json
import os
import sys
import time

WORDS = [
    "the", "of", "and", "to", "in", "is", "that", "for",
    "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "this", "are", "or", "his", "from", "at", "which",
    "but", "have", "an", "had", "they", "you", "were", "their",
    "one", "all", "we", "can", "her", "has", "there", "been",
    "if", "more", "when", "will", "would", "who", "so", "no",
    "cache", "step", "stream", "format", "record", "workspace", "pipeline", "result",
    "storage", "engine", "python", "rust", "tango", "milonga", "sequence", "hash",
]  # fmt: skip
assert len(WORDS) == 64

M64 = (1 << 64) - 1
MUL = 6364136223846793005
INC = 1442695040888963407
GETS = 10_000
GET_SEED = 0x853C49E6748FEA9B
ID_LIST_LEN = 1_000  # length of the list argument of workload "hit", phase "id"
ID_REPEATS = 200  # number of new Step objects whose unique_id is computed
TEXT_MIN = 100


def splitmix64(i):
    z = (i + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def record(i):
    """Benchmark record number i (see the module docstring for the recipe)."""
    s = splitmix64(i)
    words = WORDS
    parts = []
    length = -1  # length of " ".join(parts)
    while length < TEXT_MIN:
        s = (s * MUL + INC) & M64
        w = words[s >> 58]
        parts.append(w)
        length += len(w) + 1
    s = (s * MUL + INC) & M64
    return {"id": i, "text": " ".join(parts), "score": (s >> 11) / 9007199254740992.0}


def records(n):
    """Records 0..n-1, lazily."""
    for i in range(n):
        yield record(i)


def random_indices(n):
    s = GET_SEED
    out = []
    for _ in range(GETS):
        s = (s * MUL + INC) & M64
        out.append((s >> 33) % n)
    return out


def self_peak_rss_bytes():
    """VmHWM of this process (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def log(*args):
    print("[tango]", *args, file=sys.stderr, flush=True)


def dir_bytes(path):
    """Sum of st_size of the regular files under path (hard links counted once)."""
    total = 0
    seen = set()
    for root, _dirs, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            if not os.path.isfile(os.path.join(root, f)) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def gen_time(n):
    """Time to generate (and discard) n records: subtracted from write times so that the
    speed of this Python generator does not count against Tango."""
    t0 = time.perf_counter()
    for _ in records(n):
        pass
    return time.perf_counter() - t0


class Checks:
    def __init__(self):
        self.count = 0
        self.text_bytes = 0
        self.score_sum = 0.0

    def add(self, r):
        self.count += 1
        self.text_bytes += len(r["text"])
        self.score_sum += r["score"]

    def as_dict(self):
        return {"count": self.count, "text_bytes": self.text_bytes, "score_sum": self.score_sum}


# --------------------------------------------------------------------------------------------
# Steps. Defined at module level so that their class names (part of Tango's unique_id) are
# stable across processes.
# --------------------------------------------------------------------------------------------
def define_steps():
    from tango import Step
    from tango.format import SqliteSequenceFormat

    class SeqProduce(Step):
        """(a) The records as a random-access sequence: the idiomatic use of
        SqliteSequenceFormat is to return a Sequence (here a list) that the format bulk-inserts
        with one commit (SqliteSparseSequence.extend)."""

        FORMAT = SqliteSequenceFormat()

        def run(self, n: int) -> list:
            return list(records(n))

    class StreamProduce(Step):
        """(b) A streaming step: run() is a generator, stored with the default DillFormat("gz")."""

        def run(self, n: int):
            yield from records(n)

    class HitProduce(Step):
        """(c) A small cached result (1,000 records, default DillFormat("gz"))."""

        def run(self, n: int) -> list:
            return list(records(n))

    class IdStep(Step):
        """(c) A step with a 1,000-element list argument, for the cost of unique_id."""

        def run(self, values: list) -> int:
            return len(values)

    class ChainProduce(Step):
        """(d) step 1: produce the records (default DillFormat("gz"))."""

        def run(self, n: int) -> list:
            return list(records(n))

    class ChainTransform(Step):
        """(d) step 2: text upper-cased, score doubled."""

        def run(self, records: list) -> list:
            return [
                {"id": r["id"], "text": r["text"].upper(), "score": r["score"] * 2.0}
                for r in records
            ]

    class ChainEvaluate(Step):
        """(d) step 3: count, total text bytes, mean score (plain sequential f64 sum)."""

        def run(self, records: list) -> dict:
            count = 0
            text_bytes = 0
            score_sum = 0.0
            for r in records:
                count += 1
                text_bytes += len(r["text"])
                score_sum += r["score"]
            return {
                "count": count,
                "text_bytes": text_bytes,
                "mean_score": score_sum / count if count else 0.0,
            }

    return {
        c.__name__: c
        for c in (
            SeqProduce,
            StreamProduce,
            HitProduce,
            IdStep,
            ChainProduce,
            ChainTransform,
            ChainEvaluate,
        )
    }


def workspace(d):
    from tango.workspaces import LocalWorkspace

    return LocalWorkspace(os.path.join(d, "ws"))


def step_dir(ws, step):
    return ws.step_dir(step)


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------
def seq_write(n, d):
    S = define_steps()
    gen_s = gen_time(n)
    t0 = time.perf_counter()
    ws = workspace(d)
    step = S["SeqProduce"](n=n)
    step.ensure_result(ws)
    write_s = time.perf_counter() - t0
    net = max(write_s - gen_s, 1e-9)
    return {
        "write_s": write_s,
        "gen_s": gen_s,
        "items_per_s": n / net,
        "bytes_on_disk": dir_bytes(step_dir(ws, step)),
        "unique_id": step.unique_id,
    }


def seq_read(n, d):
    S = define_steps()
    idx = random_indices(n)
    t0 = time.perf_counter()
    ws = workspace(d)
    seq = S["SeqProduce"](n=n).result(ws)
    open_s = time.perf_counter() - t0
    assert len(seq) == n, (len(seq), n)

    get_id_sum = 0
    t0 = time.perf_counter()
    for i in idx:
        get_id_sum += seq[i]["id"]
    get_s = time.perf_counter() - t0
    log(f"seq: {len(idx)} random gets in {get_s:.3f}s; iterating {n} items")

    checks = Checks()
    t0 = time.perf_counter()
    for r in seq:
        checks.add(r)
    iter_s = time.perf_counter() - t0
    assert checks.count == n, (checks.count, n)
    assert seq[n // 2] == record(n // 2)
    return {
        "open_s": open_s,
        "gets": len(idx),
        "get_us": get_s / len(idx) * 1e6,
        "iter_s": iter_s,
        "iter_items_per_s": n / iter_s,
        "check": {**checks.as_dict(), "get_id_sum": get_id_sum},
    }


def stream_write(n, d):
    S = define_steps()
    gen_s = gen_time(n)
    t0 = time.perf_counter()
    ws = workspace(d)
    step = S["StreamProduce"](n=n)
    step.ensure_result(ws)  # consumes the generator while writing data.dill.gz
    write_s = time.perf_counter() - t0
    net = max(write_s - gen_s, 1e-9)
    return {
        "write_s": write_s,
        "gen_s": gen_s,
        "items_per_s": n / net,
        "bytes_on_disk": dir_bytes(step_dir(ws, step)),
        "unique_id": step.unique_id,
    }


def stream_read(n, d):
    S = define_steps()
    t0 = time.perf_counter()
    ws = workspace(d)
    it = iter(S["StreamProduce"](n=n).result(ws))
    first = next(it)
    first_item_s = time.perf_counter() - t0
    checks = Checks()
    checks.add(first)
    for r in it:
        checks.add(r)
    iter_s = time.perf_counter() - t0
    assert checks.count == n, (checks.count, n)
    return {
        "first_item_s": first_item_s,
        "iter_s": iter_s,
        "iter_items_per_s": n / iter_s,
        "check": checks.as_dict(),
    }


HIT_N = 1_000


def hit_prepare(n, d):
    S = define_steps()
    t0 = time.perf_counter()
    ws = workspace(d)
    step = S["HitProduce"](n=HIT_N)
    step.ensure_result(ws)
    return {
        "write_s": time.perf_counter() - t0,
        "bytes_on_disk": dir_bytes(step_dir(ws, step)),
        "unique_id": step.unique_id,
    }


def hit_fetch(n, d):
    S = define_steps()
    t0 = time.perf_counter()
    ws = workspace(d)
    result = S["HitProduce"](n=HIT_N).result(ws)
    fetch_s = time.perf_counter() - t0
    checks = Checks()
    for r in result:
        checks.add(r)
    assert checks.count == HIT_N
    return {"fetch_s": fetch_s, "check": checks.as_dict()}


def hit_id(n, d):
    S = define_steps()
    IdStep = S["IdStep"]
    values = list(range(ID_LIST_LEN))
    IdStep(values=values).unique_id  # warm up (lazy imports in det_hash)
    times = []
    uid = None
    for _ in range(ID_REPEATS):
        t0 = time.perf_counter()
        # step_name given => unique_id is computed lazily on first access, not in __init__;
        # the timing covers construction + id, i.e. the cost of an id on a new Step object.
        step = IdStep(values=values, step_name="id")
        uid = step.unique_id
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "ids": ID_REPEATS,
        "list_len": ID_LIST_LEN,
        "id_us": sum(times) / len(times) * 1e6,
        "id_us_median": times[len(times) // 2] * 1e6,
        "unique_id": uid,
    }


def chain_graph(S, n):
    produce = S["ChainProduce"](n=n, step_name="produce")
    transform = S["ChainTransform"](records=produce, step_name="transform")
    evaluate = S["ChainEvaluate"](records=transform, step_name="evaluate")
    return produce, transform, evaluate


def chain_run(n, d, expect_cached):
    from tango.executor import Executor
    from tango.step_graph import StepGraph

    S = define_steps()
    t0 = time.perf_counter()
    ws = workspace(d)
    steps = chain_graph(S, n)
    cached_before = sum(1 for s in steps if s in ws.step_cache)
    # What `tango run` does, minus run registration: the default Executor over the graph.
    out = Executor(workspace=ws).execute_step_graph(StepGraph({s.name: s for s in steps}))
    run_s = time.perf_counter() - t0
    if out.failed or out.not_run:
        raise RuntimeError(f"chain failed: failed={out.failed} not_run={out.not_run}")
    if expect_cached and cached_before != len(steps):
        raise RuntimeError(f"second run: only {cached_before}/{len(steps)} steps were cached")
    result = steps[-1].result(ws)  # outside the timing: only to cross-check the value
    return {
        "run_s": run_s,
        "steps_run": len(steps) - cached_before,
        "result": result,
    }


WORKLOADS = {
    ("seq", "write"): seq_write,
    ("seq", "read"): seq_read,
    ("stream", "write"): stream_write,
    ("stream", "read"): stream_read,
    ("hit", "prepare"): hit_prepare,
    ("hit", "fetch"): hit_fetch,
    ("hit", "id"): hit_id,
    ("chain", "run1"): lambda n, d: chain_run(n, d, expect_cached=False),
    ("chain", "run2"): lambda n, d: chain_run(n, d, expect_cached=True),
}


def main(argv):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workload", choices=sorted({w for w, _ in WORKLOADS} | {"records"}))
    p.add_argument("phase", nargs="?")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dir", default=".")
    a = p.parse_args(argv)

    if a.workload == "records":
        for r in records(a.n):
            print(json.dumps(r))
        return 0
    fn = WORKLOADS.get((a.workload, a.phase))
    if fn is None:
        p.error(f"unknown phase {a.phase!r} for workload {a.workload!r}")
    os.makedirs(a.dir, exist_ok=True)
    out = {"system": "tango", "workload": a.workload, "phase": a.phase, "n": a.n}
    out.update(fn(a.n, a.dir))
    out["peak_rss_self_bytes"] = self_peak_rss_bytes()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
