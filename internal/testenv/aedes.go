package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
)

// Aedes is a running Aedes broker (internal/aedes/broker.mjs, npm, installed by
// scripts/install-deps.sh): the broker Node-RED users embed, to run tests against a broker
// other than Mosquitto. Its sessions live in memory, for as long as it runs.
type Aedes struct {
	// MQTTURL is its address for MQTT clients: tcp://127.0.0.1:PORT.
	MQTTURL string
	proc    *process
}

// StartAedes starts Aedes on a free loopback port, logging to dir/aedes.log, and waits until
// it accepts connections.
func StartAedes(ctx context.Context, dir string) (*Aedes, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("failed to start aedes: cannot locate internal/aedes")
	}
	aedesDir := filepath.Join(filepath.Dir(file), "..", "aedes")
	if _, err := os.Stat(filepath.Join(aedesDir, "node_modules", "aedes")); err != nil {
		return nil, fmt.Errorf("failed to start aedes: scripts/install-deps.sh installs it: %w", err)
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	ready := func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	p, err := startProcess(ctx, ready, "aedes", filepath.Join(dir, "aedes.log"), aedesDir, "node", "broker.mjs", strconv.Itoa(ports[0]))
	if err != nil {
		return nil, err
	}
	return &Aedes{MQTTURL: "tcp://" + addr, proc: p}, nil
}

// Close stops the broker.
func (a *Aedes) Close() error { return a.proc.stop() }
