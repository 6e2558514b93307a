# Sourced by the A/B scripts (bench/https_ab.sh, bench/echo_ab.sh): two
# builds measured in turn, the order alternating between rounds so that a
# drift of the machine's speed favours neither, then the medians of their
# runs, since single runs on a shared machine scatter.

# ab_wait_listening LOG: waits up to 5 s for the server's "listening" line.
ab_wait_listening() {
    for _ in $(seq 100); do
        grep -q listening "$1" && return 0
        sleep 0.05
    done
    echo "the server did not start: $(cat "$1")" >&2
    return 1
}

# ab_rounds ROUNDS RUN: per round `RUN old ROUND` and `RUN new ROUND`, old
# first in odd rounds.
ab_rounds() {
    local round
    for round in $(seq "$1"); do
        if ((round % 2)); then
            "$2" old "$round"
            "$2" new "$round"
        else
            "$2" new "$round"
            "$2" old "$round"
        fi
    done
}

# ab_median RUNS WHICH FIELD: the median of FIELD=VALUE over the lines of
# file RUNS that start with WHICH.
ab_median() {
    grep "^$2 " "$1" | sed "s/.*$3=\([0-9.]*\).*/\1/" | sort -n |
        awk '{ a[NR] = $1 } END { print (a[int((NR + 1) / 2)] + a[int(NR / 2) + 1]) / 2 }'
}
