# Shell helpers shared by the benchmark, load-test and fault scripts (sourced, not run).

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

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
