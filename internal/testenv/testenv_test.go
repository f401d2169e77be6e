package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// env is shared by the tests of this package; TestOptions starts its own.
var env *Env

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var err error
	env, err = Start(ctx, Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func TestMatrixMessage(t *testing.T) {
	ctx := t.Context()
	alice := mustRegister(t, env, "alice")
	bob := mustRegister(t, env, "bob")
	if !strings.HasPrefix(alice.UserID, "@alice-") || !strings.HasSuffix(alice.UserID, ":"+env.ServerName) {
		t.Errorf("user ID = %q, want @alice-N:%s", alice.UserID, env.ServerName)
	}

	roomID := createRoom(t, env, alice, bob.UserID)
	mustCall(t, env, bob.AccessToken, http.MethodPost, "/join/"+url.PathEscape(roomID), struct{}{}, nil)
	eventID := sendText(t, env, alice, roomID, "txn1", "hello bob")
	waitForEvent(ctx, t, env, bob, roomID, eventID)

	// Logging in again with the password gives a new device.
	var login struct {
		DeviceID string `json:"device_id"`
	}
	mustCall(t, env, "", http.MethodPost, "/login", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": alice.UserID},
		"password":   alice.Password,
	}, &login)
	if login.DeviceID == "" || login.DeviceID == alice.DeviceID {
		t.Errorf("login device ID = %q, registration device ID = %q", login.DeviceID, alice.DeviceID)
	}
}

func TestRateLimitingOffByDefault(t *testing.T) {
	u := mustRegister(t, env, "fast")
	for range 20 {
		mustCall(t, env, u.AccessToken, http.MethodGet, "/account/whoami", nil, nil)
	}
}

func TestMQTTMessage(t *testing.T) {
	c := connectMQTT(t, env, nil)
	msgs := subscribe(t, c, "testenv/#")
	publish(t, c, "testenv/hello", "hi", false)
	waitForMQTT(t, msgs, "testenv/hello", "hi")
}

func TestRestart(t *testing.T) {
	ctx := t.Context()
	u := mustRegister(t, env, "restart")
	roomID := createRoom(t, env, u)
	before := sendText(t, env, u, roomID, "txn1", "before the restart")

	if err := env.StopDendrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := env.do(ctx, http.MethodGet, "/_matrix/client/versions", nil); err == nil {
		t.Fatal("dendrite still answers after StopDendrite")
	}
	if err := env.StartDendrite(ctx); err != nil {
		t.Fatal(err)
	}
	after := sendText(t, env, u, roomID, "txn2", "after the restart")
	waitForEvent(ctx, t, env, u, roomID, before)
	waitForEvent(ctx, t, env, u, roomID, after)

	connected := make(chan struct{}, 1)
	lost := make(chan struct{}, 1)
	c := connectMQTT(t, env, func(o *paho.ClientOptions) {
		o.SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond)
		o.SetOnConnectHandler(func(paho.Client) { signal(connected) })
		o.SetConnectionLostHandler(func(paho.Client, error) { signal(lost) })
	})
	waitForSignal(t, connected, "connect to MQTT")
	// Without persistence, a retained message does not survive the restart. It comes
	// from another client: c would resend a QoS 1 message that it still stores on
	// reconnect, and paho races when it does (eclipse-paho/paho.mqtt.golang#703).
	other := connectMQTT(t, env, nil)
	publish(t, other, "testenv/retained", "lost", true)
	other.Disconnect(250)
	if err := env.RestartMosquitto(ctx); err != nil {
		t.Fatal(err)
	}
	waitForSignal(t, lost, "lose the MQTT connection")
	waitForSignal(t, connected, "reconnect to MQTT")
	msgs := subscribe(t, c, "testenv/#")
	// Also from another client: a publish made by c right after its reconnect would be in the
	// store that paho is resending then (the same race).
	pub := connectMQTT(t, env, nil)
	publish(t, pub, "testenv/restarted", "yes", false)
	pub.Disconnect(250)
	waitForMQTT(t, msgs, "testenv/restarted", "yes")
}

func TestOptions(t *testing.T) {
	ctx := t.Context()
	logDir := t.TempDir()
	e, err := Start(ctx, Options{MosquittoPersistence: true, DendriteRateLimit: true, LogDir: logDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(e.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Close left %s: %v", e.Dir, err)
		}
		for _, name := range []string{"mosquitto.log", "dendrite.log"} {
			if _, err := os.Stat(filepath.Join(logDir, name)); err != nil {
				t.Error(err)
			}
		}
	})
	if e.MQTTURL == env.MQTTURL || e.HomeserverURL == env.HomeserverURL {
		t.Fatalf("two envs share a port: %s %s", e.MQTTURL, e.HomeserverURL)
	}

	t.Run("persistence", func(t *testing.T) {
		c := connectMQTT(t, e, nil)
		publish(t, c, "testenv/retained", "kept", true)
		c.Disconnect(250)
		if err := e.RestartMosquitto(ctx); err != nil {
			t.Fatal(err)
		}
		msgs := subscribe(t, connectMQTT(t, e, nil), "testenv/retained")
		waitForMQTT(t, msgs, "testenv/retained", "kept")
	})

	t.Run("rate limit", func(t *testing.T) {
		u := mustRegister(t, e, "limited")
		for range 20 {
			status, body, err := call(ctx, e, u.AccessToken, http.MethodGet, "/account/whoami", nil)
			if err != nil {
				t.Fatal(err)
			}
			if status == http.StatusTooManyRequests && strings.Contains(string(body), "M_LIMIT_EXCEEDED") {
				return
			}
		}
		t.Error("20 quick requests were not rate limited")
	})
}

// userSeq makes user names unique, also across runs of a test with -count.
var userSeq atomic.Int64

// mustRegister registers the user name-N, N unique.
func mustRegister(t *testing.T, e *Env, name string) *User {
	t.Helper()
	u, err := e.RegisterUser(t.Context(), fmt.Sprintf("%s-%d", name, userSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// call sends a client-server API request (path relative to /_matrix/client/v3).
func call(ctx context.Context, e *Env, token, method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.HomeserverURL+"/_matrix/client/v3"+path, r)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// mustCall sends a request that must succeed and decodes the response into out, if set.
func mustCall(t *testing.T, e *Env, token, method, path string, body, out any) {
	t.Helper()
	status, data, err := call(t.Context(), e, token, method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d: %s", method, path, status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

func createRoom(t *testing.T, e *Env, creator *User, invite ...string) string {
	t.Helper()
	var resp struct {
		RoomID string `json:"room_id"`
	}
	mustCall(t, e, creator.AccessToken, http.MethodPost, "/createRoom",
		map[string]any{"preset": "private_chat", "invite": append([]string{}, invite...)}, &resp)
	return resp.RoomID
}

func sendText(t *testing.T, e *Env, sender *User, roomID, txnID, text string) string {
	t.Helper()
	var resp struct {
		EventID string `json:"event_id"`
	}
	mustCall(t, e, sender.AccessToken, http.MethodPut,
		"/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txnID,
		map[string]string{"msgtype": "m.text", "body": text}, &resp)
	return resp.EventID
}

// waitForEvent syncs as u until the event shows up in the room's timeline.
func waitForEvent(ctx context.Context, t *testing.T, e *Env, u *User, roomID, eventID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	since := ""
	for ctx.Err() == nil {
		var resp struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							EventID string `json:"event_id"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		mustCall(t, e, u.AccessToken, http.MethodGet, "/sync?timeout=1000&since="+url.QueryEscape(since), nil, &resp)
		for _, ev := range resp.Rooms.Join[roomID].Timeline.Events {
			if ev.EventID == eventID {
				return
			}
		}
		since = resp.NextBatch
	}
	t.Fatalf("%s did not see event %s in %s", u.UserID, eventID, roomID)
}

// connectMQTT connects a paho client to e's broker; configure, if set, adjusts the options.
func connectMQTT(t *testing.T, e *Env, configure func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(e.MQTTURL).SetClientID(fmt.Sprintf("testenv-%d", time.Now().UnixNano()))
	if configure != nil {
		configure(o)
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("failed to connect to %s: %v", e.MQTTURL, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(250) })
	return c
}

func subscribe(t *testing.T, c paho.Client, filter string) <-chan paho.Message {
	t.Helper()
	msgs := make(chan paho.Message, 10)
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { msgs <- m })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("failed to subscribe to %s: %v", filter, tok.Error())
	}
	return msgs
}

func publish(t *testing.T, c paho.Client, topic, payload string, retained bool) {
	t.Helper()
	if tok := c.Publish(topic, 1, retained, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("failed to publish to %s: %v", topic, tok.Error())
	}
}

func waitForMQTT(t *testing.T, msgs <-chan paho.Message, topic, payload string) {
	t.Helper()
	select {
	case m := <-msgs:
		if m.Topic() != topic || string(m.Payload()) != payload {
			t.Fatalf("got %s %q, want %s %q", m.Topic(), m.Payload(), topic, payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no message on %s", topic)
	}
}

// signal notifies ch without blocking; a pending notification is enough.
func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func waitForSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("failed to %s within 10s", what)
	}
}
