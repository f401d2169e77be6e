#!/usr/bin/env bash
# Tries the bridge by hand against real servers: starts Mosquitto and Dendrite on loopback
# (internal/testenv/cmd/sandbox), prints MQTT commands to try, then runs the bridge in the
# foreground. Ctrl-C stops the bridge and the servers; everything lives in a temp dir.
#
# SKIP_INSTALL=1 skips scripts/install-deps.sh (apt-get and the Dendrite build).
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ ${SKIP_INSTALL:-} != 1 ]]; then
	scripts/install-deps.sh
fi

work=$(mktemp -d)
sandbox_pid=
cleanup() {
	if [[ -n $sandbox_pid ]]; then
		kill -TERM "$sandbox_pid" 2>/dev/null || true
		wait "$sandbox_pid" || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

env_file=$work/matrix2mqtt.env
ready_file=$work/ready
go build -o "$work/sandbox" ./internal/testenv/cmd/sandbox
"$work/sandbox" -env-file "$env_file" -ready-file "$ready_file" &
sandbox_pid=$!

for _ in $(seq 600); do
	[[ -e $ready_file ]] && break
	if ! kill -0 "$sandbox_pid" 2>/dev/null; then
		echo "the sandbox exited before it was ready" >&2
		exit 1
	fi
	sleep 0.1
done
if [[ ! -e $ready_file ]]; then
	echo "the sandbox was not ready within 60s" >&2
	exit 1
fi

mqtt_url=$(sed -n 's/^MQTT_URL=//p' "$env_file")
port=${mqtt_url##*:}
user=$(sed -n 's/^TARGETS=\([^=]*\)=.*/\1/p' "$env_file")
cat <<MSG

Log in as $user with Element or another client using the homeserver and password above.
In another terminal, try:

  mosquitto_sub -h 127.0.0.1 -p $port -t 'matrix2mqtt/#' -v
  mosquitto_pub -h 127.0.0.1 -p $port -t matrix2mqtt/send/$user -m 'Hello from MQTT'
  mosquitto_pub -h 127.0.0.1 -p $port -t matrix2mqtt/bridge/request/send -q 1 \\
    -m '{"id": "demo-1", "to": "$user", "markdown": "**Hello** from a request"}'

Starting the bridge (Ctrl-C stops it and the servers)...

MSG

go run -tags goolm ./cmd/matrix2mqtt -env-file "$env_file"
