#!/bin/sh
# Installs the Debian packages wisp and its tests need, if any is missing:
# python3 and nodejs (function runtimes), procps (ps, used by the isolation
# tests), iproute2, wrk (warm-path benchmarks) and hyperfine. Idempotent;
# needs root (or sudo) only when something is missing.
set -eu
pkgs=""
need() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ] || pkgs="$pkgs $3"; }
need /usr/bin/python3 /usr/bin/python3 python3
need /usr/bin/node /usr/bin/node nodejs
need ps /bin/ps procps
need ip /sbin/ip iproute2
need wrk /usr/bin/wrk wrk
need git /usr/bin/git git
if [ -n "$pkgs" ]; then
	echo "wisp setup: installing Debian packages:$pkgs" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "wisp setup: Go is not installed: install Go 1.26 or newer from https://go.dev/dl" >&2
	exit 1
fi
