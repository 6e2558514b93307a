#!/bin/bash
# Two builds of echo_server side by side under one loadgen scenario: each
# round runs both (the order alternating between rounds), the server pinned
# to CPU 0 under `perf stat` and loadgen to CPU 1, 3 s measured. Prints each
# run's messages, the server's system calls per message by kind and its CPU
# per message, then the medians of CPU per message. Counts of system calls
# show whether a change altered the I/O pattern; CPU per message moves
# between runs on a shared machine, so read the medians of many rounds.
# Needs perf (Debian's linux-perf) and a release loadgen.
#
#   bench/echo_ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [LOADGEN ARGS...]
#
# LOADGEN ARGS default to scenario (c): --conns 4 --size 16384 --depth 4.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=$1 new=$2 rounds=${3:-8}
shift $(($# < 3 ? $# : 3))
scenario=("$@")
[[ ${#scenario[@]} -gt 0 ]] || scenario=(--conns 4 --size 16384 --depth 4)
port=${BENCH_PORT:-21016}
work=$(mktemp -d)
server=
cleanup() {
    # perf passes no signal on: the server under it first, then perf.
    if [[ -n $server ]]; then
        pkill -TERM -P "$server" || true
        kill "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=bench/ab_common.sh
. "$root/bench/ab_common.sh"
events=task-clock
for call in read write writev sendto recvfrom sendmsg recvmsg epoll_wait epoll_ctl; do
    events+=",syscalls:sys_enter_$call"
done

one() { # WHICH ROUND
    local binary=$old
    if [[ $1 == new ]]; then binary=$new; fi
    taskset -c 0 perf stat -x, -e "$events" -o "$work/perf" "$binary" "127.0.0.1:$port" >"$work/server.log" 2>&1 &
    server=$!
    ab_wait_listening "$work/server.log"
    taskset -c 1 "$root/target/release/examples/loadgen" --addr "127.0.0.1:$port" \
        "${scenario[@]}" --secs 3 --warmup 0 >"$work/loadgen.out" 2>&1
    # The server itself, so that perf reports.
    pkill -TERM -P "$server" || true
    wait "$server" || true
    server=
    msgs=$(grep -oE "total=[0-9]+" "$work/loadgen.out" | head -1 | cut -d= -f2)
    awk -F, -v m="$msgs" -v name="$1" '
        BEGIN { printf "%s msgs=%d", name, m }
        /^[0-9]/ && $3 == "task-clock" { cpu = $1 * 1000 / m }
        /^[0-9]/ && $3 != "task-clock" && $1 > 0 { n = $3; sub("syscalls:sys_enter_", "", n); printf " %s=%.3f", n, $1 / m }
        END { printf " cpu_us_per_msg=%.3f\n", cpu }' "$work/perf" | tee -a "$work/runs"
}

# Not in a pipeline: the trap must see the server of the run under way.
ab_rounds "$rounds" one
o=$(ab_median "$work/runs" old cpu_us_per_msg) n=$(ab_median "$work/runs" new cpu_us_per_msg)
awk -v o="$o" -v n="$n" -v r="$rounds" 'BEGIN {
    printf "median cpu_us_per_msg: old %.3f, new %.3f, new/old %.3f (%d rounds)\n", o, n, n / o, r }'
