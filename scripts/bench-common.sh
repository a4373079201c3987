# Sourced by the bench scripts (from the repository root, after set -eu):
# the wisp binary ($WISP, else built to bin/wisp), wrk ($WRK), a scratch
# directory $DATA, the ports, and a cleanup that stops the server ($SERVE)
# and the directly served host ($HOST) on exit; start_serve and stop_serve
# start and stop wisp serve.
export PATH="$PATH:/usr/local/go/bin"
if [ -z "${WISP:-}" ]; then
	go build -o bin/wisp ./cmd/wisp
	WISP=bin/wisp
fi
WRK="${WRK:-wrk}"
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
# threads C: wrk threads for C connections (at most 4, at most the CPUs).
threads() { t=$1; [ "$t" -gt 4 ] && t=4; [ "$t" -gt "$(nproc)" ] && t=$(nproc); echo "$t"; }
# start_serve BIN [PREFIX ...]: BIN serve (data $DATA/data, config
# $DATA/wisp.yaml) on $PORT in the background as $SERVE, run under PREFIX
# (e.g. taskset -c 0,1); returns once it answers, with WISP_TOKEN exported.
start_serve() {
	bin=$1
	shift
	"$@" "$bin" serve --data "$DATA/data" --listen "127.0.0.1:$PORT" --config "$DATA/wisp.yaml" 2>>"$DATA/serve.log" &
	SERVE=$!
	for _ in $(seq 100); do
		[ -f "$DATA/data/admin.key" ] && WISP_TOKEN="$(cat "$DATA/data/admin.key")" && export WISP_TOKEN &&
			"$bin" ls >/dev/null 2>&1 && break
		sleep 0.1
	done
}
# stop_serve: stops what start_serve (or a caller) started as $SERVE.
stop_serve() {
	if [ -n "$SERVE" ]; then kill -TERM "$SERVE"; wait "$SERVE" || true; SERVE=""; fi
}
