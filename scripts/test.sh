#!/usr/bin/env bash
# Runs every test against real servers: installs Mosquitto, PostgreSQL, ffmpeg, Docker,
# docker-compose and Node, builds Dendrite when missing (scripts/install-deps.sh), then the
# unit, fuzz-seed and integration tests with the race detector, and prints the figures the tests
# measured; then a smoke run of the benchmark (cmd/matrix2mqtt-bench -short, about a minute) so
# that it keeps working. Extra arguments
# go to `go test` (e.g. -run TestSendKinds -v) and skip the benchmark unless BENCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${SKIP_INSTALL:-} != 1 ]]; then
	scripts/install-deps.sh
fi
MATRIX2MQTT_REPORT=$(mktemp)
export MATRIX2MQTT_REPORT

GO_TEST_LOG=$(mktemp)
trap 'rm -f "$MATRIX2MQTT_REPORT" "$GO_TEST_LOG"' EXIT

status=0
go test -race -tags goolm -count=1 -timeout 40m "$@" ./... 2>&1 | tee "$GO_TEST_LOG" || status=$?
if ((status != 0)); then
	# The bridge logs of a failed test can be long: repeat what failed, and why, at the end.
	echo
	echo "Failed tests and their messages:"
	grep -E '^\s*--- FAIL|^\s+[A-Za-z0-9_]+_test\.go:[0-9]+: |^panic:|^FAIL' "$GO_TEST_LOG" |
		grep -v -E 'bridge log:|writer\.go' | cut -c1-400 | head -60 || true
fi
if [[ -s $MATRIX2MQTT_REPORT ]]; then
	echo
	echo "Figures measured by the tests:"
	sed 's/^/  /' "$MATRIX2MQTT_REPORT"
fi

if [[ $# -eq 0 || ${BENCH:-} == 1 ]]; then
	echo
	echo "Benchmark smoke run (go run -tags goolm ./cmd/matrix2mqtt-bench -short; docs/benchmarks.md):"
	bench_status=0
	go run -tags goolm ./cmd/matrix2mqtt-bench -short || bench_status=$?
	if ((status == 0)); then
		status=$bench_status
	fi
fi
exit $status
