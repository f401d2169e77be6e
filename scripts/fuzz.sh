#!/usr/bin/env bash
# Runs every native fuzz target of the project for FUZZTIME each (default 30s), one after
# another; a crasher is written to the package's testdata/fuzz and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
for pkg in $(go list -tags goolm ./... | grep -v /integration); do
	for target in $(go test -tags goolm -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz: $pkg $target ($fuzztime)"
		go test -tags goolm -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done
