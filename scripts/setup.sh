#!/usr/bin/env bash
# Installs what Switchyard needs on a fresh Debian 12 machine (run as root):
# the BPF toolchain, network tools the tests and the lab use, and the Go
# modules. Safe to run again. Re-runs itself with sudo if not root.
set -euo pipefail
# Root is needed (apt-get). Re-run with sudo only when not root and sudo
# exists (a minimal Debian root machine has no sudo, and needs none).
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		exec sudo --preserve-env=CI "$0" "$@"
	fi
	echo "$(basename "$0"): must run as root (apt-get), and sudo is not installed: run it as root" >&2
	exit 1
fi
cd "$(dirname "$0")/.."

packages=(clang llvm libbpf-dev bpftool iproute2 ethtool iperf3 curl vsftpd haproxy nginx libnginx-mod-stream frr)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null; then
	if [ -x /usr/local/go/bin/go ]; then
		export PATH=/usr/local/go/bin:$PATH
	else
		echo "setup: Go is not installed (expected at /usr/local/go); install Go 1.26 or newer" >&2
		exit 1
	fi
fi
go mod download
