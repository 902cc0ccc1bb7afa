#!/usr/bin/env bash
# What the proxy's path costs without its codecs: builds pystash as usual and with
# `--cfg pystash_io_floor` (JSON lines become a fixed event of the usual size carrying the load
# generator's stamps, with no decoding or formatting), then compares the two end to end:
#   - TCP JSON at the maximum rate, both engines, alternating pairs (scripts/ab-tcp.sh);
#   - UDP JSON at UDP_RATE (default 150k/s) for 5 s from 2 senders, both engines, alternating.
# CPU is the proxy's user+system time per delivered record, from /proc/PID/stat.
#
# Usage: scripts/io-floor.sh [PAIRS] [COUNT]   (defaults 4 and 1M; COUNT is for TCP)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
pairs=${1:-4}
count=${2:-1M}
udp_rate=${UDP_RATE:-150k}
cargo build --release -q -p pystash -p pystash-loadtest
full=target/release/pystash
floor=target/io-floor/release/pystash
RUSTFLAGS="${RUSTFLAGS:-} --cfg pystash_io_floor" CARGO_TARGET_DIR=target/io-floor \
  cargo build --release -q -p pystash
echo "old = full proxy, new = io-floor build (sockets, framing, pipeline and pushes only)"
FORMATS=json scripts/ab-tcp.sh "$full" "$floor" "$pairs" "$count"

out=$(mktemp -d)
read -r redis_port tcp_port udp_port <<<"$(free_ports 3)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --logfile "$out/redis.log" &
redis_pid=$!
cleanup() {
  [ -s "$out/proxy.pid" ] && kill "$(cat "$out/proxy.pid")" 2>/dev/null
  kill "$redis_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$out"
}
trap cleanup EXIT
wait_port "$redis_port" "$redis_pid"

# udp BIN ENGINE: prints "cpu_us_per_datagram lost p50_ms p99_ms", or "nan -1 nan nan".
udp() {
  "$1" --redis-host 127.0.0.1 --redis-port "$redis_port" --tcp-port "$tcp_port" \
    --udp-port "$udp_port" --io-engine "$2" --stats-interval 0 >"$out/proxy.log" 2>&1 &
  local proxy_pid=$!
  echo "$proxy_pid" >"$out/proxy.pid"
  local send=(target/release/pystash-loadtest --transport udp --target "127.0.0.1:$udp_port"
    --format json --senders 2 --size 370..370 --redis "redis://127.0.0.1:$redis_port"
    --flush-queue --json)
  local before=0 after=0
  rm -f "$out/run.json"
  if wait_port "$tcp_port" "$proxy_pid" && "${send[@]}" --rate 50k --duration 1s >/dev/null 2>&1; then
    before=$(awk '{print $14 + $15}' "/proc/$proxy_pid/stat")
    "${send[@]}" --rate "$udp_rate" --duration 5s >"$out/run.json" 2>"$out/run.err" ||
      tail -1 "$out/run.err" >&2
    after=$(awk '{print $14 + $15}' "/proc/$proxy_pid/stat")
  fi
  kill -TERM "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
  : >"$out/proxy.pid"
  python3 - "$out/run.json" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    us = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4]) * 1e6 / d["delivered"]
    print("%.3f %d %.2f %.2f" % (us, d["lost"], d["latency_ms"]["p50"], d["latency_ms"]["p99"]))
except (OSError, ValueError, KeyError, ZeroDivisionError):
    print("nan -1 nan nan")
PY
}

echo
echo "UDP JSON at $udp_rate/s for 5 s, 2 senders: side pair engine cpu_us lost p50_ms p99_ms"
for i in $(seq "$pairs"); do
  for engine in epoll uring; do
    for side in full floor; do
      echo "$side $i $engine $(udp "${!side}" "$engine")"
    done
  done
done | tee "$out/udp.txt"
python3 - "$out/udp.txt" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    side, i, engine, cpu, lost, _, _ = line.split()
    if int(lost) >= 0:
        runs[engine][(side, int(i))] = float(cpu)
print("\n| UDP JSON | full µs/datagram | io-floor µs/datagram | floor ÷ full (median of pairs) |")
print("|---|---:|---:|---:|")
for engine, v in sorted(runs.items()):
    n = sorted(i for s, i in v if s == "full" and ("floor", i) in v)
    if n:
        med = lambda side: statistics.median(v[(side, i)] for i in n)
        ratio = statistics.median(v[("floor", i)] / v[("full", i)] for i in n)
        print("| %s | %.2f | %.2f | %.2f |" % (engine, med("full"), med("floor"), ratio))
PY
