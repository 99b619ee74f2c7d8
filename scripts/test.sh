#!/usr/bin/env bash
# Runs every test, including the privileged ones (XDP through
# BPF_PROG_TEST_RUN, end-to-end tests in network namespaces). Run as root;
# with CI=true a test that cannot get root or namespaces fails instead of
# skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
scripts/setup.sh
go test -count=1 -timeout 60m ./... "$@"
