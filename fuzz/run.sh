#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a share of a time budget.
#
#   fuzz/run.sh [--ci] [--seconds N] [TARGET...]
#
#   --seconds N  total fuzzing time, split evenly across the targets (default 600)
#   --ci         a short run for CI: 26 seconds of fuzzing in all (2 s per target; about
#                30 s of wall time with libFuzzer's start-up), after the build, from a fixed
#                seed (FUZZ_SEED, default 1): every CI run tries the same inputs first, so a
#                CI failure reproduces; exploring new inputs is what the longer runs are for
#   TARGET...    only these targets (default: every target in fuzz/fuzz_targets/)
#
# Works on the stable toolchain: cargo-fuzz needs nightly-only flags (-Z), which
# RUSTC_BOOTSTRAP=1 allows on stable. The sanitizer is off by default (FUZZ_SANITIZER=none):
# debug assertions and overflow checks stay on, the build is much faster, and the code under
# test is safe Rust apart from one memory map. FUZZ_SANITIZER=address turns ASan on.
#
# Each target's corpus starts from fuzz/regressions/<target>/ and grows in fuzz/corpus/<target>/
# (not committed). A crash stops that target, is saved by libFuzzer in fuzz/artifacts/<target>/,
# and makes the script exit non-zero after the other targets ran. Copy the crashing input to
# fuzz/regressions/<target>/ once it is fixed: `cargo test -p milonga-tests --test
# fuzz_regressions` replays that folder without cargo-fuzz.
#
# The format targets are the SDK's FormatFuzzer (milonga_sdk::testing::fuzz) with an allocation
# meter that refuses any single request over 1 GiB while a read runs: a lying length field is
# a crash (SIGABRT, "milonga-kit: refused one allocation of N bytes") with the input saved,
# not a swapping machine. The demonstration targets in fuzz/demo_targets/ (feature `demo`) are
# not built here. CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

total=600
targets=()
seed_args=()
[ -z "${FUZZ_SEED:-}" ] || seed_args=(-seed="$FUZZ_SEED")
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) total=26; seed_args=(-seed="${FUZZ_SEED:-1}") ;;
    --seconds) total="${2:?--seconds needs a number}"; shift ;;
    --seconds=*) total="${1#--seconds=}" ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done

export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
  done
fi

share=$(( total / ${#targets[@]} ))
[ "$share" -ge 1 ] || share=1

echo "==> building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
start=$(date +%s)
# Short runs (CI) build at opt-level 1: the build is most of such a run, and the seconds saved
# there are worth more than the slower executions (runs of a minute or more keep opt-level 3).
if [ "$total" -le 60 ] && [ -z "${CARGO_PROFILE_RELEASE_OPT_LEVEL:-}" ]; then
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
fi
cargo fuzz build -s "$sanitizer"
echo "    built in $(( $(date +%s) - start )) s"

# The built binaries run directly: `cargo fuzz run` would check the build again per target.
bin_dir="${CARGO_TARGET_DIR:-fuzz/target}/$(rustc -vV | sed -n 's/^host: //p')/release"
fuzz_start=$(date +%s)
failed=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  seeds="fuzz/regressions/$t"
  mkdir -p "$corpus" "$seeds" "fuzz/artifacts/$t"
  echo "==> fuzzing $t for ${share} s"
  log="fuzz/artifacts/$t/last-run.log"
  # -rss_limit_mb: a decode that allocates what a length field says fails here as OOM.
  if [ -x "$bin_dir/$t" ]; then
    run=("$bin_dir/$t")
  else
    run=(cargo fuzz run -s "$sanitizer" "$t" --)
  fi
  if "${run[@]}" "$corpus" "$seeds" \
      -max_total_time="$share" ${seed_args[@]+"${seed_args[@]}"} -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="fuzz/artifacts/$t/" \
      -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^Done|number_of_executed_runs|new_units_added' "$log" || true
  else
    failed+=("$t")
    grep -E -A8 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -n 60 || true
    tail -n 12 "$log"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "==> FAILED: ${failed[*]}" >&2
  for t in "${failed[@]}"; do
    ls -1 "fuzz/artifacts/$t" >&2 || true
    # The log may be all that is left of a CI machine: print small crashing inputs so that
    # they can be rebuilt with `base64 -d`.
    for f in "fuzz/artifacts/$t"/crash-* "fuzz/artifacts/$t"/oom-* "fuzz/artifacts/$t"/timeout-*; do
      [ -f "$f" ] || continue
      if [ "$(wc -c <"$f")" -le 65536 ]; then
        echo "--- $f (base64):" >&2
        base64 -w 0 "$f" >&2
        echo >&2
      fi
    done
  done
  echo "Reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run -s $sanitizer <target> <file>;" \
    "after the fix, copy the file to fuzz/regressions/<target>/." >&2
  exit 1
fi
echo "==> fuzzing found nothing in ${#targets[@]} targets: ${share} s each," \
  "$(( $(date +%s) - fuzz_start )) s of fuzzing, $(( $(date +%s) - start )) s with the build"
