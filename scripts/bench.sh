#!/bin/sh
# Reproduces the figures in BENCHMARKS.md, all in one run on this machine:
#   1. process cold start (keep_alive 0) of the Python hello with every
#      sandbox made on the request path (process.provisioned: 0);
#   2. the same with pre-provisioned sandboxes (the default), paced at
#      5 calls/s and back to back;
#   3. warm latency and throughput through wisp with wrk at 1, 8, 32 connections;
#   4. the same Python runtime host served directly (`wisp bench host`: no
#      sandbox, scheduler, store or gateway), with the same wrk runs: the
#      baseline for wisp's own overhead.
# Needs root (sandboxes) and wrk (scripts/setup.sh installs it).
# Usage: sudo scripts/bench.sh [seconds per wrk run, default 10] [cold calls, default 300]
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
DUR="${1:-10}"
COLD_N="${2:-300}"
go build -o bin/wisp ./cmd/wisp
DATA="$(mktemp -d)"
PORT=18080
DIRECT=18081
SERVE=""
HOST=""
cleanup() {
	[ -n "$HOST" ] && kill "$HOST" 2>/dev/null || true
	[ -n "$SERVE" ] && kill -TERM "$SERVE" 2>/dev/null && wait "$SERVE" 2>/dev/null || true
	rm -rf "$DATA"
}
trap cleanup EXIT INT TERM
export WISP_URL="http://127.0.0.1:$PORT"
serve() { # serve PROVISIONED
	if [ -n "$SERVE" ]; then kill -TERM "$SERVE"; wait "$SERVE" || true; fi
	printf 'log:\n  level: warn\nprocess:\n  provisioned: %s\n' "$1" >"$DATA/wisp.yaml"
	bin/wisp serve --data "$DATA/data" --listen "127.0.0.1:$PORT" --config "$DATA/wisp.yaml" 2>>"$DATA/serve.log" &
	SERVE=$!
	for _ in $(seq 100); do curl -sf "$WISP_URL/healthz" >/dev/null && break; sleep 0.1; done
	bin/wisp deploy -f scripts/bench/hello/function.yaml >/dev/null
	bin/wisp deploy -f scripts/bench/hello-cold/function.yaml >/dev/null
}

echo "== machine"
echo "$(nproc) cores, $(grep MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo
serve 0
echo "== cold start, sandbox made on the request path (provisioned: 0): $COLD_N sequential calls"
bin/wisp bench hello-cold -n "$COLD_N" -c 1 -q
echo
serve 2
bin/wisp invoke hello-cold >/dev/null # first start of the runtime: spares follow
sleep 2
echo "== cold start, pre-provisioned sandboxes (provisioned: 2), paced at 5 calls/s: $COLD_N calls"
bin/wisp bench hello-cold -n "$COLD_N" -c 1 -r 5 -q
echo "== cold start, pre-provisioned sandboxes, back to back (faster than spares are made): $COLD_N calls"
bin/wisp bench hello-cold -n "$COLD_N" -c 1 -q
echo
curl -s "$WISP_URL/function/hello" >/dev/null # warm it
for c in 1 8 32; do
	t=$c; [ "$t" -gt 2 ] && t=2
	echo "== warm through wisp: wrk -t$t -c$c -d${DUR}s"
	wrk -t"$t" -c"$c" -d"${DUR}s" --latency "$WISP_URL/function/hello" | grep -E 'Latency|50%|90%|99%|Requests/sec|Non-2xx'
done
bin/wisp bench host -f scripts/bench/hello/function.yaml --listen "127.0.0.1:$DIRECT" 2>/dev/null &
HOST=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DIRECT/" >/dev/null && break; sleep 0.1; done
for c in 1 8 32; do
	t=$c; [ "$t" -gt 2 ] && t=2
	echo "== same host directly (baseline): wrk -t$t -c$c -d${DUR}s"
	wrk -t"$t" -c"$c" -d"${DUR}s" --latency "http://127.0.0.1:$DIRECT/" | grep -E 'Latency|50%|90%|99%|Requests/sec|Non-2xx'
done
