#!/bin/bash
# User-space instructions per message of a built tcp_proxy: callgrind's
# total Ir in the proxy over the messages loadgen moved through it to an
# echo_server behind it (which runs outside valgrind). Instruction counts
# do not depend on what else the machine runs, so two builds can be
# compared run against run (alternate them).
#
#   cargo build --release --example tcp_proxy --example echo_server --example loadgen
#   bench/callgrind_proxy.sh [TREE] [PORT]     # TREE: a checkout, default .
#
# Prints "Ir=... msgs=... per_msg=...". Needs valgrind.
set -euo pipefail
tree=${1:-.}
port=${2:-12310}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wait_for() {
    for _ in $(seq 150); do
        grep -q "listening on" "$1" && return 0
        sleep 0.2
    done
    echo "$2 did not start" >&2
    return 1
}
"$tree/target/release/examples/echo_server" "127.0.0.1:$((port + 1))" >"$work/echo.log" 2>&1 &
echo=$!
trap 'kill "$echo" 2>/dev/null; rm -rf "$work"' EXIT
wait_for "$work/echo.log" echo_server
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    "$tree/target/release/examples/tcp_proxy" "127.0.0.1:$port" "127.0.0.1:$((port + 1))" \
    >"$work/proxy.log" 2>&1 &
proxy=$!
wait_for "$work/proxy.log" tcp_proxy || { kill "$proxy"; exit 1; }
"$(dirname "$0")/../target/release/examples/loadgen" --addr "127.0.0.1:$port" \
    --conns 50 --size 64 --depth 16 --secs 3 --warmup 0 >"$work/loadgen.out" 2>"$work/loadgen.err"
kill -TERM "$proxy"
wait "$proxy" || true
ir=$(grep -E "^(summary|totals):" "$work/cg.out" | head -1 | awk '{print $2}')
msgs=$(grep -oE "total=[0-9]+" "$work/loadgen.err" | head -1 | cut -d= -f2)
echo "Ir=$ir msgs=$msgs per_msg=$(awk -v a="$ir" -v b="$msgs" 'BEGIN { printf "%.2f", a / b }')"
