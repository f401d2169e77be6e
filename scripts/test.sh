#!/usr/bin/env bash
# Runs every test against real servers: installs Mosquitto and builds Dendrite when missing
# (scripts/install-deps.sh), then the unit, fuzz-seed and integration tests with the race
# detector. Extra arguments go to `go test` (e.g. -run TestSendKinds -v).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${SKIP_INSTALL:-} != 1 ]]; then
	scripts/install-deps.sh
fi
go test -race -tags goolm -count=1 -timeout 30m "$@" ./...
