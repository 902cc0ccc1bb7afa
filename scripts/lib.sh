# Shell helpers shared by the benchmark, load-test and fault scripts (sourced, not run).

# free_ports N [TAKEN...]: N distinct ports, none of TAKEN, free on 127.0.0.1 for both TCP and
# UDP. They are taken below the kernel's ephemeral range, so that no outgoing connection or
# sender socket (a generator's, a leftover TIME_WAIT) can hold one when a listener binds it.
free_ports() {
  python3 - "$@" <<'PY'
import random, socket, sys
want = int(sys.argv[1])
taken = {int(p) for p in sys.argv[2:]}
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
lo, hi = (10000, low - 1) if low > 12000 else (low, 65535)
picked = []
while len(picked) < want:
    port = random.randint(lo, hi)
    if port in picked or port in taken:
        continue
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", port))
    except OSError:
        continue
    picked.append(port)
print(" ".join(map(str, picked)))
PY
}
free_port() { free_ports 1; }

# wait_port PORT PID [TRIES]: waits (50 ms a try, 200 tries by default) until PORT accepts on
# 127.0.0.1; fails early when PID has exited.
wait_port() {
  local port=$1 pid=$2 tries=${3:-200} i
  for i in $(seq "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
