#!/usr/bin/env bash
# Compares the proxy CPU per record of two pystash builds end to end, in alternating pairs: on a
# shared VM whose speed drifts by 10 to 40% over minutes, only runs side by side compare.
#
# Usage: scripts/ab-e2e.sh OLD_BIN NEW_BIN [PAIRS] [COUNT]
#   OLD_BIN, NEW_BIN  two `pystash` binaries (e.g. target/release/pystash built at two commits)
#   PAIRS             pairs per scenario (default 8); COUNT: TCP records per run (default 1M)
#   FORMATS           (environment) the formats to run, default "pickle json"
#   TRANSPORT         (environment) tcp (default) or udp; UDP_RATE: datagrams/s (default 150k)
#
# Scenarios: pickles and JSON (370-byte records), each engine; over TCP at the maximum rate
# from 4 connections, COUNT records; over UDP at UDP_RATE for 5 s from 2 senders. Every run
# starts a fresh proxy against one redis-server, warms up (50k records), then sends with
# `pystash-loadtest`; CPU is the proxy's user+system time from /proc/PID/stat around that run. Prints each run, then per scenario the medians of each build
# and the median of the per-pair ratios (new / old). Everything listens on 127.0.0.1; every
# process started here is ended by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
old=$(realpath "$1")
new=$(realpath "$2")
pairs=${3:-8}
count=${4:-1M}
formats=${FORMATS:-pickle json}
transport=${TRANSPORT:-tcp}
udp_rate=${UDP_RATE:-150k}
cargo build --release -q -p pystash-loadtest
loadtest=target/release/pystash-loadtest
out=$(mktemp -d)
read -r redis_port tcp_port udp_port <<<"$(free_ports 3)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --logfile "$out/redis.log" &
redis_pid=$!
# The runs happen in subshells (a pipeline, command substitutions): the proxy's PID goes
# through a file so that an interrupted run still ends it.
cleanup() {
  [ -s "$out/proxy.pid" ] && kill "$(cat "$out/proxy.pid")" 2>/dev/null
  kill "$redis_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$out"
}
trap cleanup EXIT
wait_port "$redis_port" "$redis_pid"

# run BIN ENGINE FORMAT: one measured run; prints "delivered_per_sec cpu_us_per_record lost",
# or "nan nan -1" when it failed (its stderr says why).
run() {
  "$1" --redis-host 127.0.0.1 --redis-port "$redis_port" --tcp-port "$tcp_port" \
    --udp-port "$udp_port" --io-engine "$2" --stats-interval 0 >"$out/proxy.log" 2>&1 &
  local proxy_pid=$!
  echo "$proxy_pid" >"$out/proxy.pid"
  local send=("$loadtest" --format "$3" --size 370..370 --redis "redis://127.0.0.1:$redis_port"
    --flush-queue --json) warm measure
  if [ "$transport" = udp ]; then
    send+=(--transport udp --target "127.0.0.1:$udp_port" --senders 2)
    warm=(--rate 50k --duration 1s)
    measure=(--rate "$udp_rate" --duration 5s)
  else
    send+=(--transport tcp --target "127.0.0.1:$tcp_port" --rate max --connections 4)
    warm=(--count 50k)
    measure=(--count "$count")
  fi
  local before=0 after=0
  rm -f "$out/run.json"
  if wait_port "$tcp_port" "$proxy_pid" && "${send[@]}" "${warm[@]}" >/dev/null 2>&1; then
    before=$(awk '{print $14 + $15}' "/proc/$proxy_pid/stat")
    "${send[@]}" "${measure[@]}" >"$out/run.json" 2>"$out/run.err" || tail -1 "$out/run.err" >&2
    after=$(awk '{print $14 + $15}' "/proc/$proxy_pid/stat")
  else
    echo "$1 did not start or take the warm-up: $(tail -1 "$out/proxy.log")" >&2
  fi
  kill -TERM "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
  : >"$out/proxy.pid"
  python3 - "$out/run.json" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    ticks = float(sys.argv[3]) - float(sys.argv[2])
    us = ticks / float(sys.argv[4]) * 1e6 / d["delivered"]
    print("%.0f %.3f %d" % (d["delivered_per_sec"], us, d["lost"]))
except (OSError, ValueError, KeyError, ZeroDivisionError):
    print("nan nan -1")
PY
}

for i in $(seq "$pairs"); do
  for format in $formats; do
    for engine in epoll uring; do
      for side in old new; do
        bin=${!side}
        echo "$side $i $format $engine $(run "$bin" "$engine" "$format")"
      done
    done
  done
done | tee "$out/runs.txt"
if [ "$transport" = udp ]; then label="UDP, $udp_rate/s"; else label="TCP, max rate"; fi
python3 - "$out/runs.txt" "$label" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    side, i, fmt, engine, rate, cpu, lost = line.split()
    if int(lost) >= 0:
        runs[(fmt, engine)][(side, int(i))] = (float(rate), float(cpu), int(lost))
print("\n| %s | old µs/record | new µs/record | new ÷ old (median of pairs) | old rec/s | new rec/s | lost |" % sys.argv[2])
print("|---|---:|---:|---:|---:|---:|---:|")
for (fmt, engine), v in sorted(runs.items()):
    n = sorted(i for s, i in v if s == "old" and ("new", i) in v)
    if not n:
        continue
    med = lambda side, k: statistics.median(v[(side, i)][k] for i in n)
    ratio = statistics.median(v[("new", i)][1] / v[("old", i)][1] for i in n)
    lost = sum(v[(s, i)][2] for s in ("old", "new") for i in n)
    print("| %s, %s | %.2f | %.2f | %.2f | %.0fk | %.0fk | %d |" % (
        fmt, engine, med("old", 1), med("new", 1), ratio, med("old", 0) / 1e3, med("new", 0) / 1e3, lost))
PY
