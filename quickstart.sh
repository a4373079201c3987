#!/bin/sh
# One command from a fresh clone to a running wisp with the example
# functions deployed: installs missing Debian packages, builds bin/wisp, and
# runs `wisp serve --demo` with its data in ./.wisp-data. Ctrl-C stops it
# and removes every sandbox. Sandboxes need root: run as root or with sudo.
set -eu
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
if [ "$(id -u)" -ne 0 ]; then
	echo "wisp quickstart: sandboxes need root; re-running with sudo" >&2
	exec sudo -E env "PATH=$PATH" sh "$0" "$@"
fi
sh scripts/setup.sh
echo "wisp quickstart: building bin/wisp" >&2
go build -o bin/wisp ./cmd/wisp
exec bin/wisp serve --demo --data .wisp-data --listen "${WISP_LISTEN:-127.0.0.1:8080}" "$@"
