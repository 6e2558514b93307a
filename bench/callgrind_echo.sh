#!/bin/bash
# User-space instructions per echoed message of a built core-only
# echo_server: callgrind's total Ir over the messages loadgen moved.
# Instruction counts do not depend on what else the machine runs, so two
# builds can be compared run against run (alternate them).
#
#   cargo build --release --no-default-features --example echo_server
#   cargo build --release --example loadgen
#   bench/callgrind_echo.sh [TREE] [PORT]     # TREE: a checkout, default .
#
# Prints "Ir=... msgs=... per_msg=...". Needs valgrind.
set -euo pipefail
tree=${1:-.}
port=${2:-12210}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    "$tree/target/release/examples/echo_server" "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 150); do
    grep -q "listening on" "$work/server.log" && break
    sleep 0.2
done
grep -q "listening on" "$work/server.log" || { echo "echo_server did not start" >&2; kill "$server"; exit 1; }
"$(dirname "$0")/../target/release/examples/loadgen" --addr "127.0.0.1:$port" \
    --conns 50 --size 64 --depth 16 --secs 3 --warmup 0 >"$work/loadgen.out" 2>"$work/loadgen.err"
kill -TERM "$server"
wait "$server" || true
ir=$(grep -E "^(summary|totals):" "$work/cg.out" | head -1 | awk '{print $2}')
msgs=$(grep -oE "total=[0-9]+" "$work/loadgen.err" | head -1 | cut -d= -f2)
echo "Ir=$ir msgs=$msgs per_msg=$(awk -v a="$ir" -v b="$msgs" 'BEGIN { printf "%.2f", a / b }')"
