#!/usr/bin/env bash
# pystash demo on a bare Debian machine with a Rust toolchain: installs redis-server if missing,
# builds pystash, starts a private redis-server and pystash on free 127.0.0.1 ports, logs a few
# records from a stdlib-only Python app through SocketHandler (TCP) and DatagramHandler (UDP),
# prints the events pystash pushed to Redis, and stops everything it started, by PID.
#
#   scripts/demo.sh                       # release build, as a user would run it
#   PYSTASH_PROFILE=debug scripts/demo.sh # reuse the debug build
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PYSTASH_PROFILE:-release}"
queue="demo"

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "== installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== building pystash ($profile)"
if [ "$profile" = release ]; then
  cargo build --release --quiet
else
  cargo build --quiet
fi
bin="${CARGO_TARGET_DIR:-target}/$profile/pystash"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS COMMAND...: retries COMMAND every 0.1 s until it succeeds or time runs out.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.1
  done
}

read -r redis_port tcp_port udp_port < <(free_ports 3)

echo "== redis-server on 127.0.0.1:$redis_port"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$work" --logfile "$work/redis.log" --daemonize no &
pids+=($!)
rcli() { redis-cli -h 127.0.0.1 -p "$redis_port" "$@"; }
redis_up() { [ "$(rcli ping 2>/dev/null)" = PONG ]; }
if ! wait_for 10 redis_up; then
  echo "redis-server did not start:"
  cat "$work/redis.log"
  exit 1
fi

echo "== pystash: TCP $tcp_port, UDP $udp_port -> Redis list '$queue'"
"$bin" --bind-ip 127.0.0.1 --tcp-port "$tcp_port" --udp-port "$udp_port" \
  --redis-host 127.0.0.1 --redis-port "$redis_port" --redis-queue "$queue" \
  --logstash-tags demo 2>"$work/pystash.log" &
pystash_pid=$!
pids+=("$pystash_pid")
if ! wait_for 20 grep -q "pystash listening" "$work/pystash.log"; then
  echo "pystash did not start:"
  cat "$work/pystash.log"
  exit 1
fi

echo "== a Python app logs 5 records (standard library only)"
cat >"$work/app.py" <<'PY'
import datetime
import logging
import logging.handlers
import sys

tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])

log = logging.getLogger("demo.app")
log.setLevel(logging.DEBUG)
tcp = logging.handlers.SocketHandler("127.0.0.1", tcp_port)
log.addHandler(tcp)

log.info("user %s logged in", "ada", extra={"request_id": 42, "tags": ["auth"]})
log.warning("disk %d%% full", 91, extra={"when": datetime.datetime(2024, 5, 1, 12, 0, 3)})
try:
    1 / 0
except ZeroDivisionError:
    log.exception("division failed")
log.debug("how did we get here?", stack_info=True)
tcp.close()
log.removeHandler(tcp)

udp = logging.handlers.DatagramHandler("127.0.0.1", udp_port)
log.addHandler(udp)
log.error("sent over UDP: h\u00e9llo \u2713 \u65e5\u672c")
udp.close()
PY
python3 "$work/app.py" "$tcp_port" "$udp_port"

all_arrived() { [ "$(rcli llen "$queue")" -ge 5 ]; }
if ! wait_for 10 all_arrived; then
  echo "only $(rcli llen "$queue") of 5 events arrived; pystash said:"
  cat "$work/pystash.log"
  exit 1
fi

echo "== events in Redis (redis-cli LRANGE $queue 0 -1)"
rcli --raw lrange "$queue" 0 -1 | python3 -c '
import json, sys
for line in sys.stdin:
    if line.strip():
        print(json.dumps(json.loads(line), indent=2, ensure_ascii=False))
'

echo "== stopping pystash (SIGTERM)"
kill -TERM "$pystash_pid"
wait "$pystash_pid" || true
grep "pystash stats" "$work/pystash.log" | tail -n 1
