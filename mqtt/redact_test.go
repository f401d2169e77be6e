package mqtt

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestCredentialsInURLAreMasked: MQTT_URL may hold user:pass@; neither the log nor an error
// repeats them, whether the URL is invalid or the broker cannot be reached.
func TestCredentialsInURLAreMasked(t *testing.T) {
	const user, password = "bob-the-user", "s3cret-pw"
	good := Config{ClientID: "m2m", BaseTopic: "matrix2mqtt", KeepAlive: 30 * time.Second, MaxInflight: 8}
	t.Run("validation errors", func(t *testing.T) {
		for _, raw := range []string{
			"tcp://" + user + ":" + password + "@",                // no host
			"tcp://" + user + ":" + password + "%zz@broker:1883",  // invalid escape
			"http://" + user + ":" + password + "@broker:1883",    // wrong scheme
			"tcp://" + user + ":" + password + "@broker:1883\x7f", // control character
		} {
			c := good
			c.URL = raw
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate(%q) passed", raw)
			}
			if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), user) {
				t.Errorf("error repeats the credentials: %v", err)
			}
		}
	})
	t.Run("connection failures", func(t *testing.T) {
		var logs lockedBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		ctx = zerolog.New(&logs).WithContext(ctx)
		c := good
		c.URL = "tcp://" + user + ":" + password + "@127.0.0.1:1" // nothing listens on port 1
		client, err := New(ctx, c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = client.Connect(ctx)
		client.Disconnect(0)
		if err == nil {
			t.Fatal("connected to port 1")
		}
		log := logs.String()
		for what, text := range map[string]string{"error": err.Error(), "log": log} {
			if strings.Contains(text, password) || strings.Contains(text, user) {
				t.Errorf("%s repeats the credentials: %s", what, text)
			}
		}
		if !strings.Contains(log, "127.0.0.1:1") {
			t.Errorf("the log does not name the broker: %s", log)
		}
	})
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"user and password", "tcp://bob:pw@h:1883", "tcp://xxxxx@h:1883"},
		{"user only", "ssl://bob@h:8883", "ssl://xxxxx@h:8883"},
		{"none", "ws://h:9001/mqtt", "ws://h:9001/mqtt"},
		{"unparsable", "tcp://bob:pw%zz@h", "(unparsable URL)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := RedactURL(tc.in); got != tc.want {
				t.Fatalf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// lockedBuffer is a log sink that paho's goroutines may write to while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
