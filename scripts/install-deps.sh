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
