#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another, each for SECONDS, and prints for each
# the inputs run, the speed and whether it crashed. Exits non-zero if any target crashed; the
# crashing input is in fuzz/artifacts/<target>/ (minimise it with `cargo fuzz tmin`, then add it
# to fuzz/seeds/<target>/ so tests/fuzz_corpus.rs keeps it fixed).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default: 600 s, every target)
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take the nightly-only flags
# cargo-fuzz passes (-Zsanitizer=address, sanitizer coverage). Each target starts from the
# committed seeds (fuzz/seeds/<target>/, read only) plus the corpus earlier runs grew
# (fuzz/corpus/<target>/, not committed). Environment: FUZZ_SANITIZER (address; `none` skips
# ASan, untried here), FUZZ_ARGS (more libFuzzer flags, e.g. `-jobs=2 -workers=2`).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(framing pickle json_event resp_reply)
fi
sanitizer=${FUZZ_SANITIZER:-address}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# -O: optimised; -a: with debug assertions and overflow checks, so they are fuzzed too.
build=(-O -a -s "$sanitizer")
cargo fuzz build "${build[@]}"

logs=fuzz/target/logs
mkdir -p "$logs"
summary=()
failed=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log="$logs/$target.log"
  echo "== $target: up to ${seconds} s ($log)"
  rc=0
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  cargo fuzz run "${build[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 ${FUZZ_ARGS:-} \
    >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
  if ((rc == 0)); then
    result="ok"
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    result="CRASHED (exit $rc) ${artifact:-see $log}"
    grep -m1 -A3 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)" "$log" || true
  fi
  line="$target: ${runs:-?} runs, ${speed:-?} exec/s, corpus $corpus, $result"
  echo "$line"
  summary+=("$line")
done

echo "== summary (sanitizer $sanitizer, $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD))"
printf '%s\n' "${summary[@]}"
exit "$failed"
