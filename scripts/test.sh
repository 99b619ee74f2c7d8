#!/usr/bin/env bash
# Runs every test, including the privileged ones (XDP through
# BPF_PROG_TEST_RUN, end-to-end tests in network namespaces). Run as root
# (it re-runs itself with sudo if needed); with CI=true a test that cannot get root or namespaces fails instead of
# skipping.
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
go test -count=1 -timeout 60m ./... "$@"
