#!/bin/sh
# Reproduces the figures in BENCHMARKS.md, all in one run on this machine:
#   1. process cold start (keep_alive 0) of the Python hello with every
#      sandbox made on the request path (process.provisioned: 0), first
#      with a new interpreter per sandbox (process.zygote: false), then
#      forked from the zygote (the default);
#   2. the same with pre-provisioned sandboxes (the default), paced at
#      5 calls/s and back to back;
#   3. warm latency and throughput through wisp with wrk at 1, 8, 32 connections;
#   4. the same Python runtime host served directly (`wisp bench host`: no
#      sandbox, scheduler, store or gateway), with the same wrk runs: the
#      baseline for wisp's own overhead;
#   5. result cache hits of the same hello marked deterministic, with wrk;
#   6. container mode (when containerd runs): cold starts on demand and
#      from pre-started containers, warm wrk runs, and `ctr run --rm` of the
#      same image as the baseline; then the container cold start's stage
#      breakdown (internal/sandbox/container's BenchmarkColdStartFigures).
# Needs root (sandboxes) and wrk (scripts/setup.sh installs it and containerd).
# Usage: sudo scripts/bench.sh [seconds per wrk run, default 10] [cold calls, default 300]
set -eu
cd "$(dirname "$0")/.."
DUR="${1:-10}"
COLD_N="${2:-300}"
WISP= # always this checkout's build: the script calls bin/wisp
. scripts/bench-common.sh
CONTAINERS=""
ctr version >/dev/null 2>&1 && CONTAINERS=1
serve() { # serve PROVISIONED [ZYGOTE true|false]
	if [ -n "$SERVE" ]; then kill -TERM "$SERVE"; wait "$SERVE" || true; fi
	printf 'log:\n  level: warn\nprocess:\n  provisioned: %s\n  zygote: %s\ncontainer:\n  provisioned: %s\n  namespace: wisp-bench\n' "$1" "${2:-true}" "$1" >"$DATA/wisp.yaml"
	bin/wisp serve --data "$DATA/data" --listen "127.0.0.1:$PORT" --config "$DATA/wisp.yaml" 2>>"$DATA/serve.log" &
	SERVE=$!
	for _ in $(seq 100); do curl -sf "$WISP_URL/healthz" >/dev/null && break; sleep 0.1; done
	WISP_TOKEN="$(cat "$DATA/data/admin.key")"
	export WISP_TOKEN
	bin/wisp deploy -f scripts/bench/hello/function.yaml >/dev/null
	bin/wisp deploy -f scripts/bench/hello-cold/function.yaml >/dev/null
	bin/wisp deploy -f scripts/bench/hello-cached/function.yaml >/dev/null
	if [ -n "$CONTAINERS" ]; then
		bin/wisp deploy -f scripts/bench/hello-container/function.yaml >/dev/null
		bin/wisp deploy -f scripts/bench/hello-cold-container/function.yaml >/dev/null
	fi
}
pcts() { # pcts LABEL < one duration in ms per line
	sort -n | awk -v l="$1" '{a[NR]=$1} END {printf "%s: n=%d p50 %.1f ms p90 %.1f ms p99 %.1f ms\n", l, NR, a[int(NR*0.5+0.5)], a[int(NR*0.9+0.5)], a[int(NR*0.99+0.5)]}'
}

echo "== machine"
echo "$(nproc) cores, $(grep MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo
serve 0 false
echo "== cold start, sandbox and interpreter made on the request path (provisioned: 0, zygote: false): $COLD_N sequential calls"
bin/wisp bench hello-cold -n "$COLD_N" -c 1 -q
serve 0 true
bin/wisp invoke hello-cold >/dev/null # the first Python start builds the zygote
sleep 2
echo "== cold start, forked from the zygote into a fresh sandbox on the request path (provisioned: 0, zygote: true): $COLD_N sequential calls"
bin/wisp bench hello-cold -n "$COLD_N" -c 1 -q
if [ -n "$CONTAINERS" ]; then
	bin/wisp invoke hello-cold-container >/dev/null # builds (or finds) the image
	echo "== container cold start, container made on the request path (provisioned: 0): $((COLD_N / 2)) sequential calls"
	bin/wisp bench hello-cold-container -n "$((COLD_N / 2))" -c 1 -q
fi
echo
serve 2
bin/wisp invoke hello-cold >/dev/null # first start of the runtime: spares follow
sleep 2
echo "== cold start, pre-provisioned sandboxes (provisioned: 2), paced at 5 calls/s: $COLD_N calls"
bin/wisp bench hello-cold -n "$COLD_N" -c 1 -r 5 -q
echo "== cold start, pre-provisioned sandboxes, back to back (faster than spares are made): $COLD_N calls"
bin/wisp bench hello-cold -n "$COLD_N" -c 1 -q
if [ -n "$CONTAINERS" ]; then
	bin/wisp invoke hello-cold-container >/dev/null
	sleep 3
	echo "== container cold start, pre-started containers (provisioned: 2), paced at 2 calls/s: $((COLD_N / 2)) calls"
	bin/wisp bench hello-cold-container -n "$((COLD_N / 2))" -c 1 -r 2 -q
fi
echo
curl -s -H "Authorization: Bearer $WISP_TOKEN" "$WISP_URL/function/hello" >/dev/null # warm it
for c in 1 8 32; do
	t=$c; [ "$t" -gt 2 ] && t=2
	echo "== warm through wisp: wrk -t$t -c$c -d${DUR}s"
	wrk -t"$t" -c"$c" -d"${DUR}s" --latency -H "Authorization: Bearer $WISP_TOKEN" "$WISP_URL/function/hello" | grep -E 'Latency|50%|90%|99%|Requests/sec|Non-2xx'
done
curl -s -H "Authorization: Bearer $WISP_TOKEN" "$WISP_URL/function/hello-cached" >/dev/null # fills the cache
for c in 1 32; do
	t=$c; [ "$t" -gt 2 ] && t=2
	echo "== result cache hits (deterministic hello): wrk -t$t -c$c -d${DUR}s"
	wrk -t"$t" -c"$c" -d"${DUR}s" --latency -H "Authorization: Bearer $WISP_TOKEN" "$WISP_URL/function/hello-cached" | grep -E 'Latency|50%|90%|99%|Requests/sec|Non-2xx'
done
if [ -n "$CONTAINERS" ]; then
	curl -s -H "Authorization: Bearer $WISP_TOKEN" "$WISP_URL/function/hello-container" >/dev/null
	for c in 1 32; do
		t=$c; [ "$t" -gt 2 ] && t=2
		echo "== warm container through wisp: wrk -t$t -c$c -d${DUR}s"
		wrk -t"$t" -c"$c" -d"${DUR}s" --latency -H "Authorization: Bearer $WISP_TOKEN" "$WISP_URL/function/hello-container" | grep -E 'Latency|50%|90%|99%|Requests/sec|Non-2xx'
	done
	IMG="$(ctr -n wisp-bench images ls -q | grep 'runtime/python3:' | head -1)"
	echo "== baseline: ctr run --rm --read-only $IMG python3 -S -c pass, 20 runs"
	for i in $(seq 20); do
		t0=$(date +%s%N)
		ctr -n wisp-bench run --rm --read-only "$IMG" "wisp-bench-ctr-$i" /usr/bin/python3 -S -c pass
		echo $(( ($(date +%s%N) - t0) / 1000 ))
	done | awk '{print $1/1000}' | pcts "ctr run --rm"
fi
bin/wisp bench host -f scripts/bench/hello/function.yaml --listen "127.0.0.1:$DIRECT" 2>/dev/null &
HOST=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DIRECT/" >/dev/null && break; sleep 0.1; done
for c in 1 8 32; do
	t=$c; [ "$t" -gt 2 ] && t=2
	echo "== same host directly (baseline): wrk -t$t -c$c -d${DUR}s"
	wrk -t"$t" -c"$c" -d"${DUR}s" --latency -H "Authorization: Bearer $WISP_TOKEN" "http://127.0.0.1:$DIRECT/" | grep -E 'Latency|50%|90%|99%|Requests/sec|Non-2xx'
done
if [ -n "$CONTAINERS" ]; then
	echo
	echo "== container cold start stages (Backend.Start and the first call, then Close; 30 each)"
	go test -count=1 -v -run '^$' -bench ColdStartFigures -benchtime 1x ./internal/sandbox/container/ | grep 'bench_test.go' | sed 's/^ *bench_test.go:[0-9]*: //'
fi
echo
echo "== density: 1000 idle warm process instances of a Python hello"
serve 2 true
bin/wisp bench density -n 1000 2>/dev/null
