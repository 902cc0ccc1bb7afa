#!/usr/bin/env bash
# Instructions per record for benches/events.rs cases, counted by callgrind (stable on a busy
# machine, unlike times). Usage: scripts/count-events.sh [case...]; no case means all of them.
# Each case runs 1,000 and 11,000 times; the difference over 10,000 excludes setup.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo bench --bench events --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
    cases=(pickle_decode_only json_decode_only event_write_only
        pickle_typical_V1 pickle_plain_V1 pickle_exception_V1 json_record_V1 json_logstash_event_V1
        pickle_typical_V0 pickle_plain_V0 pickle_exception_V0 json_record_V0 json_logstash_event_V0)
fi
total() {
    EVENTS_COUNT=$1 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for case in "${cases[@]}"; do
    small=$(total 1000 "$case")
    large=$(total 11000 "$case")
    printf '%-26s %8d instructions/record\n' "$case" $(((large - small) / 10000))
done
