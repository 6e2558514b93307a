#!/usr/bin/env bash
# Many idle connections: how much user-space memory one costs the echo
# server, and whether all of them are still served afterwards.
#
#   bench/many_connections.sh                 # as many as RLIMIT_NOFILE allows
#   MANY_COUNT=5000 bench/many_connections.sh
#   MANY_SERVERS="packet c" bench/many_connections.sh   # and the C reference
#
# For each server: start it (packet's examples/echo_server, or the C epoll
# reference bench/c_echo.c, built with gcc if present), warm it up with 64
# connections, then read its VmRSS; open COUNT connections from a second
# process (examples/hold_connections, bound to 127.0.0.2, .3, ... so no
# source address runs out of ports), each echoing 8 bytes; read VmRSS
# again: (after - before) / COUNT is the user-space memory per connection
# (kernel socket buffers are not in RSS). Then every connection echoes
# once more, the client closes them all, and the server is stopped with
# SIGTERM. COUNT defaults to the hard descriptor limit minus 64 (both the
# server and the client need one descriptor per connection).
#
# Environment (defaults in brackets): MANY_COUNT [hard limit - 64],
#   MANY_SERVERS ["packet"], MANY_PORT [21106] (the C server's port),
#   MANY_SKIP_BUILD [unset].
# Only processes this script starts are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

HARD=$(ulimit -Hn)
if [ "$HARD" = unlimited ]; then HARD=1048576; fi
COUNT=${MANY_COUNT:-$((HARD - 64))}
SERVERS=${MANY_SERVERS:-packet}
PORT=${MANY_PORT:-21106}
# Both processes raise their soft limit to the hard one (the client does
# so itself; the server inherits it from here).
ulimit -n "$HARD"

PIDS=()
# Drops a PID that has been waited for, so that cleanup never signals a
# number the system may have reused.
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}
cleanup() {
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

if [ -z "${MANY_SKIP_BUILD:-}" ]; then
    cargo build --release --quiet --example echo_server --example hold_connections
fi
HOLD=$ROOT/target/release/examples/hold_connections
mkdir -p "$ROOT/bench/build"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }

# Starts server $1; sets SERVER_PID and SERVER_ADDR.
start_server() {
    local out
    out=$(mktemp /tmp/packet-many.XXXXXX)
    case $1 in
        packet) "$ROOT/target/release/examples/echo_server" 127.0.0.1:0 >"$out" 2>&1 & ;;
        c)
            gcc -O2 -o "$ROOT/bench/build/c_echo" "$ROOT/bench/c_echo.c"
            "$ROOT/bench/build/c_echo" "127.0.0.1:$PORT" >"$out" 2>&1 &
            ;;
        *) echo "unknown server $1" >&2; exit 2 ;;
    esac
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 200); do
        if grep -q '^listening on ' "$out"; then break; fi
        sleep 0.05
    done
    SERVER_ADDR=$(sed -n 's/^listening on //p' "$out" | head -n1)
    rm -f "$out"
    if [ -z "$SERVER_ADDR" ]; then
        echo "$1: server did not start" >&2
        exit 1
    fi
}

# Runs the client for $2 connections against $1 through a coprocess and
# sets HOLD_LINE to what it printed once holding them; the caller sends
# commands on ${HOLD[1]} and reads replies from ${HOLD[0]}.
start_client() {
    coproc HOLDER { exec "$HOLD" "$1" "$2"; }
    PIDS+=("$HOLDER_PID")
    if ! read -r -t 600 HOLD_LINE <&"${HOLDER[0]}"; then
        echo "client failed while opening connections" >&2
        exit 1
    fi
}

stop_client() {
    local pid=$HOLDER_PID
    echo exit >&"${HOLDER[1]}"
    wait "$pid"
    forget_pid "$pid"
}

printf '| server | connections | RSS before (KiB) | RSS holding (KiB) | bytes per connection | server fds | all echoed again | RSS after close (KiB) |\n'
printf '|---|---:|---:|---:|---:|---:|---|---:|\n'
for server in $SERVERS; do
    if [ "$server" = c ] && ! command -v gcc >/dev/null 2>&1; then
        echo "| c | (gcc not found: skipped) | | | | | | |"
        continue
    fi
    start_server "$server"
    # Warm-up: the server's buffers and allocator pools in use once.
    start_client "$SERVER_ADDR" 64
    stop_client
    sleep 0.2
    before=$(rss_kib "$SERVER_PID")

    start_client "$SERVER_ADDR" "$COUNT"
    case $HOLD_LINE in
        "holding $COUNT"*) ;;
        *) echo "client: $HOLD_LINE" >&2; exit 1 ;;
    esac
    sleep 0.2
    holding=$(rss_kib "$SERVER_PID")
    server_fds=$(fds "$SERVER_PID")
    echo check >&"${HOLDER[1]}"
    read -r -t 600 reply <&"${HOLDER[0]}" || reply="no reply"
    verified=no
    [ "$reply" = "verified $COUNT" ] && verified=yes
    stop_client
    sleep 0.5
    after=$(rss_kib "$SERVER_PID")
    per=$(awk -v a="$before" -v b="$holding" -v n="$COUNT" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
    printf '| %s | %d | %d | %d | **%s** | %d | %s | %d |\n' \
        "$server" "$COUNT" "$before" "$holding" "$per" "$server_fds" "$verified" "$after"
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    forget_pid "$SERVER_PID"
    if [ "$verified" != yes ]; then
        echo "$server: not every connection echoed again ($reply)" >&2
        exit 1
    fi
done
echo
echo "($HOLD_LINE; $(nproc) CPUs, $(uname -sr))"
