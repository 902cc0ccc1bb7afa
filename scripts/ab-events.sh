#!/usr/bin/env bash
# Times one benches/events.rs case in two builds of the bench binary, alternating, pinned to one
# core, and prints the minimum and median ns per record of each and their ratios. On a shared VM
# whose speed drifts by 10 to 40% over minutes, runs of two builds side by side, many times, are
# what can be compared; criterion's single long runs of one build at a time are not.
#
# Usage: scripts/ab-events.sh OLD_BIN NEW_BIN CASE [RECORDS] [ROUNDS]
#   OLD_BIN, NEW_BIN  copies of target/release/deps/events-* built from the two commits
#                     (`cargo bench --bench events --no-run` prints the path)
#   CASE              a case name, as scripts/count-events.sh lists them (e.g. pickle_plain_V1)
#   RECORDS           records per run (default 1000000); ROUNDS: runs of each (default 15)
set -euo pipefail
old=$1
new=$2
case=$3
records=${4:-1000000}
rounds=${5:-15}
cpu=$(($(nproc) - 1))
for _ in $(seq "$rounds"); do
    for side in old new; do
        bin=${!side}
        start=$(date +%s%N)
        EVENTS_COUNT=$records taskset -c "$cpu" "$bin" "$case" >/dev/null
        end=$(date +%s%N)
        echo "$side $(((end - start) * 1000 / records))"
    done
done | python3 -c '
import statistics, sys
runs = {"old": [], "new": []}
for line in sys.stdin:
    side, ps = line.split()
    runs[side].append(int(ps) / 1000)
for side in ("old", "new"):
    print("%-4s min %7.1f ns  median %7.1f ns" % (side, min(runs[side]), statistics.median(runs[side])))
print("new/old  min %.3f  median %.3f" % (
    min(runs["new"]) / min(runs["old"]),
    statistics.median(runs["new"]) / statistics.median(runs["old"])))
'
