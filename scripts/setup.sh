#!/bin/sh
# Installs the Debian packages wisp and its tests need, if any is missing:
# python3 and nodejs (function runtimes), containerd and runc (container
# mode), procps (ps, used by the isolation tests), iproute2, wrk (warm-path
# benchmarks), git and nats-server (the NATS trigger tests; wisp itself
# needs it only when triggers.nats_url names a server); then makes sure
# containerd is running. Idempotent;
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
need containerd /usr/bin/containerd containerd
need runc /usr/sbin/runc runc
need nats-server /usr/sbin/nats-server nats-server
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

# containerd: started by its systemd unit where systemd runs; otherwise
# (containers, CI machines without an init system) started here in the
# background, logging to /var/log/wisp-containerd.log.
if ! ctr version >/dev/null 2>&1; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	if [ -d /run/systemd/system ]; then
		$SUDO systemctl start containerd || true
	else
		echo "wisp setup: starting containerd (log: /var/log/wisp-containerd.log)" >&2
		$SUDO sh -c 'nohup containerd >>/var/log/wisp-containerd.log 2>&1 &'
	fi
	for _ in $(seq 100); do
		ctr version >/dev/null 2>&1 && break
		sleep 0.1
	done
	if ! ctr version >/dev/null 2>&1; then
		echo "wisp setup: containerd did not start (see /var/log/wisp-containerd.log); container mode will be unavailable" >&2
	fi
fi
