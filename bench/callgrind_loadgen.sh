#!/bin/bash
# User-space instructions per message of a server under callgrind: its
# total Ir over the messages loadgen moved through it (`--conns 50 --size 64
# --depth 16`, or the scenario in LOADGEN_ARGS, e.g. "--conns 4 --size
# 16384 --depth 4"; 3 s). What bench/callgrind_echo.sh and
# bench/callgrind_proxy.sh measure; instruction counts do not depend on
# what else the machine runs, so two builds can be compared run against
# run (alternate them).
#
#   bench/callgrind_loadgen.sh PORT SERVER [ARGS...]
#
# SERVER must print "listening on" once it listens on 127.0.0.1:PORT.
# Prints "Ir=... msgs=... per_msg=...". Needs valgrind and a release
# loadgen (cargo build --release --example loadgen).
set -euo pipefail
port=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$@" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 150); do
    grep -q "listening on" "$work/server.log" && break
    sleep 0.2
done
grep -q "listening on" "$work/server.log" || { echo "$1 did not start" >&2; kill "$server"; exit 1; }
read -ra scenario <<<"${LOADGEN_ARGS:---conns 50 --size 64 --depth 16}"
"$(dirname "$0")/../target/release/examples/loadgen" --addr "127.0.0.1:$port" \
    "${scenario[@]}" --secs 3 --warmup 0 >"$work/loadgen.out" 2>"$work/loadgen.err"
kill -TERM "$server"
wait "$server" || true
ir=$(grep -E "^(summary|totals):" "$work/cg.out" | head -1 | awk '{print $2}')
msgs=$(grep -oE "total=[0-9]+" "$work/loadgen.err" | head -1 | cut -d= -f2)
echo "Ir=$ir msgs=$msgs per_msg=$(awk -v a="$ir" -v b="$msgs" 'BEGIN { printf "%.2f", a / b }')"
