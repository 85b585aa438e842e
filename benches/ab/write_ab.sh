#!/usr/bin/env bash
# Write and read throughput of two builds of `milonga-compare`, interleaved in one run so that
# both see the same machine: stream and SQLite-sequence writes of N records into a fresh local
# workspace, then the stream's full iteration in a fresh process.
#
#   benches/ab/write_ab.sh OLD_BINARY NEW_BINARY [N] [ROUNDS]
#
# Build OLD_BINARY from an earlier commit in a worktree of its own, e.g.
#   git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target \
#     cargo build --release -p milonga-benches --bin milonga-compare)
# Prints the items/s of every run and the median of each (build, workload).
set -euo pipefail
old=${1:?old binary}; new=${2:?new binary}; n=${3:-1000000}; rounds=${4:-5}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
declare -A runs
for r in $(seq "$rounds"); do
  for w in stream seq; do
    for b in old new; do
      bin=$old; [ "$b" = new ] && bin=$new
      rm -rf "$tmp/d"; mkdir -p "$tmp/d"
      ips=$("$bin" "$w" write --n "$n" --dir "$tmp/d" 2>/dev/null | tail -n 1 |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["items_per_s"]))')
      echo "round $r $w write $b: $ips items/s"
      runs[$w.$b]="${runs[$w.$b]:-} $ips"
      if [ "$w" = stream ]; then
        ips=$("$bin" stream read --n "$n" --dir "$tmp/d" 2>/dev/null | tail -n 1 |
          python3 -c 'import json,sys; print(round(json.load(sys.stdin)["iter_items_per_s"]))')
        echo "round $r stream read $b: $ips items/s"
        runs[read.$b]="${runs[read.$b]:-} $ips"
      fi
    done
  done
done
for k in stream.old stream.new seq.old seq.new read.old read.new; do
  med=$(printf '%s\n' ${runs[$k]} | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "median $k: $med items/s"
done
