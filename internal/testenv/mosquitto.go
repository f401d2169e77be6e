package testenv

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// findMosquitto returns the path of the mosquitto broker binary.
func findMosquitto() (string, error) {
	if path, err := exec.LookPath("mosquitto"); err == nil {
		return path, nil
	}
	const debianPath = "/usr/sbin/mosquitto" // not in PATH for non-root users
	if _, err := os.Stat(debianPath); err != nil {
		return "", fmt.Errorf("failed to find mosquitto (run scripts/install-deps.sh): %w", err)
	}
	return debianPath, nil
}

func (e *Env) mosquittoDir() string { return filepath.Join(e.Dir, "mosquitto") }

// setupMosquitto writes the broker's configuration file.
func (e *Env) setupMosquitto() error {
	dir := e.mosquittoDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("failed to create the mosquitto directory: %w", err)
	}
	_, port, err := net.SplitHostPort(e.MQTTAddr)
	if err != nil {
		return fmt.Errorf("failed to parse the MQTT address: %w", err)
	}
	lines := []string{
		"listener " + port + " 127.0.0.1",
		"allow_anonymous true",
		// Without it the broker's Nagle algorithm waits for the client's delayed ACK (40 ms)
		// before it forwards a message: every request/response round trip took ~44 ms.
		"set_tcp_nodelay true",
		// As configs/mosquitto/mosquitto.conf: Mosquitto 2.0.11 (Debian bookworm) otherwise can
		// let a new message overtake its session queue (docs/delivery.md, "Brokers").
		"max_inflight_messages 0",
		"log_dest file " + filepath.Join(e.logDir, "mosquitto.log"),
		"log_type all",
		"log_timestamp_format %Y-%m-%dT%H:%M:%S",
	}
	if os.Geteuid() == 0 {
		// As root, Mosquitto switches to the "mosquitto" user, which cannot write to
		// our directories.
		lines = append(lines, "user root")
	}
	if e.opts.MosquittoTransports {
		certs, err := writeCerts(dir)
		if err != nil {
			return err
		}
		e.CAFile, e.ServerCertFile, e.ServerKeyFile = certs.CA, certs.ServerCert, certs.ServerKey
		e.ClientCertFile, e.ClientKeyFile = certs.ClientCert, certs.ClientKey
		tlsFiles := []string{"cafile " + certs.CA, "certfile " + certs.ServerCert, "keyfile " + certs.ServerKey}
		for _, l := range []struct {
			url   string
			extra []string
		}{
			{e.MQTTSURL, tlsFiles},
			{e.MQTTSClientAuthURL, append(slices.Clone(tlsFiles), "require_certificate true")},
			{e.MQTTWSURL, []string{"protocol websockets"}},
		} {
			u, err := url.Parse(l.url)
			if err != nil {
				return fmt.Errorf("failed to parse %s: %w", l.url, err)
			}
			lines = append(lines, "listener "+u.Port()+" 127.0.0.1")
			lines = append(lines, l.extra...)
		}
	}
	if e.opts.MosquittoPersistence {
		lines = append(lines, "persistence true", "persistence_location "+dir+"/")
	} else {
		lines = append(lines, "persistence false")
	}
	conf := strings.Join(lines, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("failed to write the mosquitto config: %w", err)
	}
	return nil
}

// StartMosquitto starts the broker again after StopMosquitto, on the same port and with
// the same configuration, and waits until it accepts connections.
func (e *Env) StartMosquitto(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errClosed
	}
	if e.mosquitto != nil {
		return fmt.Errorf("failed to start mosquitto: it is already running")
	}
	ready := func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", e.MQTTAddr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	p, err := startProcess(ctx, ready, "mosquitto", filepath.Join(e.logDir, "mosquitto.log"),
		e.mosquittoDir(), e.mosquittoBin, "-c", filepath.Join(e.mosquittoDir(), "mosquitto.conf"))
	if err != nil {
		return err
	}
	e.mosquitto = p
	return nil
}

// StopMosquitto stops the broker; clients see their connection drop. It does nothing if
// the broker is not running.
func (e *Env) StopMosquitto() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mosquitto == nil {
		return nil
	}
	p := e.mosquitto
	e.mosquitto = nil
	return p.stop()
}

// RestartMosquitto stops the broker and starts it again on the same port.
func (e *Env) RestartMosquitto(ctx context.Context) error {
	if err := e.StopMosquitto(); err != nil {
		return err
	}
	return e.StartMosquitto(ctx)
}
