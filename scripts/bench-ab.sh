#!/bin/sh
# Compares wisp builds on the warm path, interleaved in one run so that the
# comparison holds on a shared, noisy machine: ROUNDS rounds, each running
# every build given, then the Python runtime host served directly (`wisp
# bench host` of the first build) as the baseline, each with one wrk run at
# 32 connections on the Python hello (scripts/bench/hello). Every process
# (server, hosts, wrk) is pinned to CPUS with taskset, so a big machine can
# stand in for a small one without its neighbours' noise. Prints per run
# the throughput, latency and the server's CPU time per call (from
# /proc/PID/stat: user + system), then the medians.
# Needs root (sandboxes), wrk and taskset. Environment: CPUS (default 0,1),
# ROUNDS (default 3), DUR (seconds per run, default 10), WRK.
# Usage: sudo scripts/bench-ab.sh LABEL=path/to/wisp [LABEL=path/to/wisp ...]
#   e.g. git worktree add /tmp/old HEAD~3 && (cd /tmp/old && go build -o /tmp/wisp-old ./cmd/wisp)
#        sudo scripts/bench-ab.sh before=/tmp/wisp-old after=bin/wisp
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 LABEL=path/to/wisp [LABEL=path/to/wisp ...]" >&2; exit 2; }
CPUS="${CPUS:-0,1}"
ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-10}"
WISP="${1#*=}"
. scripts/bench-common.sh
PIN="taskset -c $CPUS"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# measure LABEL URL PID [wrk args]: one wrk run; PID's CPU ticks per call.
measure() {
	label=$1 url=$2 pid=$3
	shift 3
	t0=$(ticks "$pid")
	$PIN "$WRK" -t2 -c32 -d"${DUR}s" --latency "$@" "$url" >"$DATA/wrk.txt"
	t1=$(ticks "$pid")
	awk -v l="$label" -v t0="$t0" -v t1="$t1" -v d="$DUR" -v hz="$(getconf CLK_TCK)" '
		/^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /^Requests\/sec/ {rps=$2}
		END {printf "%s: %s req/s, p50 %s, p99 %s, server %.1f us/call\n", l, rps, p50, p99, (t1-t0)*1e6/hz/(rps*d)}' \
		"$DATA/wrk.txt" | tee -a "$DATA/results"
}
echo "== machine: $(nproc) cores, pinned to $CPUS, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
for r in $(seq "$ROUNDS"); do
	echo "== round $r of $ROUNDS: wrk ${DUR}s per run"
	for build in "$@"; do
		label=${build%%=*} bin=${build#*=}
		rm -rf "$DATA/data"
		printf 'log:\n  level: warn\n' >"$DATA/wisp.yaml"
		start_serve "$bin" $PIN
		"$bin" deploy -f scripts/bench/hello/function.yaml >/dev/null
		"$bin" bench hello -n 400 -c 4 -q >/dev/null
		measure "$label" "$WISP_URL/function/hello" "$SERVE" -H "Authorization: Bearer $WISP_TOKEN"
		stop_serve
	done
	$PIN "$WISP" bench host -f scripts/bench/hello/function.yaml --listen "127.0.0.1:$DIRECT" 2>/dev/null &
	SERVE=$!
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DIRECT/" >/dev/null && break; sleep 0.1; done
	measure "bare host" "http://127.0.0.1:$DIRECT/" "$SERVE"
	stop_serve
done
echo "== medians over $ROUNDS rounds"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for build in "$@" "bare host=x"; do
	label=${build%%=*}
	rps=$(grep "^$label:" "$DATA/results" | awk '{print $(NF-8)}' | median)
	us=$(grep "^$label:" "$DATA/results" | awk '{print $(NF-1)}' | median)
	echo "$label: $rps req/s, server $us us/call"
done
