#!/bin/bash
# Two builds of http_server --tls side by side under wrk keep-alive load:
# each round runs both (the order alternating between rounds), the server
# pinned to CPU 0 and wrk -t1 -c50 to CPU 1, a 1 s warm-up then 3 s
# measured. Prints each run's rate and the server's CPU per request, then
# the medians. Needs wrk (bench/compare.sh installs it).
#
#   bench/https_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=$1 new=$2 rounds=${3:-8}
cert=$root/tests/fixtures/localhost.crt
key=$root/tests/fixtures/localhost.key
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck source=bench/ab_common.sh
. "$root/bench/ab_common.sh"

one() { # WHICH ROUND
    binary=$old offset=0
    if [ "$1" = new ]; then binary=$new offset=1; fi
    port=$((19000 + $2 * 2 + offset))
    taskset -c 0 "$binary" "127.0.0.1:$port" --tls "$cert" "$key" >"$work/server.log" 2>&1 &
    pid=$!
    ab_wait_listening "$work/server.log"
    taskset -c 1 wrk -t1 -c50 -d1s "https://127.0.0.1:$port/" >/dev/null 2>&1
    read -ra before <"/proc/$pid/stat"
    out=$(taskset -c 1 wrk -t1 -c50 -d3s "https://127.0.0.1:$port/" 2>&1)
    read -ra after <"/proc/$pid/stat"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    ticks=$((after[13] + after[14] - before[13] - before[14]))
    ticks_per_s=$(getconf CLK_TCK)
    echo "$1 rate=$rate us_per_req=$(awk -v t="$ticks" -v hz="$ticks_per_s" -v r="$requests" 'BEGIN { printf "%.3f", t * 1e6 / hz / r }')"
}

ab_rounds "$rounds" one | tee "$work/runs"
for which in old new; do
    for field in rate us_per_req; do
        echo "$which median $field=$(ab_median "$work/runs" "$which" "$field")"
    done
done
