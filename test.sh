#!/bin/sh
# Runs wisp's whole test suite: unit tests, and integration tests against
# real sandboxes (namespaces, cgroups, seccomp), with the race detector.
# Sandboxes need root: run as root or with sudo. Installs missing Debian
# packages first (scripts/setup.sh).
set -eu
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
if [ "$(id -u)" -ne 0 ]; then
	echo "wisp tests: sandboxes need root; re-running with sudo" >&2
	exec sudo -E env "PATH=$PATH" sh "$0" "$@"
fi
sh scripts/setup.sh
go vet ./...
exec go test -race -count=1 -timeout 20m ./... "$@"
