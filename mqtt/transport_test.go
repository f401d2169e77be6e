package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
	"github.com/rs/zerolog"
)

// TestTransports connects to a real Mosquitto over each kind of MQTT_URL the bridge takes, sends
// a message to itself and receives it; and checks that a broker certificate the CA settings do
// not cover, or a missing client certificate, keeps the client out and is logged with the reason.
func TestTransports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := startMosquitto(ctx, t, testenv.Options{MosquittoTransports: true})
	read := func(path string) string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	ca, cert, key := read(env.CAFile), read(env.ClientCertFile), read(env.ClientKeyFile)
	mqtts := strings.Replace(env.MQTTSURL, "ssl://", "mqtts://", 1)
	wss := "wss://" + tlsTerminator(t, env.ServerCertFile, env.ServerKeyFile, strings.TrimPrefix(env.MQTTWSURL, "ws://"))

	tests := []struct {
		name     string
		cfg      Config
		failure  string // empty: the connection works
		validate string // a Validate error, checked instead of connecting
	}{
		{name: "tcp", cfg: Config{URL: env.MQTTURL}},
		{name: "websockets", cfg: Config{URL: env.MQTTWSURL}},
		{name: "websockets over tls", cfg: Config{URL: wss, CA: ca}},
		{name: "tls with the broker's CA", cfg: Config{URL: env.MQTTSURL, CA: ca}},
		{name: "mqtts alias", cfg: Config{URL: mqtts, CA: ca}},
		{name: "tls with a client certificate", cfg: Config{URL: env.MQTTSClientAuthURL, CA: ca, Cert: cert, Key: key}},
		{name: "tls without the broker's CA", cfg: Config{URL: env.MQTTSURL}, failure: "certificate signed by unknown authority"},
		{name: "client certificate missing", cfg: Config{URL: env.MQTTSClientAuthURL, CA: ca}, failure: "network Error"},
		{name: "CA on a plain URL", cfg: Config{URL: env.MQTTURL, CA: ca}, validate: "need a TLS broker URL"},
		{name: "certificate without key", cfg: Config{URL: env.MQTTSURL, Cert: cert}, validate: "set both or neither"},
		{name: "CA that is not PEM", cfg: Config{URL: env.MQTTSURL, CA: "not a certificate"}, validate: "MQTT_CA: no PEM certificate"},
		{name: "key of another certificate", cfg: Config{URL: env.MQTTSURL, Cert: ca, Key: key}, validate: "MQTT_CERT and MQTT_KEY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.ClientID, cfg.BaseTopic, cfg.KeepAlive, cfg.MaxInflight = "transport-"+strings.ReplaceAll(tc.name, " ", "-"), "transport", 5*time.Second, 4
			err := cfg.Validate()
			if tc.validate != "" {
				if err == nil || !strings.Contains(err.Error(), tc.validate) {
					t.Fatalf("Validate() = %v, want an error with %q", err, tc.validate)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			received := make(chan string, 1)
			c, err := New(zerolog.New(&logs).WithContext(ctx), cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			c.Listen("transport/"+cfg.ClientID, func(m Message) {
				m.Ack()
				select {
				case received <- string(m.Payload):
				default:
				}
			})
			connectCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			err = c.Connect(connectCtx)
			defer c.Disconnect(100 * time.Millisecond)
			if tc.failure != "" {
				if err == nil {
					t.Fatal("connected")
				}
				if got := logs.String(); !strings.Contains(got, "Failed to connect to MQTT broker") || !strings.Contains(got, tc.failure) {
					t.Fatalf("log does not say why: %s", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The subscription is made right after the connection is up.
			deadline := time.Now().Add(5 * time.Second)
			for {
				if err := c.Publish(ctx, "transport/"+cfg.ClientID, false, []byte("over "+tc.name)); err != nil {
					t.Fatal(err)
				}
				select {
				case got := <-received:
					if got != "over "+tc.name {
						t.Fatalf("received %q", got)
					}
					return
				case <-time.After(200 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatal("the message did not come back")
				}
			}
		})
	}
}

// tlsTerminator stands for the reverse proxy (nginx, Traefik) that serves Mosquitto's
// WebSocket listener over TLS, as Debian's Mosquitto cannot: it accepts TLS on a new port of
// 127.0.0.1 and passes the bytes on to backend. It returns its address.
func tlsTerminator(t *testing.T, certFile, keyFile, backend string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			front, err := l.Accept()
			if err != nil {
				return
			}
			back, err := net.Dial("tcp", backend)
			if err != nil {
				front.Close()
				continue
			}
			go func() { _, _ = io.Copy(back, front); back.Close() }()
			go func() { _, _ = io.Copy(front, back); front.Close() }()
		}
	}()
	return l.Addr().String()
}

// syncBuffer is a bytes.Buffer for a logger written from paho's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
