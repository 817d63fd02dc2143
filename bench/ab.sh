#!/usr/bin/env bash
# A/B of two core_loop builds on this noisy host: runs them alternately, PAIRS times each
# (6 rounds a run, the first dropped as warm-up), and prints each build's median, 75th
# percentile and best records/s over all kept rounds. Copy each build's
# target/release/core_loop aside first.
#   bench/ab.sh A_BINARY B_BINARY [PAIRS=6] [CARDS=200000]
set -euo pipefail
a=$1; b=$2; pairs=${3:-6}; cards=${4:-200000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$pairs"); do
  for x in "$a" "$b"; do
    "$x" 6 "$cards" grouped | tail -5 | awk -v n="$x" '{print n, $3}'
  done
done > "$out"
for x in "$a" "$b"; do
  grep "^$x " "$out" | awk '{print $2}' | sort -n |
    awk -v n="$x" '{v[NR]=$1} END {printf "%s median %.0f p75 %.0f best %.0f (n=%d)\n", n, v[int((NR+1)/2)], v[int(NR*3/4)], v[NR], NR}'
done
