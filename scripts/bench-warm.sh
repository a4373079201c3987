#!/bin/sh
# Warm-path throughput and latency, interleaved in one run so that the
# ratios hold on a shared, noisy machine: ROUNDS rounds, each of
#   A. wisp with pipelining (the default),
#   B. wisp with pipelining off (execution.pipeline_depth: 0),
#   C. the same Python runtime host served directly (`wisp bench host`: no
#      sandbox, scheduler, store or gateway), the baseline,
#   D. the smallest Python HTTP server (scripts/bench/pyserver: asyncio,
#      answers "hello" without parsing): "the Python server alone" that
#      issue 2's goals were set against, to place this machine,
# each measured with wrk at 1 and 32 connections on the Python hello
# (scripts/bench/hello: max_instances 4, concurrency 1). Prints one line per
# run, then the median of each configuration and its ratio to C.
# Needs root (sandboxes) and wrk. Environment: WISP (the wisp binary;
# default: go build to bin/wisp), WRK (default: wrk on PATH).
# Usage: sudo scripts/bench-warm.sh [seconds per wrk run, default 10] [rounds, default 3]
set -eu
cd "$(dirname "$0")/.."
DUR="${1:-10}"
ROUNDS="${2:-3}"
. scripts/bench-common.sh
# measure LABEL URL CONNS [wrk args]: one wrk run, one result line.
measure() {
	label=$1 url=$2 c=$3
	shift 3
	"$WRK" -t"$(threads "$c")" -c"$c" -d"${DUR}s" --latency "$@" "$url" >"$DATA/wrk.txt"
	awk -v l="$label" -v c="$c" '
		/^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /^Requests\/sec/ {rps=$2} /Non-2xx/ {bad=$NF}
		END {printf "%s c=%s: %s req/s, p50 %s, p99 %s%s\n", l, c, rps, p50, p99, (bad ? ", non-2xx " bad : "")}' "$DATA/wrk.txt" |
		tee -a "$DATA/results"
}
serve() { # serve PIPELINE_DEPTH
	stop_serve
	printf 'log:\n  level: warn\nexecution:\n  pipeline_depth: %s\n' "$1" >"$DATA/wisp.yaml"
	start_serve "$WISP"
	"$WISP" deploy -f scripts/bench/hello/function.yaml >/dev/null
	# Four instances warm, and the pool has measured its calls.
	"$WISP" bench hello -n 400 -c 4 -q >/dev/null
}
host() {
	stop_serve
	"$WISP" bench host -f scripts/bench/hello/function.yaml --listen "127.0.0.1:$DIRECT" 2>/dev/null &
	SERVE=$!
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DIRECT/" >/dev/null && break; sleep 0.1; done
}
pyserver() {
	stop_serve
	/usr/bin/python3 scripts/bench/pyserver/server.py "$DIRECT" &
	SERVE=$!
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DIRECT/" >/dev/null && break; sleep 0.1; done
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), cgroup $(stat -fc %T /sys/fs/cgroup), $(/usr/bin/python3 --version)"
for r in $(seq "$ROUNDS"); do
	echo "== round $r of $ROUNDS: wrk ${DUR}s per run"
	serve 32
	for c in 1 32; do measure "A pipelined" "$WISP_URL/function/hello" "$c" -H "Authorization: Bearer $WISP_TOKEN"; done
	serve 0
	for c in 1 32; do measure "B not pipelined" "$WISP_URL/function/hello" "$c" -H "Authorization: Bearer $WISP_TOKEN"; done
	host
	for c in 1 32; do measure "C bare host" "http://127.0.0.1:$DIRECT/" "$c"; done
	pyserver
	for c in 1 32; do measure "D Python server alone" "http://127.0.0.1:$DIRECT/" "$c"; done
	stop_serve
done
echo "== medians over $ROUNDS rounds (ratio to the bare host's median)"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# field LABEL C N: field N (1 req/s, 4 p50, 6 p99, those two in µs) of that
# configuration's lines.
field() {
	grep "^$1 c=$2:" "$DATA/results" | sed "s/^$1 c=$2: //; s/,//g" |
		awk -v n="$3" '{v=$n; x=v+0; if (v ~ /ms$/) x*=1000; else if (v ~ /[0-9]s$/) x*=1000000; print x}'
}
for c in 1 32; do
	base=$(field "C bare host" "$c" 1 | median)
	for label in "A pipelined" "B not pipelined" "C bare host" "D Python server alone"; do
		rps=$(field "$label" "$c" 1 | median)
		p50=$(field "$label" "$c" 4 | median)
		p99=$(field "$label" "$c" 6 | median)
		awk -v l="$label" -v c="$c" -v r="$rps" -v b="$base" -v p="$p50" -v q="$p99" \
			'BEGIN {printf "%s c=%s: %.0f req/s (%.0f%% of the bare host), p50 %.0f us, p99 %.0f us\n", l, c, r, 100*r/b, p, q}'
	done
done
