#!/usr/bin/env bash
# Builds switchyard and runs the lab: a distributor, traffic managers and a
# client in network namespaces, real load, a live view and a report. Run as
# root. Extra arguments go to `switchyard lab` (see `switchyard lab --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
scripts/setup.sh
go build -o bin/switchyard ./cmd/switchyard
exec bin/switchyard lab "$@"
