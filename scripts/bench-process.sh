#!/bin/sh
# Process-mode figures in one run, for a machine without containerd (and
# possibly without Go, such as a lent benchmark machine that gets prebuilt
# binaries):
#   1. cold start (keep_alive 0) of the Python hello on the request path,
#      plain (process.zygote: false) and forked from the zygote, then from
#      pre-provisioned sandboxes paced at 5 calls/s;
#   2. warm latency and throughput through wisp with wrk at 1, 8, 32
#      connections, then the same Python runtime host served directly
#      (`wisp bench host`), the baseline for wisp's own overhead;
#   3. the zygote cold start's stage breakdown
#      (internal/sandbox/process's BenchmarkZygoteColdStartFigures).
# Needs root. Environment: WISP (the wisp binary; default: go build to
# bin/wisp), WRK (default: wrk on PATH), PROCESS_TEST (a compiled
# `go test -c ./internal/sandbox/process` binary; default: go test).
# Usage: sudo scripts/bench-process.sh [seconds per wrk run, default 10] [cold calls, default 300]
set -eu
cd "$(dirname "$0")/.."
DUR="${1:-10}"
COLD_N="${2:-300}"
. scripts/bench-common.sh
serve() { # serve PROVISIONED ZYGOTE
	stop_serve
	printf 'log:\n  level: warn\nprocess:\n  provisioned: %s\n  zygote: %s\ncontainer:\n  provisioned: 0\n' "$1" "$2" >"$DATA/wisp.yaml"
	start_serve "$WISP"
	"$WISP" deploy -f scripts/bench/hello/function.yaml >/dev/null
	"$WISP" deploy -f scripts/bench/hello-cold/function.yaml >/dev/null
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), cgroup $(stat -fc %T /sys/fs/cgroup), $(/usr/bin/python3 --version)"
serve 0 false
echo "== cold start, sandbox and interpreter made on the request path (provisioned: 0, zygote: false): $COLD_N sequential calls"
"$WISP" bench hello-cold -n "$COLD_N" -c 1 -q
serve 0 true
"$WISP" invoke hello-cold >/dev/null # the first Python start builds the zygote
sleep 2
echo "== cold start, forked from the zygote on the request path (provisioned: 0, zygote: true): $COLD_N sequential calls"
"$WISP" bench hello-cold -n "$COLD_N" -c 1 -q
serve 2 true
"$WISP" invoke hello-cold >/dev/null
sleep 2
echo "== cold start, pre-provisioned sandboxes (provisioned: 2), paced at 5 calls/s: $((COLD_N * 2 / 3)) calls"
"$WISP" bench hello-cold -n "$((COLD_N * 2 / 3))" -c 1 -r 5 -q
"$WISP" invoke hello >/dev/null # warm it
for c in 1 8 32; do
	t=$(threads $c)
	echo "== warm through wisp: wrk -t$t -c$c -d${DUR}s"
	"$WRK" -t"$t" -c"$c" -d"${DUR}s" --latency -H "Authorization: Bearer $WISP_TOKEN" "$WISP_URL/function/hello" | grep -E 'Latency|50%|90%|99%|Requests/sec|Non-2xx'
done
kill -TERM "$SERVE"; wait "$SERVE" || true; SERVE=""
"$WISP" bench host -f scripts/bench/hello/function.yaml --listen "127.0.0.1:$DIRECT" 2>/dev/null &
HOST=$!
sleep 2
for c in 1 8 32; do
	t=$(threads $c)
	echo "== same host directly (baseline): wrk -t$t -c$c -d${DUR}s"
	"$WRK" -t"$t" -c"$c" -d"${DUR}s" --latency "http://127.0.0.1:$DIRECT/" | grep -E 'Latency|50%|90%|99%|Requests/sec|Non-2xx'
done
echo "== zygote cold start stages (Backend.Start and the first call; 50 each, interleaved with plain starts)"
if [ -n "${PROCESS_TEST:-}" ]; then
	(cd internal/sandbox/process && "$PROCESS_TEST" -test.run '^$' -test.bench ZygoteColdStartFigures -test.benchtime 1x -test.v)
else
	go test -count=1 -v -run '^$' -bench ZygoteColdStartFigures -benchtime 1x ./internal/sandbox/process/
fi 2>&1 | grep 'zygote_bench_test.go' | sed 's/^ *zygote_bench_test.go:[0-9]*: //'
