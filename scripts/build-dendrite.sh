#!/usr/bin/env bash
# Builds the Dendrite homeserver used by the real-server tests (internal/testenv) from the Go
# module proxy, and caches the binaries by version in
# ${MATRIX2MQTT_CACHE:-$HOME/.cache/matrix2mqtt}/dendrite-<version>/.
# Does nothing when the cache already holds every binary. Prints the bin dir.
#
# Dendrite is never added to our go.mod: it is built inside its own module directory.
set -euo pipefail

DENDRITE_MODULE=github.com/element-hq/dendrite
DENDRITE_VERSION=v0.15.2 # keep in sync with dendriteVersion in internal/testenv
BINARIES=(dendrite generate-config generate-keys create-account)

cache=${MATRIX2MQTT_CACHE:-$HOME/.cache/matrix2mqtt}
bin_dir=$cache/dendrite-$DENDRITE_VERSION

have_all() {
	local b
	for b in "${BINARIES[@]}"; do
		[[ -x $bin_dir/$b ]] || return 1
	done
}

mkdir -p "$cache"
# One build at a time per cache; a second caller waits and then finds the binaries.
exec 9>"$cache/dendrite-$DENDRITE_VERSION.lock"
flock 9

if have_all; then
	echo "$bin_dir"
	exit 0
fi

if ! command -v go >/dev/null; then
	echo "failed to find the go command: install Go first (https://go.dev/dl/)" >&2
	exit 1
fi

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "building Dendrite $DENDRITE_VERSION (a few minutes the first time)..." >&2
# Outside our module, so that nothing is added to our go.mod.
mod_dir=$(cd "$work" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "$DENDRITE_MODULE@$DENDRITE_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z $mod_dir || ! -d $mod_dir ]]; then
	echo "failed to download $DENDRITE_MODULE@$DENDRITE_VERSION" >&2
	exit 1
fi

packages=()
for b in "${BINARIES[@]}"; do
	packages+=("./cmd/$b")
done

# Build into a temp dir first, so that an interrupted build never looks like a complete cache.
out=$work/bin
mkdir -p "$out"
build() {
	GOWORK=off GOFLAGS=-mod=mod go build -trimpath -o "$out/" "${packages[@]}"
}
if ! (cd "$mod_dir" && build); then
	# The module cache is read-only: if go wants to update go.sum, build a writable copy.
	echo "retrying the build in a writable copy of the module" >&2
	cp -r "$mod_dir" "$work/src"
	chmod -R u+w "$work/src"
	(cd "$work/src" && build)
fi

mkdir -p "$bin_dir"
for b in "${BINARIES[@]}"; do
	mv -f "$out/$b" "$bin_dir/$b"
done
echo "$bin_dir"
