#!/usr/bin/env bash
# Echo benchmark: packet's examples/echo_server against the C epoll reference
# (bench/c_echo.c), side by side in one run.
#
#   bench/compare.sh                                  # about 2-3 minutes
#   BENCH_SECS=10 BENCH_ROUNDS=5 bench/compare.sh     # longer, steadier
#   BENCH_SCENARIOS="a d" bench/compare.sh            # a subset
#
# Every server runs pinned to BENCH_SERVER_CPU (0) and examples/loadgen to
# BENCH_LOADGEN_CPU (1). Each (round, scenario) runs every server in turn,
# the order alternating between rounds, each on a fresh process (so peak
# RSS is per run) and its own port. The tables give the median over the
# rounds, and as ratio packet / c the median over the rounds of the ratio
# within each round (both servers ran back to back, so drift in the load
# of the machine cancels out better than in a ratio of medians).
#
# Environment (defaults in brackets):
#   BENCH_SECS [2]  BENCH_WARMUP [0.5]  BENCH_ROUNDS [5]
#   BENCH_SCENARIOS ["a b c d"]  BENCH_SERVERS ["packet c"]
#   BENCH_SERVER_CPU [0]  BENCH_LOADGEN_CPU [1]  BENCH_LOADGEN_THREADS [1]
#   BENCH_PORT [21006] (server i listens on BENCH_PORT + i)
#   BENCH_SUITES ["echo"] ("http" is reserved for the HTTP part)
#   BENCH_NICE [0] (e.g. -10 on a machine shared with other work; no help
#     across sessions when kernel.sched_autogroup_enabled=1)
#   BENCH_SKIP_BUILD [unset]
#
# Output: a Markdown table per scenario on stdout and in
# bench/results/latest.md; every run's raw numbers in bench/results/latest.csv.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/bench/build
RESULTS=$ROOT/bench/results

SECS=${BENCH_SECS:-2}
WARMUP=${BENCH_WARMUP:-0.5}
ROUNDS=${BENCH_ROUNDS:-5}
SCENARIOS=${BENCH_SCENARIOS:-a b c d}
SERVERS=${BENCH_SERVERS:-packet c}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
LOADGEN_CPU=${BENCH_LOADGEN_CPU:-1}
LOADGEN_THREADS=${BENCH_LOADGEN_THREADS:-1}
BASE_PORT=${BENCH_PORT:-21006}
SUITES=${BENCH_SUITES:-echo}
NICE=${BENCH_NICE:-0}
BASELINE=c
OURS=packet

LOADGEN=$ROOT/target/release/examples/loadgen
RUN_DIR=$(mktemp -d /tmp/packet-bench.XXXXXX)
RAW=$RUN_DIR/raw.csv
TABLES=$RUN_DIR/tables.md

# ----- processes: everything started is tracked by PID and stopped on exit -----

PIDS=()

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

# ----- tools -----

need() { # command debian-package
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "== installing $2 (for $1)"
    [[ $(id -u) == 0 ]] || die "$1 is missing; install $2"
    if ! apt-get install -y -qq "$2" >/dev/null; then
        apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
    fi
    command -v "$1" >/dev/null 2>&1 || die "could not install $2"
}

build() {
    need taskset util-linux
    need gcc gcc
    need cargo cargo
    if [[ -n ${BENCH_SKIP_BUILD:-} ]]; then
        return
    fi
    echo "== building echo_server and loadgen (release)"
    cargo build --release --quiet --example echo_server --example loadgen
    echo "== building c_echo (gcc -O2)"
    mkdir -p "$BUILD"
    gcc -O2 -Wall -Wextra -o "$BUILD/c_echo" bench/c_echo.c
}

# ----- servers (add one: a case here, and its name in BENCH_SERVERS) -----

server_cmd() { # name port -> the command, one word per line
    local addr=127.0.0.1:$2
    case $1 in
    packet) printf '%s\n' "$ROOT/target/release/examples/echo_server" "$addr" ;;
    c) printf '%s\n' "$BUILD/c_echo" "$addr" ;;
    # Another build of an echo server taking ADDR:PORT (say, echo_server
    # from a branch that changes the reactor), for an A/B run:
    #   BENCH_ALT_SERVER=/other/target/release/examples/echo_server \
    #   BENCH_SERVERS="packet alt c" bench/compare.sh
    alt)
        [[ -n ${BENCH_ALT_SERVER:-} ]] || die "server alt needs BENCH_ALT_SERVER=/path/to/binary"
        printf '%s\n' "$BENCH_ALT_SERVER" "$addr"
        ;;
    # Hook: EventMachine (apt-get install ruby-eventmachine), for example
    #   em) printf '%s\n' ruby "$ROOT/bench/em_echo.rb" "$addr" ;;
    # with a script that prints "listening on ADDR" once EM.start_server ran.
    *) die "unknown server '$1' (known: packet c alt)" ;;
    esac
}

SERVER_PID=
start_server() { # name port
    local log=$RUN_DIR/server-$1.log cmd
    mapfile -t cmd < <(server_cmd "$1" "$2")
    nice -n "$NICE" taskset -c "$SERVER_CPU" "${cmd[@]}" >"$log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local _
    for _ in $(seq 200); do
        # examples/echo_server prints its "listening on" line only once its
        # reactor threads end, so readiness is the port in LISTEN state.
        listening "$2" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || die "server $1 exited: $(cat "$log")"
        sleep 0.05
    done
    die "server $1 is not listening on port $2 after 10 s"
}

listening() { # port -> whether a socket listens on 127.0.0.1:port
    local hex
    hex=$(printf '0100007F:%04X' "$1")
    awk -v a="$hex" '$2 == a && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp
}

cpu_ns() { # pid -> CPU time (user + system, all threads) in nanoseconds
    # utime + stime of /proc/PID/stat are the scheduler's exact run time
    # rounded to 10 ms ticks; /proc/PID/task/*/schedstat has the same run
    # time in ns, which matters for runs of a few hundred ticks.
    local f t=0 run rest stat fields
    for f in /proc/"$1"/task/*/schedstat; do
        read -r run rest <"$f" 2>/dev/null || continue
        t=$((t + run))
    done
    if ((t == 0)); then
        stat=$(<"/proc/$1/stat")
        read -r -a fields <<<"${stat##*) }"
        t=$(((fields[11] + fields[12]) * 10000000))
    fi
    echo "$t"
}

core_busy_ticks() { # -> busy ticks (all but idle and iowait) of the two bench CPUs
    awk -v a="cpu$SERVER_CPU" -v b="cpu$LOADGEN_CPU" '
        $1 == a || $1 == b { t += $2 + $3 + $4 + $7 + $8 + $9 }
        END { print t + 0 }' /proc/stat
}

peak_rss_kb() { # pid
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

# ----- scenarios (add one: a case in each function, and its letter) -----

scenario_title() {
    case $1 in
    a) echo "(a) 50 connections, 64 B messages, depth 16" ;;
    b) echo "(b) 500 connections, 32 B messages, depth 1" ;;
    c) echo "(c) 4 connections, 16 KiB messages, depth 4" ;;
    d) echo "(d) connection rate: 50 slots of connect, 1 B round trip, close" ;;
    *) die "unknown scenario '$1'" ;;
    esac
}

scenario_args() {
    case $1 in
    a) echo "--conns 50 --size 64 --depth 16" ;;
    b) echo "--conns 500 --size 32 --depth 1" ;;
    c) echo "--conns 4 --size 16384 --depth 4" ;;
    d) echo "--mode rate --conns 50" ;;
    esac
}

kv() { # key line -> value of key=value in line
    sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

# One loadgen run against a fresh server; appends a line to $RAW.
run_one() { # scenario server round port
    local scen=$1 server=$2 round=$3 port=$4 args
    read -r -a args <<<"$(scenario_args "$scen")"
    start_server "$server" "$port"
    local spid=$SERVER_PID t0 t1 start end rc=0
    t0=$(cpu_ns "$spid")
    local busy0 busy1
    busy0=$(core_busy_ticks)
    start=$(date +%s.%N)
    nice -n "$NICE" taskset -c "$LOADGEN_CPU" "$LOADGEN" --addr "127.0.0.1:$port" "${args[@]}" \
        --secs "$SECS" --warmup "$WARMUP" --threads "$LOADGEN_THREADS" \
        >"$RUN_DIR/lg.out" 2>"$RUN_DIR/lg.err" &
    local lpid=$!
    PIDS+=("$lpid")
    wait "$lpid" || rc=$?
    forget_pid "$lpid"
    end=$(date +%s.%N)
    kill -0 "$spid" 2>/dev/null || die "server $server died during scenario $scen"
    t1=$(cpu_ns "$spid")
    busy1=$(core_busy_ticks)
    local rss
    rss=$(peak_rss_kb "$spid")
    stop_server_now "$spid"

    local out err
    out=$(tail -n 1 "$RUN_DIR/lg.out")
    err=$(grep '^loadgen: mode=' "$RUN_DIR/lg.err" | tail -n 1 || true)
    if [[ $rc != 0 ]]; then
        echo "   !! loadgen exit $rc against $server: $out" >&2
        sed 's/^/   !! /' "$RUN_DIR/lg.err" | head -n 8 >&2
    fi
    local rate p50 p99 errors total lgcpu lgns
    rate=$(kv msgs_per_s "$out")
    [[ -n $rate ]] || rate=$(kv conns_per_s "$out")
    p50=$(kv p50_us "$out")
    p99=$(kv p99_us "$out")
    errors=$(kv errors "$out")
    total=$(kv total "$err")
    lgcpu=$(kv window_cpu_pct "$err")
    lgns=$(kv cpu_ns_per_op "$err")
    # Load of other processes on the two bench CPUs during the run: their
    # busy time less the server's and the loadgen's own. High values mean
    # a noisy run.
    local lgticks
    lgticks=$(awk -v c="$(kv cpu_s "$err")" 'BEGIN { printf "%d", c * 100 }')
    awk -v s="$scen" -v srv="$server" -v r="$round" -v rate="${rate:-0}" \
        -v p50="${p50:-0}" -v p99="${p99:-0}" -v e="${errors:-1}" \
        -v ns=$((t1 - t0)) -v total="${total:-0}" -v wall="$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" \
        -v rss="${rss:-0}" -v lg="${lgcpu:-0}" -v rc="$rc" \
        -v busy=$((busy1 - busy0)) -v lgticks="$lgticks" -v lgns="${lgns:-0}" 'BEGIN {
            cpu_us = total > 0 ? ns / 1000 / total : 0
            srv_pct = wall > 0 ? ns / 1e7 / wall : 0
            others = wall > 0 ? (busy - ns / 1e7 - lgticks) / (2 * wall) : 0
            if (others < 0) others = 0
            printf "%s,%s,%s,%s,%s,%s,%s,%.3f,%.1f,%s,%s,%s,%s,%.1f,%.3f\n", s, srv, r, rate, p50, p99, e, cpu_us, srv_pct, rss, lg, total, rc, others, lgns / 1000
        }' >>"$RAW"
    printf '   %-7s round %s: %s | server cpu %s ms, loadgen cpu %s%%\n' \
        "$server" "$round" "$out" "$(((t1 - t0) / 1000000))" "${lgcpu:-?}"
}

stop_server_now() {
    stop_pid "$1"
}

# ----- report -----

median() { # numbers on stdin
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print 0 } else if (NR % 2) { print v[(NR + 1) / 2] }
        else { print (v[NR / 2] + v[NR / 2 + 1]) / 2 } }'
}

column_median() { # scenario server column
    awk -F, -v s="$1" -v srv="$2" -v c="$3" '$1 == s && $2 == srv { print $c }' "$RAW" | median
}

paired_ratio() { # scenario column server -> median over rounds of server / baseline
    awk -F, -v s="$1" -v c="$2" -v o="$3" -v b="$BASELINE" '
        $1 == s && $2 == o { x[$3] = $c }
        $1 == s && $2 == b { y[$3] = $c }
        END { for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r] }' "$RAW" | median
}

report_scenario() { # scenario
    local scen=$1 unit=msg
    [[ $scen == d ]] && unit=conn
    {
        echo
        echo "### $(scenario_title "$scen")"
        echo
        echo "loadgen $(scenario_args "$scen") --secs $SECS --warmup $WARMUP; median of $ROUNDS rounds"
        echo
        echo "| server | ${unit}s/s | p50 µs | p99 µs | server CPU µs/$unit | server CPU % | peak RSS KiB | loadgen CPU % | loadgen CPU µs/$unit | other load % | errors |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        local server col
        local -A med
        for server in $SERVERS; do
            for col in 4 5 6 7 8 9 10 11 14 15; do
                med[$server,$col]=$(column_median "$scen" "$server" "$col")
            done
            printf '| %s | %.0f | %.1f | %.1f | %.3f | %.0f | %.0f | %.0f | %.3f | %.0f | %s |\n' "$server" \
                "${med[$server,4]}" "${med[$server,5]}" "${med[$server,6]}" "${med[$server,8]}" \
                "${med[$server,9]}" "${med[$server,10]}" "${med[$server,11]}" "${med[$server,15]}" "${med[$server,14]}" \
                "$(awk -F, -v s="$scen" -v srv="$server" '$1 == s && $2 == srv { t += $7 } END { print t + 0 }' "$RAW")"
        done
        local other
        [[ " $SERVERS " == *" $BASELINE "* ]] || return 0
        for other in $SERVERS; do
            [[ $other == "$BASELINE" ]] && continue
            awk -v rate="$(paired_ratio "$scen" 4 "$other")" -v p50="$(paired_ratio "$scen" 5 "$other")" \
                -v p99="$(paired_ratio "$scen" 6 "$other")" -v cpu="$(paired_ratio "$scen" 8 "$other")" \
                -v rss="$(paired_ratio "$scen" 10 "$other")" -v o="$other" -v base="$BASELINE" '
                function f(x) { return x > 0 ? sprintf("%.2f", x) : "n/a" }
                BEGIN { printf "| **%s / %s** | **%s** | %s | **%s** | **%s** | | %s | | | | |\n", o, base, f(rate), f(p50), f(p99), f(cpu), f(rss) }'
        done
        [[ " $SERVERS " == *" $OURS "* ]] || return 0
        awk -v rate="$(paired_ratio "$scen" 4 "$OURS")" -v p99="$(paired_ratio "$scen" 6 "$OURS")" \
            -v cpu="$(paired_ratio "$scen" 8 "$OURS")" -v scen="$scen" '
            function f(x) { return x > 0 ? sprintf("%.2f", x) : "n/a" }
            function ok(c) { return c ? "PASS" : "FAIL" }
            BEGIN {
                print ""
                if (scen == "a")
                    printf "- issue target (a): msgs/s ratio %s >= 0.90: %s; p99 ratio %s <= 1.2: %s\n", f(rate), ok(rate >= 0.90), f(p99), ok(p99 > 0 && p99 <= 1.2)
                printf "- later target: rate ratio %s >= 0.95: %s; CPU per op ratio %s <= 1.05: %s\n", f(rate), ok(rate >= 0.95), f(cpu), ok(cpu > 0 && cpu <= 1.05)
            }'
    } | tee -a "$TABLES"
}

# ----- suites (add one: suite_NAME, and its name in BENCH_SUITES) -----

suite_echo() {
    [[ -x $LOADGEN ]] || die "loadgen not built"
    echo "== echo suite: servers [$SERVERS] on CPU $SERVER_CPU, loadgen on CPU $LOADGEN_CPU," \
        "${SECS}s + ${WARMUP}s warm-up per run, $ROUNDS rounds"
    echo "scenario,server,round,rate,p50_us,p99_us,errors,server_cpu_us_per_op,server_cpu_pct,peak_rss_kb,loadgen_cpu_pct,total_ops,loadgen_rc,other_load_pct,loadgen_cpu_us_per_op" >"$RAW"
    local scen round i server order
    for scen in $SCENARIOS; do
        echo "== running $(scenario_title "$scen")"
        for round in $(seq "$ROUNDS"); do
            # Alternate the order between rounds so drift hits both alike.
            if ((round % 2)); then
                order=$SERVERS
            else
                order=$(tr ' ' '\n' <<<"$SERVERS" | tac | tr '\n' ' ')
            fi
            for server in $order; do
                i=0
                for s in $SERVERS; do
                    [[ $s == "$server" ]] && break
                    i=$((i + 1))
                done
                run_one "$scen" "$server" "$round" $((BASE_PORT + i))
            done
        done
        report_scenario "$scen"
    done
}

suite_http() {
    # Hook for the HTTP part: wrk against packet's HTTP example, nginx and
    # thin, with the same pinning, rounds and table format.
    die "the http suite is not written yet"
}

main() {
    build
    local cpus
    cpus=$(nproc)
    ((cpus >= 2)) || echo "warning: $cpus CPU(s); server and loadgen share a core" >&2
    : >"$TABLES"
    local suite
    for suite in $SUITES; do
        "suite_$suite"
    done
    mkdir -p "$RESULTS"
    {
        echo "# Echo benchmark results"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1), kernel $(uname -r)"
        echo "- servers pinned to CPU $SERVER_CPU, loadgen ($LOADGEN_THREADS thread) to CPU $LOADGEN_CPU;" \
            "${SECS}s measured after ${WARMUP}s warm-up; median of $ROUNDS rounds, servers alternating;" \
            "ratio rows: median over rounds of the ratio within a round; nice $NICE"
        echo "- server CPU per op = (server CPU time over the whole loadgen run) / ops completed in that run;" \
            "server CPU = user+system run time of all its threads (schedstat, ns); server CPU % over the same run; peak RSS = VmHWM of a fresh server process;" \
            "other load % = busy time of the two bench CPUs not used by server or loadgen (noise indicator, 100 = both CPUs fully taken)"
        cat "$TABLES"
    } >"$RESULTS/latest.md"
    cp "$RAW" "$RESULTS/latest.csv"
    echo
    echo "== written: bench/results/latest.md, bench/results/latest.csv"
}

main "$@"
