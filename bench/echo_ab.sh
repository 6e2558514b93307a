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
    [[ -n $server ]] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
events=task-clock
for call in read write writev sendto recvfrom sendmsg recvmsg epoll_wait epoll_ctl; do
    events+=",syscalls:sys_enter_$call"
done

one() { # NAME BINARY
    taskset -c 0 perf stat -x, -e "$events" -o "$work/perf" "$2" "127.0.0.1:$port" >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 50); do
        grep -q "listening on" "$work/server.log" && break
        sleep 0.1
    done
    taskset -c 1 "$root/target/release/examples/loadgen" --addr "127.0.0.1:$port" \
        "${scenario[@]}" --secs 3 --warmup 0 >"$work/loadgen.out" 2>&1
    # perf passes no signal on: stop the server itself, then perf reports.
    pkill -TERM -P "$server" || true
    wait "$server" || true
    server=
    msgs=$(grep -oE "total=[0-9]+" "$work/loadgen.out" | head -1 | cut -d= -f2)
    awk -F, -v m="$msgs" -v name="$1" '
        BEGIN { printf "%s msgs=%d", name, m }
        /^[0-9]/ && $3 == "task-clock" { cpu = $1 * 1000 / m }
        /^[0-9]/ && $3 != "task-clock" && $1 > 0 { n = $3; sub("syscalls:sys_enter_", "", n); printf " %s=%.3f", n, $1 / m }
        END { printf " cpu_us_per_msg=%.3f\n", cpu }' "$work/perf"
}

for round in $(seq "$rounds"); do
    if ((round % 2)); then
        one old "$old" | tee -a "$work/runs"
        one new "$new" | tee -a "$work/runs"
    else
        one new "$new" | tee -a "$work/runs"
        one old "$old" | tee -a "$work/runs"
    fi
done
median() { # NAME
    grep "^$1 " "$work/runs" | sed 's/.*cpu_us_per_msg=//' | sort -n |
        awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
o=$(median old) n=$(median new)
awk -v o="$o" -v n="$n" -v r="$rounds" 'BEGIN {
    printf "median cpu_us_per_msg: old %.3f, new %.3f, new/old %.3f (%d rounds)\n", o, n, n / o, r }'
