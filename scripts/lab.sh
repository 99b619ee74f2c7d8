#!/usr/bin/env bash
# Builds switchyard and runs the lab: a client behind a router, distributors
# that mirror each other, traffic managers, in network namespaces; real load,
# a live view, a report and an HTML page (switchyard-lab-report.html). Run as
# root (it re-runs itself with sudo if needed). Extra arguments go to
# `switchyard lab` (see `switchyard lab --help`).
set -euo pipefail
# Root is needed (network namespaces, XDP programs, apt-get). Re-run with
# sudo only when not root and sudo exists (a minimal Debian root machine has
# no sudo, and needs none).
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		exec sudo --preserve-env=CI "$0" "$@"
	fi
	echo "$(basename "$0"): must run as root (network namespaces, XDP programs, apt-get), and sudo is not installed: run it as root" >&2
	exit 1
fi
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
scripts/setup.sh
go build -o bin/switchyard ./cmd/switchyard
exec bin/switchyard lab "$@"
