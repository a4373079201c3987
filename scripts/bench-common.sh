# Sourced by the bench scripts (from the repository root, after set -eu):
# the wisp binary ($WISP, else built to bin/wisp), wrk ($WRK), a scratch
# directory $DATA, the ports, and a cleanup that stops the server ($SERVE)
# and the directly served host ($HOST) on exit.
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
