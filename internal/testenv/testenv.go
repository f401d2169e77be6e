// Package testenv runs real servers for integration tests and the demo: a Mosquitto broker
// and a Dendrite Matrix homeserver, each on a free loopback port, with all their files in one
// temporary directory.
//
// Mosquitto comes from the Debian package, Dendrite from the cache filled by
// scripts/build-dendrite.sh; scripts/install-deps.sh installs both. Tests usually call Start
// once in TestMain and Close at the end.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// dendriteVersion is the Dendrite release the tests run; keep it in sync with
// scripts/build-dendrite.sh.
const dendriteVersion = "v0.15.2"

// Options configures Start. The zero value is what most tests want.
type Options struct {
	// MosquittoPersistence makes retained messages and persistent sessions survive
	// RestartMosquitto; the broker saves them under Dir when it stops.
	MosquittoPersistence bool
	// DendriteRateLimit turns on Dendrite's client API rate limiting: 5 requests per
	// 500 ms per device on the limited endpoints (join, invite, leave, login, typing,
	// receipts, profile, ...; Dendrite never limits sending messages).
	DendriteRateLimit bool
	// MosquittoOnly starts the broker alone, for tests of the MQTT side; HomeserverURL is
	// then empty.
	MosquittoOnly bool
	// MosquittoTransports adds the broker's other listeners: TLS (MQTTSURL), TLS that
	// requires a client certificate (MQTTSClientAuthURL) and WebSockets (MQTTWSURL).
	MosquittoTransports bool
	// LogDir receives mosquitto.log and dendrite.log; empty means Dir/logs. Set it to keep
	// the logs after Close.
	LogDir string
	// Keep leaves Dir in place after Close, for debugging.
	Keep bool
}

// Env is a running Mosquitto broker and Dendrite homeserver. Its methods are safe for
// concurrent use.
type Env struct {
	// MQTTURL is the broker's address for MQTT clients: tcp://127.0.0.1:PORT.
	MQTTURL string
	// MQTTAddr is the broker's host:port, for mosquitto_pub and mosquitto_sub.
	MQTTAddr string
	// With Options.MosquittoTransports: the other listeners (ssl://, ssl://, ws://), and the
	// PEM files of the CA, of the broker's certificate for 127.0.0.1 that it issued, and of a
	// client certificate it issued.
	MQTTSURL, MQTTSClientAuthURL, MQTTWSURL string
	CAFile, ServerCertFile, ServerKeyFile   string
	ClientCertFile, ClientKeyFile           string
	// HomeserverURL is the Matrix client-server API base URL: http://127.0.0.1:PORT.
	HomeserverURL string
	// ServerName is the homeserver's Matrix server name, the part after the colon in
	// user IDs.
	ServerName string
	// Dir is the temporary directory that holds the servers' configuration and data.
	Dir string

	opts         Options
	logDir       string
	mosquittoBin string
	sharedSecret string

	mu        sync.Mutex
	mosquitto *process
	dendrite  *process
	closed    bool
}

// BinDir returns the directory that holds the Dendrite binaries:
// ${MATRIX2MQTT_CACHE:-$HOME/.cache/matrix2mqtt}/dendrite-<version>.
func BinDir() string {
	cache := os.Getenv("MATRIX2MQTT_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache", "matrix2mqtt")
	}
	return filepath.Join(cache, "dendrite-"+dendriteVersion)
}

// Start starts Mosquitto and Dendrite and returns once both accept connections. It
// returns an error naming scripts/install-deps.sh when a server binary is missing.
func Start(ctx context.Context, opts Options) (*Env, error) {
	mosquittoBin, err := findMosquitto()
	if err != nil {
		return nil, err
	}
	if !opts.MosquittoOnly {
		if err := checkDendriteBinaries(); err != nil {
			return nil, err
		}
	}
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "matrix2mqtt-testenv-")
	if err != nil {
		return nil, fmt.Errorf("failed to create the test env directory: %w", err)
	}
	e := &Env{
		MQTTAddr:      fmt.Sprintf("127.0.0.1:%d", ports[0]),
		HomeserverURL: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		ServerName:    "localhost",
		Dir:           dir,
		opts:          opts,
		logDir:        opts.LogDir,
		mosquittoBin:  mosquittoBin,
	}
	e.MQTTURL = "tcp://" + e.MQTTAddr
	if opts.MosquittoTransports {
		e.MQTTSURL = fmt.Sprintf("ssl://127.0.0.1:%d", ports[2])
		e.MQTTSClientAuthURL = fmt.Sprintf("ssl://127.0.0.1:%d", ports[3])
		e.MQTTWSURL = fmt.Sprintf("ws://127.0.0.1:%d", ports[4])
	}
	if opts.MosquittoOnly {
		e.HomeserverURL = ""
	}
	if e.logDir == "" {
		e.logDir = filepath.Join(dir, "logs")
	}
	if err := e.start(ctx); err != nil {
		return nil, errors.Join(err, e.Close())
	}
	return e, nil
}

func (e *Env) start(ctx context.Context) error {
	if err := os.MkdirAll(e.logDir, 0o755); err != nil {
		return fmt.Errorf("failed to create the log directory: %w", err)
	}
	if err := e.setupMosquitto(); err != nil {
		return err
	}
	if e.opts.MosquittoOnly {
		return e.StartMosquitto(ctx)
	}
	if err := e.setupDendrite(ctx); err != nil {
		return err
	}
	if err := e.StartMosquitto(ctx); err != nil {
		return err
	}
	return e.StartDendrite(ctx)
}

// Close stops both servers and removes Dir unless Options.Keep is set. It may be called
// more than once.
func (e *Env) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	var errs []error
	if e.dendrite != nil {
		errs = append(errs, e.dendrite.stop())
		e.dendrite = nil
	}
	if e.mosquitto != nil {
		errs = append(errs, e.mosquitto.stop())
		e.mosquitto = nil
	}
	if !e.opts.Keep {
		if err := os.RemoveAll(e.Dir); err != nil {
			errs = append(errs, fmt.Errorf("failed to remove the test env directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// errClosed is returned by methods called after Close.
var errClosed = errors.New("test env is closed")
