#!/usr/bin/env bash
# Comparison runner: a named scenario matrix (engines x scenarios, where a scenario is
# TRANSPORT-FORMAT-RATE) against release pystash and a private redis-server, printing one
# markdown table and writing one overlaid latency plot.
#
#   scripts/loadtest-matrix.sh                      # the default matrix, about a minute
#   SCENARIOS="udp-pickle-100k tcp-json-max" DURATION=10s scripts/loadtest-matrix.sh
#   ENGINES="epoll uring" scripts/loadtest-matrix.sh   # when pystash has --io-engine
#
# Variables:
#   ENGINES    pystash engines; "default" runs pystash without --io-engine (default: default)
#   SCENARIOS  TRANSPORT-FORMAT-RATE names: transport udp|tcp|unix, format pickle|json,
#              rate like 20k, 100k or max (default: see below)
#   DURATION   how long each rated scenario sends (default 5s)
#   MAX_COUNT  records each "max" scenario sends (default 200k)
#   SIZE       record sizes (default 800..1600)
#   EXTRA      more pystash-loadtest flags for every run, e.g. "--connections 4 --senders 2"
#   PLOT_FLAGS flags for the plot (default --log-y: rated and max runs differ by 100x)
#   OUT        output directory (default target/loadtest/matrix-DATE)
#   SKIP_BUILD=1  use the release binaries already built
# Every run is bounded by `timeout`; the default matrix stays well under 3 minutes after the
# build.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINES=${ENGINES:-default}
SCENARIOS=${SCENARIOS:-"udp-pickle-20k udp-pickle-100k tcp-pickle-100k tcp-json-100k unix-pickle-100k udp-pickle-max tcp-pickle-max"}
DURATION=${DURATION:-5s}
MAX_COUNT=${MAX_COUNT:-200k}
SIZE=${SIZE:-800..1600}
EXTRA=${EXTRA:-}
OUT=${OUT:-target/loadtest/matrix-$(date +%Y%m%d-%H%M%S)}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
PLOT_FLAGS=${PLOT_FLAGS:---log-y}

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -p pystash -p pystash-loadtest
fi
PYSTASH=target/release/pystash
LOADTEST=target/release/pystash-loadtest
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

REDIS_PID="" PYSTASH_PID=""
cleanup() {
  [ -n "$PYSTASH_PID" ] && kill "$PYSTASH_PID" 2>/dev/null && wait "$PYSTASH_PID" 2>/dev/null
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  true
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
wait_port "$REDIS_PORT" "$REDIS_PID" || { echo "redis-server did not start" >&2; exit 1; }

if [ "$ENGINES" != default ] && ! "$PYSTASH" --help | grep -q -- --io-engine; then
  echo "this pystash has no --io-engine flag; use ENGINES=default" >&2
  exit 1
fi

summaries=()
for engine in $ENGINES; do
  read -r TCP_PORT UDP_PORT < <(free_ports 2)
  SOCK="$OUT/pystash-$engine.sock"
  engine_flag=()
  [ "$engine" != default ] && engine_flag=(--io-engine "$engine")
  "$PYSTASH" --bind-ip 127.0.0.1 --tcp-port "$TCP_PORT" --udp-port "$UDP_PORT" --unix "$SOCK" \
    --redis-host 127.0.0.1 --redis-port "$REDIS_PORT" --stats-interval 0 "${engine_flag[@]}" \
    2>"$OUT/pystash-$engine.log" &
  PYSTASH_PID=$!
  wait_port "$TCP_PORT" "$PYSTASH_PID" || { echo "pystash ($engine) did not start" >&2; exit 1; }

  for scenario in $SCENARIOS; do
    IFS=- read -r transport format rate <<<"$scenario"
    case "$transport" in
      udp) target=127.0.0.1:$UDP_PORT ;;
      tcp) target=127.0.0.1:$TCP_PORT ;;
      unix) target=$SOCK ;;
      *) echo "scenario $scenario: transport must be udp, tcp or unix" >&2; exit 1 ;;
    esac
    if [ "$rate" = max ]; then bound=(--count "$MAX_COUNT"); else bound=(--duration "$DURATION"); fi
    label="$engine-$scenario"
    echo "== $label" >&2
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    timeout "$RUN_TIMEOUT" "$LOADTEST" --transport "$transport" --target "$target" --format "$format" \
      --rate "$rate" "${bound[@]}" --size "$SIZE" --redis "redis://127.0.0.1:$REDIS_PORT" \
      --flush-queue --drain-timeout 10s --label "$label" --out "$OUT" --quiet $EXTRA \
      >"$OUT/$label.txt" 2>&1 || echo "   ($label exited $?: see $OUT/$label.txt)" >&2
    grep -v '^wrote ' "$OUT/$label.txt" >&2 || true
    [ -f "$OUT/$label.json" ] && summaries+=("$OUT/$label.json")
  done

  kill "$PYSTASH_PID"
  wait "$PYSTASH_PID" 2>/dev/null || true
  PYSTASH_PID=""
  grep -h "pystash stats" "$OUT/pystash-$engine.log" | tail -1 | sed "s/^/   $engine: /" >&2 || true
done

((${#summaries[@]})) || { echo "no run produced a summary" >&2; exit 1; }
"$LOADTEST" report "${summaries[@]}" | tee "$OUT/table.md"
# shellcheck disable=SC2086 # PLOT_FLAGS is a list of flags
"$LOADTEST" plot "${summaries[@]}" -o "$OUT/latency.svg" --title "pystash end-to-end latency ($ENGINES)" $PLOT_FLAGS 2>/dev/null
if command -v rsvg-convert >/dev/null; then
  rsvg-convert "$OUT/latency.svg" -o "$OUT/latency.png"
fi
echo "table: $OUT/table.md  plot: $OUT/latency.svg" >&2
