#!/usr/bin/env bash
# Fault tests (issue 5): release pystash and pystash-loadtest against a private redis-server,
# with records flowing over TCP and UDP at once (two generators: TCP consumes the list for both,
# UDP sends only), a fault injected mid-stream, and exact counts at the end.
#
#   scripts/faults.sh                                 # every scenario, about 2.5 minutes
#   SCENARIOS="redis-kill proxy-kill" scripts/faults.sh
#
# Scenarios (each a fresh redis-server, pystash and pair of generators):
#   redis-kill        redis-server SIGKILLed for KILL_SECS, restarted (append-only file, fsync
#                     always, so what Redis acknowledged survives); pystash buffer only
#   redis-kill-spool  the same with --spool-dir
#   redis-stop        redis-server SIGSTOPped for STOP_SECS (a hung Redis), then SIGCONT; with
#                     --spool-dir
#   proxy-term        pystash SIGTERMed mid-stream and started again (spool, Redis up)
#   proxy-kill        Redis down from the start; generators paused, pystash SIGKILLed (with
#                     --spool-fsync always); Redis and pystash started, the spool replayed
#   proxy-kill-mid    the same, but Redis is SIGKILLed mid-stream, 1.5 s before pystash
#
# Verdicts (the run exits 1 when one fails):
#   Redis faults: TCP lost == 0 (duplicates allowed: delivery is at-least-once); UDP
#     sent - delivered == what pystash counted (its final `dropped`, plus the kernel's drops on
#     its UDP sockets from /proc/net/udp while pystash has no dropped_kernel counter).
#   Proxy faults: every record pystash counted as received (over both runs), less those it
#     counted as dropped or rejected, is delivered. After SIGKILL, less at most the records it
#     held only in memory at the kill (at most the documented window: 8 x 1,024 records per
#     worker, never more than `pystash_records_buffered`), which
#     with Redis down from the start must be none (proxy-kill: no loss at all).
#     sent - received is what the kernel held or what was sent while no pystash listened.
#   Every scenario also ends with the list empty and pystash holding nothing (buffer, spool).
#
# Variables: RATE (per transport, default 100k), DURATION (seconds of load, 12), FAULT_AT (2),
# KILL_SECS (5), STOP_SECS (10), SIZE (record bytes, default 300: the smallest records),
# ENGINE (pystash --io-engine; default: pystash's own choice), QUIET_DRAIN (how long the consumer
# waits once nothing arrives, default 30s: longer than a restarted pystash takes to flush),
# OUT (default target/faults/DATE), SKIP_BUILD=1.
# Needs redis-server, redis-cli, curl and jq. Every process started here is stopped by its PID
# on exit; each generator is killed if it runs past LOAD_TIMEOUT (90 s).
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${SCENARIOS:-"redis-kill redis-kill-spool redis-stop proxy-term proxy-kill proxy-kill-mid"}
RATE=${RATE:-100k}
DURATION=${DURATION:-12}
FAULT_AT=${FAULT_AT:-2}
KILL_SECS=${KILL_SECS:-5}
STOP_SECS=${STOP_SECS:-10}
SIZE=${SIZE:-300}
QUIET_DRAIN=${QUIET_DRAIN:-30s}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-90}
OUT=${OUT:-target/faults/$(date +%Y%m%d-%H%M%S)}

for tool in redis-server redis-cli curl jq; do
  command -v "$tool" >/dev/null || { echo "faults.sh needs $tool" >&2; exit 2; }
done
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -p pystash -p pystash-loadtest
fi
PYSTASH=$PWD/target/release/pystash
LOADTEST=$PWD/target/release/pystash-loadtest
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# After the uring merge pystash counts kernel UDP drops itself (dropped_kernel, in `dropped`).
if "$PYSTASH" --help | grep -q -- --io-engine; then KERNEL_COUNTED=1; else KERNEL_COUNTED=0; fi
ENGINE_FLAG=()
if [ -n "${ENGINE:-}" ]; then ENGINE_FLAG=(--io-engine "$ENGINE"); fi

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Processes of the current scenario; all stopped on exit, by PID.
REDIS_PID="" PYSTASH_PID="" TCP_PID="" UDP_PID=""
stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -CONT "$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$TCP_PID"; stop_pid "$UDP_PID"; stop_pid "$PYSTASH_PID"; stop_pid "$REDIS_PID"
  TCP_PID="" UDP_PID="" PYSTASH_PID="" REDIS_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_redis() { # DIR [more redis-server flags]
  local dir=$1
  shift
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --dir "$dir" \
    --auto-aof-rewrite-percentage 0 "$@" >>"$dir/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_port "$REDIS_PORT" "$REDIS_PID" 400 || { echo "redis-server did not start" >&2; return 1; }
}

start_pystash() { # LOG
  "$PYSTASH" --bind-ip 127.0.0.1 --tcp-port "$TCP_PORT" --udp-port "$UDP_PORT" \
    --redis-host 127.0.0.1 --redis-port "$REDIS_PORT" --stats-interval 0 \
    --metrics "127.0.0.1:$METRICS_PORT" --shutdown-timeout 30 "${ENGINE_FLAG[@]}" "${PYSTASH_FLAGS[@]}" 2>>"$1" &
  PYSTASH_PID=$!
  wait_port "$TCP_PORT" "$PYSTASH_PID" 400 && return 0
  echo "pystash did not start; the end of $1:" >&2
  tail -n 20 "$1" | sed 's/^/   /' >&2
  return 1
}

# SIGTERM pystash, wait for it; its exit status goes to PYSTASH_STATUS.
term_pystash() {
  PYSTASH_STATUS=0
  kill -TERM "$PYSTASH_PID"
  wait "$PYSTASH_PID" || PYSTASH_STATUS=$?
  PYSTASH_PID=""
}

metric() { # NAME (with labels): value from the metrics endpoint
  { curl -s --max-time 2 "http://127.0.0.1:$METRICS_PORT/metrics" || true; } |
    awk -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}

# Kernel drops on pystash's UDP sockets (one per worker), from /proc/net/udp.
kernel_udp_drops() {
  local hex
  hex=$(printf '%04X' "$UDP_PORT")
  awk -v p=":$hex" 'NR > 1 && substr($2, length($2) - 4) == p { d += $NF } END { print d + 0 }' /proc/net/udp
}

# key=value from a `pystash stats` line (0 when absent: per-reason counters are printed only
# when non-zero).
stat() { # LINE KEY
  tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }'
}
last_stats() { grep -ho 'pystash stats .*' "$1" | tail -1 | sed 's/\x1b\[[0-9;]*m//g'; }

start_load() { # DIR
  local dir=$1 common
  common=(--rate "$RATE" --duration "${DURATION}s" --size "$SIZE" --json --quiet
    --redis "redis://127.0.0.1:$REDIS_PORT")
  # The TCP generator pops the list for both runs (exactly, across Redis faults); the UDP one
  # only sends, its records are tallied by the TCP one under its run id.
  "$LOADTEST" --transport tcp --target "127.0.0.1:$TCP_PORT" "${common[@]}" \
    --consume exact --pop-batch 5000 --wait-redis --drain-timeout 60s --quiet-drain "$QUIET_DRAIN" \
    --label tcp >"$dir/tcp.json" 2>"$dir/tcp.err" &
  TCP_PID=$!
  "$LOADTEST" --transport udp --target "127.0.0.1:$UDP_PORT" "${common[@]}" \
    --no-consume --label udp >"$dir/udp.json" 2>"$dir/udp.err" &
  UDP_PID=$!
}

# Waits for both generators, killing them after LOAD_TIMEOUT seconds (a stuck socket).
wait_load() {
  local deadline=$((SECONDS + LOAD_TIMEOUT))
  while kill -0 "$TCP_PID" 2>/dev/null || kill -0 "$UDP_PID" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "   generators still running after ${LOAD_TIMEOUT}s: killed" >&2
      stop_pid "$TCP_PID"; stop_pid "$UDP_PID"
      break
    fi
    sleep 0.2
  done
  wait "$UDP_PID" 2>/dev/null || true
  wait "$TCP_PID" 2>/dev/null || true
  TCP_PID="" UDP_PID=""
}

ROWS=()
FAILED=0
row() { # scenario transport sent received delivered lost dup counted verdict note
  ROWS+=("$(printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' "$@")")
  [ "$9" = FAIL ] && FAILED=1
  return 0
}

run_scenario() {
  local name=$1 dir spool=0 aof=()
  dir=$OUT/$name
  mkdir -p "$dir/redis"
  read -r REDIS_PORT TCP_PORT UDP_PORT METRICS_PORT < <(free_ports 4)
  PYSTASH_FLAGS=()
  case $name in
    redis-kill) aof=(--appendonly yes --appendfsync always) ;;
    redis-kill-spool) aof=(--appendonly yes --appendfsync always); spool=1 ;;
    redis-stop) spool=1 ;;
    proxy-term) spool=1 ;;
    proxy-kill | proxy-kill-mid) aof=(--appendonly yes --appendfsync always); spool=1
      PYSTASH_FLAGS+=(--spool-fsync always) ;;
    *) echo "unknown scenario $name" >&2; return 1 ;;
  esac
  [ "$spool" = 1 ] && PYSTASH_FLAGS+=(--spool-dir "$dir/spool")
  echo "== $name (pystash ${PYSTASH_FLAGS[*]})" >&2
  # proxy-kill: Redis is down from the start (the consumer waits for it).
  [ "$name" = proxy-kill ] || start_redis "$dir/redis" "${aof[@]}"
  # A port that another process took between the choice and the bind is the host's doing, not
  # pystash's: choose again, once. Any other failure to start fails the run.
  if ! start_pystash "$dir/pystash.log"; then
    grep -q 'cannot listen on' "$dir/pystash.log" || return 1
    read -r TCP_PORT UDP_PORT METRICS_PORT < <(free_ports 3 "$REDIS_PORT")
    echo "--- ports taken; again on tcp $TCP_PORT, udp $UDP_PORT, metrics $METRICS_PORT" >>"$dir/pystash.log"
    start_pystash "$dir/pystash.log"
  fi
  ENGINE_SEEN=$(sed -n 's/.*pystash listening.* engine="\([a-z_]*\)".*/\1/p' "$dir/pystash.log" | head -1)
  start_load "$dir"
  sleep "$FAULT_AT"

  local drops_k=0 recv1=0 dropped1=0 kernel1=0 window=0 window0=0 s1="" note=""
  case $name in
    redis-kill*)
      kill -KILL "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
      echo "   redis-server killed; back in ${KILL_SECS}s" >&2
      sleep "$KILL_SECS"
      start_redis "$dir/redis" "${aof[@]}"
      ;;
    redis-stop)
      kill -STOP "$REDIS_PID"
      echo "   redis-server stopped for ${STOP_SECS}s" >&2
      sleep "$STOP_SECS"
      kill -CONT "$REDIS_PID"
      ;;
    proxy-term)
      drops_k=$(kernel_udp_drops)
      term_pystash
      s1=$(last_stats "$dir/pystash.log")
      echo "   pystash SIGTERMed (exit $PYSTASH_STATUS): $s1" >&2
      [ "$PYSTASH_STATUS" = 0 ] || note="first pystash exited $PYSTASH_STATUS; "
      [ "$(stat "$s1" dropped_shutdown)" = 0 ] || note+="dropped_shutdown=$(stat "$s1" dropped_shutdown); "
      recv1=$(stat "$s1" received)
      dropped1=$(($(stat "$s1" dropped) + $(stat "$s1" rejected)))
      kernel1=$(stat "$s1" dropped_kernel)
      echo "--- restart" >>"$dir/pystash.log"
      start_pystash "$dir/pystash.log"
      ;;
    proxy-kill*)
      if [ "$name" = proxy-kill-mid ]; then
        window0=$(metric pystash_records_buffered)
        kill -KILL "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
        echo "   redis-server killed with $window0 records in pystash's memory" >&2
        note="in memory at the Redis kill $window0; "
        sleep 1.5
      fi
      # Pause the generators so that what pystash took in is known exactly at the kill.
      kill -STOP "$TCP_PID" "$UDP_PID"
      local prev=-1 now i
      for i in $(seq 50); do
        now=$(metric pystash_records_received_total)
        [ "$now" = "$prev" ] && break
        prev=$now
        sleep 0.2
      done
      recv1=$now
      # What a SIGKILL may lose: the records only memory holds, at most one in-flight window
      # (8 pushes of 1,024 records) per worker; `buffered` also counts the spool, which survives.
      workers=$({ curl -s --max-time 2 "http://127.0.0.1:$METRICS_PORT/metrics" || true; } |
        sed -n 's/^pystash_info{.*workers="\([0-9]*\)".*/\1/p')
      window=$(metric pystash_records_buffered)
      cap=$((${workers:-1} * 8 * 1024))
      [ "$window" -le "$cap" ] || window=$cap
      # With Redis down from the start nothing may be held only in memory.
      if [ "$name" = proxy-kill ]; then window=0; fi
      dropped1=0
      for r in buffer_full shutdown kernel; do
        dropped1=$((dropped1 + $(metric "pystash_records_dropped_total{reason=\"$r\"}")))
      done
      kernel1=$(metric 'pystash_records_dropped_total{reason="kernel"}')
      for r in oversized bad_length bad_pickle bad_utf8 not_a_record truncated; do
        dropped1=$((dropped1 + $(metric "pystash_records_rejected_total{reason=\"$r\"}")))
      done
      drops_k=$(kernel_udp_drops)
      echo "   pystash SIGKILLed with Redis down: received $recv1, not yet in Redis $(metric pystash_records_buffered) (memory and spool), spool $(metric pystash_spool_bytes) bytes" >&2
      note+="not yet in Redis at the proxy kill $(metric pystash_records_buffered), memory window at most $cap; "
      kill -KILL "$PYSTASH_PID"; wait "$PYSTASH_PID" 2>/dev/null || true
      PYSTASH_PID=""
      start_redis "$dir/redis" "${aof[@]}"
      echo "--- restart" >>"$dir/pystash.log"
      start_pystash "$dir/pystash.log"
      kill -CONT "$TCP_PID" "$UDP_PID"
      ;;
  esac

  wait_load
  drops_k=$((drops_k + $(kernel_udp_drops)))
  term_pystash
  local s2 left
  s2=$(last_stats "$dir/pystash.log")
  left=$(redis-cli -p "$REDIS_PORT" llen logstash)
  stop_pid "$REDIS_PID"; REDIS_PID=""
  echo "   $s2" >&2
  [ "$PYSTASH_STATUS" = 0 ] || note+="pystash exited $PYSTASH_STATUS; "
  [ "$left" = 0 ] || note+="$left events left in the list (drain cut short); "
  [ "$(stat "$s2" buffered)" = 0 ] && [ "$(stat "$s2" spool_bytes)" = 0 ] ||
    note+="pystash still held records at exit; "

  local tcp udp
  tcp=$(cat "$dir/tcp.json") udp=$(cat "$dir/udp.json")
  if [ -z "$tcp" ] || [ -z "$udp" ]; then
    row "$name" - - - - - - - FAIL "no summary from a generator (see $dir/*.err)"
    return 0
  fi
  local run_udp t_sent t_del t_dup u_sent u_del u_dup errors
  run_udp=$(jq .run_id <<<"$udp")
  t_sent=$(jq .sent <<<"$tcp") t_del=$(jq .delivered <<<"$tcp") t_dup=$(jq .duplicates <<<"$tcp")
  u_sent=$(jq .sent <<<"$udp")
  u_del=$(jq "[.other_runs[] | select(.run_id == $run_udp) | .delivered] | add // 0" <<<"$tcp")
  u_dup=$(jq "[.other_runs[] | select(.run_id == $run_udp) | .duplicates] | add // 0" <<<"$tcp")
  errors=$(jq -r '.errors | join("; ")' <<<"$tcp")
  [ "$(jq .uncertain_pops <<<"$tcp")" = 0 ] || note+="consumer lost pop replies; "
  note+="consumer reconnects $(jq .consumer_reconnects <<<"$tcp")"
  [ -n "$errors" ] && note+="; tcp generator: $errors"

  local received2 dropped2 counted_udp
  received2=$(stat "$s2" received)
  dropped2=$(($(stat "$s2" dropped) + $(stat "$s2" rejected)))
  # Everything pystash counted as lost on the UDP side.
  counted_udp=$(($(stat "$s2" dropped) + $(stat "$s2" rejected)))
  local kernel_note="kernel (/proc/net/udp) $drops_k"
  if [ "$KERNEL_COUNTED" = 1 ]; then
    kernel_note="dropped_kernel $(stat "$s2" dropped_kernel), /proc/net/udp $drops_k"
  else
    counted_udp=$((counted_udp + drops_k))
  fi

  case $name in
    redis-*)
      local t_lost=$((t_sent - t_del)) u_lost=$((u_sent - u_del)) tv=PASS uv=PASS
      [ "$t_lost" = 0 ] && [ -z "$errors" ] || tv=FAIL
      [ "$u_lost" = "$counted_udp" ] || uv=FAIL
      case $note in *left*|*held*|*exited*|*replies*) tv=FAIL uv=FAIL ;; esac
      row "$name" tcp "$t_sent" - "$t_del" "$t_lost" "$t_dup" 0 "$tv" "$note"
      row "$name" udp "$u_sent" - "$u_del" "$u_lost" "$u_dup" \
        "$counted_udp" "$uv" "dropped $(stat "$s2" dropped): $kernel_note"
      ;;
    proxy-*)
      # Accepted records: what each pystash received, less what it counted as dropped or
      # rejected; all must arrive, but for the in-memory window of a SIGKILLed one. (Since
      # dropped_kernel, `received` counts the kernel's drops too, and `dropped` takes them out.)
      local recv=$((recv1 + received2)) accepted=$((recv1 - dropped1 + received2 - dropped2))
      local delivered=$((t_del + u_del)) lost v=PASS
      lost=$((accepted - delivered))
      { [ "$lost" -ge 0 ] && [ "$lost" -le "$window" ]; } || v=FAIL
      case $note in *left*|*held*|*exited*|*replies*|*dropped_shutdown*) v=FAIL ;; esac
      row "$name" tcp "$t_sent" - "$t_del" "$((t_sent - t_del))" "$t_dup" - - "not received: kernel-held or sent to a dead proxy"
      row "$name" udp "$u_sent" - "$u_del" "$((u_sent - u_del))" "$u_dup" "$drops_k" - "dropped_kernel $kernel1 + $(stat "$s2" dropped_kernel), /proc/net/udp $drops_k"
      row "$name" "all vs received" "$((t_sent + u_sent))" "$recv" "$delivered" "$lost" \
        "$((t_dup + u_dup))" "$((dropped1 + dropped2)) (+ window $window)" "$v" "$note"
      ;;
  esac
  # The append-only file and spool are large; the logs stay.
  rm -rf "$dir/redis/appendonlydir" "$dir/spool"
}

started=$SECONDS
for s in $SCENARIOS; do
  run_scenario "$s"
  cleanup
done

{
  echo
  echo "Fault tests: $RATE records/s over TCP and over UDP for ${DURATION}s, fault at ${FAULT_AT}s, pystash engine ${ENGINE_SEEN:-?} ($((SECONDS - started)) s)"
  echo
  echo "| scenario | transport | sent | received | delivered | lost | dup | counted drops | verdict | notes |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/results.md"
echo "logs and summaries: $OUT" >&2
exit "$FAILED"
