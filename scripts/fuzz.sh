#!/usr/bin/env bash
# Runs every native fuzz target of the project for FUZZTIME each (default 30s), one after
# another; a crasher is written to the package's testdata/fuzz and fails the run.
#
# Go's fuzzing coordinator can fail a target at the end of -fuzztime with a bare "context
# deadline exceeded" and no failing input (golang/go#75804, fixed in Go 1.27): a failure that
# wrote no input is run again, and fails the run only if it fails three times in a row.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}

# inputs lists the failing inputs kept for a target.
inputs() { { find "$1/testdata/fuzz/$2" -type f 2>/dev/null || true; } | sort; }

for pkg in $(go list -tags goolm ./... | grep -v /integration); do
	dir=$(go list -tags goolm -f '{{.Dir}}' "$pkg")
	for target in $(go test -tags goolm -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		for attempt in 1 2 3; do
			echo "fuzz: $pkg $target ($fuzztime)"
			before=$(inputs "$dir" "$target")
			if go test -tags goolm -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
				break
			fi
			if [[ $(inputs "$dir" "$target") != "$before" ]]; then
				echo "fuzz: $target failed; its input is kept in $dir/testdata/fuzz/$target" >&2
				exit 1
			fi
			if ((attempt == 3)); then
				echo "fuzz: $target failed three times" >&2
				exit 1
			fi
			echo "fuzz: $target failed without a failing input (golang/go#75804); again"
		done
	done
done
