#!/usr/bin/env bash
# Comparative benchmark: the load generator against pystash (each engine) and against
# rsyslog+omhiredis, with the same records and counts, in one run; prints one markdown table
# (delivered/s, loss, CPU per record, latency p50/p99/p99.9, medians over RUNS rounds) and the
# ratios against rsyslog, and writes both with the machine and the command to
# target/bench/bench-DATE.md.
#
#   scripts/bench.sh                                   # the full comparison, a few minutes
#   COUNT=100k RUNS=1 DURATION=2s scripts/bench.sh     # a quick check that everything works
#   ENGINES=epoll RSYSLOG=0 scripts/bench.sh           # pystash only
#
# Scenarios (SCENARIOS picks some of them; all records are SIZE bytes, JSON for both proxies
# since rsyslog cannot read pickles):
#   tcp-json    TCP JSON lines at the maximum rate, COUNT records over TCP_CONNECTIONS connections
#   udp-json    UDP JSON datagrams at UDP_RATE for DURATION from UDP_SENDERS sender threads
#   tcp-pickle  TCP SocketHandler pickles at the maximum rate, like tcp-json (pystash only)
#   udp-pickle  UDP SocketHandler pickles at PICKLE_RATE for DURATION (pystash only: latency)
#
# Variables:
#   ENGINES          pystash engines (default "epoll uring"); when the binary has no --io-engine
#                    flag, a single "default" engine runs instead
#   RSYSLOG          1: also measure rsyslog+omhiredis (default 1)
#   SCENARIOS        default "tcp-json tcp-pickle udp-json udp-pickle"
#   RUNS             rounds; every metric is the median over them (default 3)
#   COUNT            records per tcp-json run (default 1M)
#   TCP_CONNECTIONS  default 4
#   UDP_RATE         default 150k;  UDP_SENDERS default 2
#   PICKLE_RATE      default 100k
#   DURATION         how long the UDP scenarios send (default 5s)
#   SIZE             record size asked for (default 370..370; the generator never goes below a
#                    record's fields, so records are larger: the table gives the actual mean)
#   RUN_TIMEOUT      seconds one load test may take (default 120)
#   DRAIN            how long a tcp-json run waits for the last events (default 30s: rsyslog
#                    may hold a few seconds of backlog in its queues)
#   UDP_DRAIN        the same for the UDP scenarios (default 10s); a run that lost records
#                    always waits this long, so it bounds the time, not the result
#   RSYSLOG_QUEUE    rsyslog main/action queue size in messages (default 2000000)
#   RSYSLOG_WORKERS  rsyslog main queue worker threads (default 2)
#   OUT              raw results: summaries, logs, rsyslog config (default target/bench/bench-DATE)
#   SKIP_BUILD=1     use the release binaries already built
# Installs redis-server, rsyslog and rsyslog-hiredis with apt-get when missing (root or sudo; on
# a machine with systemd the package also enables the system's own rsyslog, which this script
# leaves alone: it runs rsyslogd in the foreground with a private config, ports and directory).
# Proxies run one at a time, restarted every round (rounds interleave the proxies, so a slow
# spell on a shared machine does not land on one of them only). CPU per record is the proxy's
# utime+stime (/proc/PID/stat, all its threads) over the run divided by the records delivered;
# the generator's own CPU comes from its summary (cpu_seconds, getrusage), divided the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

# The exact command, with the variables given on the way in, for the report.
BENCH_VARS="ENGINES RSYSLOG SCENARIOS RUNS COUNT TCP_CONNECTIONS UDP_RATE UDP_SENDERS PICKLE_RATE
  DURATION SIZE RUN_TIMEOUT DRAIN UDP_DRAIN RSYSLOG_QUEUE RSYSLOG_WORKERS OUT SKIP_BUILD"
COMMAND=""
for v in $BENCH_VARS; do
  [ -n "${!v+x}" ] && COMMAND+="$v=$(printf %q "${!v}") "
done
COMMAND+="scripts/bench.sh"

ENGINES=${ENGINES:-epoll uring}
RSYSLOG=${RSYSLOG:-1}
SCENARIOS=${SCENARIOS:-tcp-json tcp-pickle udp-json udp-pickle}
RUNS=${RUNS:-3}
COUNT=${COUNT:-1M}
TCP_CONNECTIONS=${TCP_CONNECTIONS:-4}
UDP_RATE=${UDP_RATE:-150k}
UDP_SENDERS=${UDP_SENDERS:-2}
PICKLE_RATE=${PICKLE_RATE:-100k}
DURATION=${DURATION:-5s}
SIZE=${SIZE:-370..370}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
DRAIN=${DRAIN:-30s}
UDP_DRAIN=${UDP_DRAIN:-10s}
RSYSLOG_QUEUE=${RSYSLOG_QUEUE:-2000000}
RSYSLOG_WORKERS=${RSYSLOG_WORKERS:-2}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-target/bench/bench-$STAMP}
REPORT=target/bench/bench-$STAMP.md

# --- install and build ---------------------------------------------------------------------

apt_missing=()
command -v redis-server >/dev/null || apt_missing+=(redis-server)
if [ "$RSYSLOG" = 1 ]; then
  dpkg -s rsyslog >/dev/null 2>&1 || apt_missing+=(rsyslog)
  dpkg -s rsyslog-hiredis >/dev/null 2>&1 || apt_missing+=(rsyslog-hiredis)
fi
if ((${#apt_missing[@]})); then
  echo "installing ${apt_missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${apt_missing[@]}" >/dev/null
fi
RSYSLOGD=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -p pystash -p pystash-loadtest
fi
PYSTASH=target/release/pystash
LOADTEST=target/release/pystash-loadtest
mkdir -p "$OUT/runs"
OUT=$(cd "$OUT" && pwd)

if [ "$ENGINES" != default ] && ! "$PYSTASH" --help | grep -q -- --io-engine; then
  echo "this pystash has no --io-engine flag: measuring its one engine as \"default\"" >&2
  ENGINES=default
fi

# --- helpers -------------------------------------------------------------------------------

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# CPU seconds (user + system, all threads, living and exited) a process has used so far.
CLK_TCK=$(getconf CLK_TCK)
cpu_seconds() {
  # Fields after "pid (comm) ": state is $1, so utime (field 14) is $12 and stime $13.
  sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$CLK_TCK" '{ printf "%.3f", ($12 + $13) / hz }'
}

# Datagrams the kernel dropped so far at the UDP sockets bound to a port (receive buffer full):
# the last column of /proc/net/udp, summed over the proxy's sockets (one per pystash worker).
udp_drops() {
  awk -v p="$(printf ':%04X' "$1")" 'index($2, p) && index($2, p) == length($2) - 4 { s += $NF }
    END { print s + 0 }' /proc/net/udp
}

# Stops a process this script started: SIGTERM, up to 10 s, then SIGKILL.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && { kill -9 "$pid" 2>/dev/null || true; }
  wait "$pid" 2>/dev/null || true
}

REDIS_PID="" PROXY_PID="" TCP_PORT="" UDP_PORT="" QUEUE="" RSYSLOG_STARTS=0
cleanup() {
  stop_pid "$PROXY_PID"
  stop_pid "$REDIS_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts one proxy (pystash-ENGINE or rsyslog) on fresh ports; sets PROXY_PID, TCP_PORT,
# UDP_PORT, QUEUE.
start_proxy() {
  local proxy=$1 log=$2
  read -r TCP_PORT UDP_PORT < <(free_ports 2)
  QUEUE=bench-$proxy
  case "$proxy" in
    rsyslog)
      local dir="$OUT/rsyslog-$((++RSYSLOG_STARTS))"
      mkdir -p "$dir"
      local rmem_max rcvbuf
      rmem_max=$(cat /proc/sys/net/core/rmem_max)
      rcvbuf=$((rmem_max < 8388608 ? rmem_max : 8388608))
      sed -e "s|@WORKDIR@|$dir|g" -e "s|@QUEUE_SIZE@|$RSYSLOG_QUEUE|g" -e "s|@WORKERS@|$RSYSLOG_WORKERS|g" \
        -e "s|@REDIS_PORT@|$REDIS_PORT|g" -e "s|@QUEUE@|$QUEUE|g" -e "s|@TCP_PORT@|$TCP_PORT|g" \
        -e "s|@UDP_PORT@|$UDP_PORT|g" -e "s|@UDP_RCVBUF@|$rcvbuf|g" \
        scripts/bench/rsyslog.conf.in >"$dir/rsyslog.conf"
      "$RSYSLOGD" -n -f "$dir/rsyslog.conf" -i "$dir/rsyslogd.pid" >>"$log" 2>&1 &
      ;;
    pystash-*)
      local engine=${proxy#pystash-} engine_flag=()
      [ "$engine" != default ] && engine_flag=(--io-engine "$engine")
      "$PYSTASH" --bind-ip 127.0.0.1 --tcp-port "$TCP_PORT" --udp-port "$UDP_PORT" \
        --redis-host 127.0.0.1 --redis-port "$REDIS_PORT" --redis-queue "$QUEUE" \
        --stats-interval 0 --shutdown-timeout 2 "${engine_flag[@]}" >>"$log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  wait_port "$TCP_PORT" "$PROXY_PID"
}

# Runs the load generator once; its text output goes to LABEL.txt, its summary to LABEL.json.
loadtest() {
  local label=$1
  shift
  timeout "$RUN_TIMEOUT" "$LOADTEST" --redis "redis://127.0.0.1:$REDIS_PORT" --queue "$QUEUE" \
    --flush-queue --label "$label" --out "$OUT/runs" --quiet "$@" \
    >"$OUT/runs/$label.txt" 2>&1
}

# The load generator flags of a scenario, for a proxy listening on TCP_PORT/UDP_PORT.
scenario_flags() {
  case "$1" in
    tcp-json) echo "--transport tcp --target 127.0.0.1:$TCP_PORT --format json --rate max
      --count $COUNT --connections $TCP_CONNECTIONS --size $SIZE --drain-timeout $DRAIN" ;;
    udp-json) echo "--transport udp --target 127.0.0.1:$UDP_PORT --format json --rate $UDP_RATE
      --duration $DURATION --senders $UDP_SENDERS --size $SIZE --drain-timeout $UDP_DRAIN" ;;
    tcp-pickle) echo "--transport tcp --target 127.0.0.1:$TCP_PORT --format pickle --rate max
      --count $COUNT --connections $TCP_CONNECTIONS --size $SIZE --drain-timeout $DRAIN" ;;
    udp-pickle) echo "--transport udp --target 127.0.0.1:$UDP_PORT --format pickle
      --rate $PICKLE_RATE --duration $DURATION --size $SIZE --drain-timeout $UDP_DRAIN" ;;
    *) return 1 ;;
  esac
}

for scenario in $SCENARIOS; do
  scenario_flags "$scenario" >/dev/null || {
    echo "unknown scenario $scenario (tcp-json, tcp-pickle, udp-json, udp-pickle)" >&2
    exit 1
  }
done

# --- run -----------------------------------------------------------------------------------

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
wait_port "$REDIS_PORT" "$REDIS_PID" || { echo "redis-server did not start" >&2; exit 1; }

PROXIES=""
for engine in $ENGINES; do PROXIES+="pystash-$engine "; done
[ "$RSYSLOG" = 1 ] && PROXIES+="rsyslog"

RUNS_TSV="$OUT/runs.tsv"
printf 'proxy\tscenario\tround\tsummary\tproxy_cpu_s\tredis_cpu_s\tudp_kernel_drops\n' >"$RUNS_TSV"
failed=()
for round in $(seq "$RUNS"); do
  for proxy in $PROXIES; do
    log="$OUT/$proxy.log"
    echo "== round $round/$RUNS: $proxy" >&2
    if ! start_proxy "$proxy" "$log"; then
      echo "   $proxy did not start; see $log" >&2
      failed+=("$proxy round $round: did not start")
      stop_pid "$PROXY_PID"
      PROXY_PID=""
      continue
    fi
    # A check, not measured: a few records each way must come back whole. It also proves the
    # consumer finds its stamps in what this proxy pushes, and warms the proxy up.
    check_ok=1
    loadtest "$proxy-check-tcp-r$round" --transport tcp --target "127.0.0.1:$TCP_PORT" \
      --format json --rate max --count 2000 --size "$SIZE" --drain-timeout 10s || check_ok=0
    loadtest "$proxy-check-udp-r$round" --transport udp --target "127.0.0.1:$UDP_PORT" \
      --format json --rate 20k --count 1000 --size "$SIZE" --drain-timeout 5s || check_ok=0
    if [ "$check_ok" = 0 ]; then
      echo "   $proxy failed the check run:" >&2
      cat "$OUT/runs/$proxy-check-"*"-r$round.txt" >&2
      echo "   first event in the list, if any:" >&2
      redis-cli -p "$REDIS_PORT" lindex "$QUEUE" 0 >&2 || true
      [ "$proxy" = rsyslog ] && { tail -5 "$OUT/rsyslog-$RSYSLOG_STARTS/rsyslog-internal.log" >&2 2>/dev/null || true; }
      failed+=("$proxy round $round: check run failed")
      stop_pid "$PROXY_PID"
      PROXY_PID=""
      continue
    fi

    for scenario in $SCENARIOS; do
      case "$proxy-$scenario" in rsyslog-*-pickle) continue ;; esac
      label="$proxy-$scenario-r$round"
      sleep 0.5 # let the check or the previous run settle
      proxy_cpu0=$(cpu_seconds "$PROXY_PID")
      redis_cpu0=$(cpu_seconds "$REDIS_PID")
      drops0=$(udp_drops "$UDP_PORT")
      # shellcheck disable=SC2046 # scenario_flags is a list of flags
      loadtest "$label" $(scenario_flags "$scenario") || status=$?
      proxy_cpu1=$(cpu_seconds "$PROXY_PID" 2>/dev/null || echo "$proxy_cpu0")
      redis_cpu1=$(cpu_seconds "$REDIS_PID")
      drops=$(($(udp_drops "$UDP_PORT") - drops0))
      if [ "${status:-0}" -gt 1 ]; then
        echo "   $label exited $status; see $OUT/runs/$label.txt" >&2
        failed+=("$label: exited $status")
      fi
      unset status
      kill -0 "$PROXY_PID" 2>/dev/null || failed+=("$label: $proxy died; see $log")
      grep -E '^ +(sent|delivered|lost|latency|generator)' "$OUT/runs/$label.txt" | sed "s/^/   $scenario /" >&2 || true
      [ "$drops" -gt 0 ] && echo "   $scenario kernel dropped $drops datagrams at $proxy's socket" >&2
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$scenario" "$round" "$OUT/runs/$label.json" \
        "$(awk -v a="$proxy_cpu0" -v b="$proxy_cpu1" 'BEGIN { printf "%.3f", b - a }')" \
        "$(awk -v a="$redis_cpu0" -v b="$redis_cpu1" 'BEGIN { printf "%.3f", b - a }')" \
        "$drops" >>"$RUNS_TSV"
      kill -0 "$PROXY_PID" 2>/dev/null || break
    done
    stop_pid "$PROXY_PID"
    PROXY_PID=""
  done
done

# --- report --------------------------------------------------------------------------------

TABLE=$(python3 scripts/bench/table.py "$RUNS_TSV")
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
rsyslog_version=$([ "$RSYSLOG" = 1 ] && "$RSYSLOGD" -v | awk 'NR == 1 { print $2 }' || echo -)
{
  echo "# pystash vs rsyslog+omhiredis, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "    $COMMAND"
  echo
  echo "Machine: $(nproc) CPUs ($cpu_model), ${mem_gib} GiB, Linux $(uname -r)." \
    "pystash $(git describe --always --dirty 2>/dev/null || echo '?'), redis-server" \
    "$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), rsyslog $rsyslog_version" \
    "(imtcp/imudp -> omhiredis RPUSH, scripts/bench/rsyslog.conf.in)."
  echo "Medians of $RUNS round(s); CPU is the proxy's own user+system time per delivered record" \
    "(clock ticks of 1/$CLK_TCK s); Redis CPU is redis-server's; latency is end to end from the" \
    "scheduled send (pystash-loadtest, coordinated omission avoided). Scenarios: tcp-json =" \
    "$COUNT records at max rate over $TCP_CONNECTIONS connections; udp-json = $UDP_RATE/s for" \
    "$DURATION from $UDP_SENDERS senders; tcp-pickle = the same with SocketHandler pickles; udp-pickle = $PICKLE_RATE/s for $DURATION."
  echo
  echo "rsyslog pushes each record as it arrived (one RPUSH per record, pipelined per batch);" \
    "pystash turns each into a Logstash event and pushes many per RPUSH. Redis CPU includes the" \
    "load generator's consumer (LRANGE+LTRIM, the same for every proxy). CPU is read before and" \
    "after each run, so an idle proxy's drain wait counts too. Generator CPU is pystash-loadtest's" \
    "own user+system time per delivered record from its first send to the end of its drain: its" \
    "record building and sending and its Redis consumer; it is the same program for every proxy," \
    "and added to the proxy's and Redis's columns it gives the whole pipeline's CPU per record" \
    "(on loopback the kernel's delivery into the proxy's socket runs in the sender's system time)."
  echo
  echo "$TABLE"
  if ((${#failed[@]})); then
    echo
    echo "Problems:"
    printf -- '- %s\n' "${failed[@]}"
  fi
} >"$REPORT"
cp "$REPORT" "$OUT/report.md"
echo >&2
cat "$REPORT"
echo >&2
echo "report: $REPORT  raw runs: $OUT" >&2
