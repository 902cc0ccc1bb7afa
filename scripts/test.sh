#!/usr/bin/env bash
# The test command: installs what the integration tests drive for real (redis-server from
# Debian, python-logstash from PyPI) when missing, then runs every test target.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_missing=()
command -v redis-server >/dev/null || apt_missing+=(redis-server)
command -v python3 >/dev/null || apt_missing+=(python3)
if ! python3 -m pip --version >/dev/null 2>&1; then apt_missing+=(python3-pip); fi
if ((${#apt_missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi
if ! python3 -c 'import logstash' 2>/dev/null; then
  python3 -m pip install -q python-logstash 2>/dev/null ||
    python3 -m pip install -q --break-system-packages python-logstash
fi

exec cargo test --workspace --all-targets --all-features "$@"
