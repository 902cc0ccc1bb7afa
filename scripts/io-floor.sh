#!/usr/bin/env bash
# What the proxy's path costs without its codecs: builds pystash as usual and with the
# `io-floor` feature (JSON lines become a fixed event of the usual size carrying the load
# generator's stamps, with no decoding or formatting), then compares the two end to end with
# scripts/ab-tcp.sh (TCP JSON at the maximum rate, both engines, alternating pairs).
#
# Usage: scripts/io-floor.sh [PAIRS] [COUNT]   (defaults 4 and 1M)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-4}
count=${2:-1M}
cargo build --release -q -p pystash
floor_target=target/io-floor
CARGO_TARGET_DIR=$floor_target cargo build --release -q -p pystash --features io-floor
echo "old = full proxy, new = io-floor build (sockets, framing, pipeline and pushes only)"
FORMATS=json scripts/ab-tcp.sh target/release/pystash "$floor_target/release/pystash" \
  "$pairs" "$count"
