#!/usr/bin/env bash
# What the proxy's path costs without its codecs: builds pystash as usual and with
# `--cfg pystash_io_floor` (JSON lines become a fixed event of the usual size carrying the load
# generator's stamps, with no decoding or formatting), then compares the two end to end:
#   - TCP JSON at the maximum rate, both engines, alternating pairs;
#   - UDP JSON at UDP_RATE (default 150k/s) for 5 s from 2 senders, both engines, alternating
# (both with scripts/ab-e2e.sh).
# CPU is the proxy's user+system time per delivered record, from /proc/PID/stat.
#
# Usage: scripts/io-floor.sh [PAIRS] [COUNT]   (defaults 4 and 1M; COUNT is for TCP)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-4}
count=${2:-1M}
udp_rate=${UDP_RATE:-150k}
cargo build --release -q -p pystash -p pystash-loadtest
full=target/release/pystash
floor=target/io-floor/release/pystash
RUSTFLAGS="${RUSTFLAGS:-} --cfg pystash_io_floor" CARGO_TARGET_DIR=target/io-floor \
  cargo build --release -q -p pystash
echo "old = full proxy, new = io-floor build (sockets, framing, pipeline and pushes only)"
FORMATS=json scripts/ab-e2e.sh "$full" "$floor" "$pairs" "$count"
FORMATS=json TRANSPORT=udp UDP_RATE="$udp_rate" scripts/ab-e2e.sh "$full" "$floor" "$pairs"
