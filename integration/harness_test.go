// Package integration drives the real bridge against real servers: Mosquitto and Dendrite from
// internal/testenv, a paho client on the MQTT side and a second Matrix user (mautrix) on the
// Matrix side that checks what the events look like in Matrix.
package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge"
	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

var (
	env       *testenv.Env
	binary    string // the bridge built without -race, for tests that kill or restart it
	userCount atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	env, err = testenv.Start(ctx, testenv.Options{MosquittoTransports: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: failed to start servers:", err)
		return 1
	}
	defer env.Close()
	dir, err := os.MkdirTemp("", "matrix2mqtt-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "matrix2mqtt")
	build := exec.Command("go", "build", "-tags", "goolm", "-o", binary, "../cmd/matrix2mqtt")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: failed to build the bridge:", err)
		return 1
	}
	return m.Run()
}

// user is a Matrix account on the test homeserver.
type user struct {
	*testenv.User
	cli *mautrix.Client
}

// newUser registers a fresh account; names are unique per test run.
func newUser(t *testing.T, prefix string) *user {
	t.Helper()
	return newUserOn(t, env, prefix)
}

// newUserOn registers a fresh account on the given servers.
func newUserOn(t *testing.T, srv *testenv.Env, prefix string) *user {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, err := srv.RegisterUser(ctx, fmt.Sprintf("%s%d", prefix, userCount.Add(1)))
	if err != nil {
		t.Fatalf("failed to register user: %v", err)
	}
	cli, err := mautrix.NewClient(srv.HomeserverURL, id.UserID(u.UserID), u.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	cli.DeviceID = id.DeviceID(u.DeviceID)
	return &user{User: u, cli: cli}
}

func (u *user) id() id.UserID { return id.UserID(u.UserID) }

// createRoom makes a room with the given users invited.
func (u *user) createRoom(t *testing.T, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := u.cli.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("failed to create room: %v", err)
	}
	return resp.RoomID
}

func (u *user) join(t *testing.T, room id.RoomID) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		_, err := u.cli.JoinRoomByID(context.Background(), room)
		return err
	})
}

func (u *user) send(t *testing.T, room id.RoomID, content any) id.EventID {
	t.Helper()
	typ := event.EventMessage
	if _, ok := content.(*event.ReactionEventContent); ok {
		typ = event.EventReaction
	}
	resp, err := u.cli.SendMessageEvent(context.Background(), room, typ, content)
	if err != nil {
		t.Fatalf("failed to send: %v", err)
	}
	return resp.EventID
}

// event fetches an event as this user sees it, with its content parsed.
func (u *user) event(t *testing.T, room id.RoomID, evtID id.EventID) *event.Event {
	t.Helper()
	var evt *event.Event
	eventually(t, 10*time.Second, func() (err error) {
		evt, err = u.cli.GetEvent(context.Background(), room, evtID)
		return err
	})
	_ = evt.Content.ParseRaw(evt.Type)
	return evt
}

// eventually retries fn until it returns nil or the time is up.
func eventually(t *testing.T, limit time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s: %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// message is one MQTT message seen by the recorder.
type message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

func (m message) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(m.Payload, &v); err != nil {
		t.Fatalf("payload on %s is not a JSON object: %v: %s", m.Topic, err, m.Payload)
	}
	return v
}

// recorder is an MQTT client that records everything under a base topic.
type recorder struct {
	t    *testing.T
	cli  paho.Client
	mu   sync.Mutex
	msgs []message
	news chan struct{}
}

func newRecorder(t *testing.T, base string) *recorder {
	t.Helper()
	return newRecorderOn(t, env, base)
}

// newRecorderOn records from the broker of the given servers.
func newRecorderOn(t *testing.T, srv *testenv.Env, base string) *recorder {
	t.Helper()
	return newRecorderAt(t, srv.MQTTURL, base)
}

// newRecorderAt records from the broker at url.
func newRecorderAt(t *testing.T, url, base string) *recorder {
	t.Helper()
	r := &recorder{t: t, news: make(chan struct{}, 1)}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("rec-%s-%d", t.Name(), time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe(base+"/#", 1, func(_ paho.Client, m paho.Message) {
				r.mu.Lock()
				r.msgs = append(r.msgs, message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
				r.mu.Unlock()
				select {
				case r.news <- struct{}{}:
				default:
				}
			})
		})
	r.cli = paho.NewClient(opts)
	tok := r.cli.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("recorder failed to connect: %v", tok.Error())
	}
	t.Cleanup(func() { r.cli.Disconnect(100) })
	return r
}

func (r *recorder) publish(topic string, qos byte, payload string) {
	r.t.Helper()
	tok := r.cli.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		r.t.Fatalf("failed to publish to %s: %v", topic, tok.Error())
	}
}

// wait returns the first recorded message (from index from on) that matches, or fails the test.
func (r *recorder) wait(limit time.Duration, what string, match func(message) bool) message {
	r.t.Helper()
	deadline := time.After(limit)
	for {
		r.mu.Lock()
		for _, m := range r.msgs {
			if match(m) {
				r.mu.Unlock()
				return m
			}
		}
		r.mu.Unlock()
		select {
		case <-r.news:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			r.t.Fatalf("no MQTT message for %s within %s; seen:\n%s", what, limit, r.dump())
		}
	}
}

// all returns the recorded messages on topic.
func (r *recorder) all(topic string) []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []message
	for _, m := range r.msgs {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

func (r *recorder) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, m := range r.msgs {
		p := string(m.Payload)
		if len(p) > 300 {
			p = p[:300] + "…"
		}
		fmt.Fprintf(&b, "  %s %s\n", m.Topic, p)
	}
	return b.String()
}

// harness is one running bridge with its bot account, a human user and an MQTT recorder.
type harness struct {
	t     *testing.T
	base  string
	bot   *user
	alice *user
	rec   *recorder
	env   map[string]string
	stop  func()
	kill  func() // SIGKILL, for a bridge started with startProcess
}

var harnessCount atomic.Int64

// newHarness starts a bridge for a fresh bot, with alice as a friendly-name target whose
// invites the bot accepts. extra env entries override the defaults.
func newHarness(t *testing.T, extra map[string]string) *harness {
	t.Helper()
	return newHarnessOn(t, env, extra)
}

// newHarnessOn is newHarness on other servers than the shared ones.
func newHarnessOn(t *testing.T, srv *testenv.Env, extra map[string]string) *harness {
	t.Helper()
	h := &harness{t: t, base: fmt.Sprintf("m2m%d", harnessCount.Add(1))}
	h.bot = newUserOn(t, srv, "bot")
	h.alice = newUserOn(t, srv, "alice")
	h.env = map[string]string{
		"MATRIX_HOMESERVER":   srv.HomeserverURL,
		"MATRIX_USER_ID":      h.bot.UserID,
		"MATRIX_PASSWORD":     h.bot.Password,
		"MATRIX_SYNC_TIMEOUT": "5s",
		"MQTT_URL":            srv.MQTTURL,
		"MQTT_CLIENT_ID":      h.base,
		"MQTT_BASE_TOPIC":     h.base,
		"DATA_DIR":            t.TempDir(),
		"TARGETS":             "alice=" + h.alice.UserID,
		"AUTO_JOIN":           h.alice.UserID,
		"LOG_LEVEL":           "debug",
		// Discovery under the base topic, so that each bridge has its own and the recorder
		// sees it.
		"HA_DISCOVERY_PREFIX": h.base + "/homeassistant",
		"HA_STATUS_TOPIC":     h.base + "/homeassistant/status",
	}
	for k, v := range extra {
		h.env[k] = v
	}
	// The recorder speaks plain MQTT: it follows an MQTT_URL of extra that is plain (another
	// broker, such as Aedes), and uses the servers' plain listener for the other transports.
	recURL := srv.MQTTURL
	if strings.HasPrefix(h.env["MQTT_URL"], "tcp://") {
		recURL = h.env["MQTT_URL"]
	}
	h.rec = newRecorderAt(t, recURL, h.base)
	h.start()
	t.Cleanup(func() { h.stop() })
	return h
}

// start runs the bridge in this process and waits for its retained info.
func (h *harness) start() {
	h.t.Helper()
	var environ []string
	for k, v := range h.env {
		environ = append(environ, k+"="+v)
	}
	cfg, err := bridge.LoadConfig(environ)
	if err != nil {
		h.t.Fatalf("config: %v", err)
	}
	log := zerolog.New(testLogWriter(h.t)).Level(zerolog.InfoLevel).With().Timestamp().Str("bridge", h.base).Logger()
	ctx, cancel := context.WithCancel(log.WithContext(context.Background()))
	done := make(chan error, 1)
	opts := bridge.Options{Version: "test", BirthDelay: func() time.Duration { return 100 * time.Millisecond }}
	go func() { done <- bridge.Run(ctx, cfg, opts) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					h.t.Errorf("bridge stopped with error: %v", err)
				}
			case <-time.After(30 * time.Second):
				h.t.Error("bridge did not stop within 30s")
			}
		})
	}
	h.waitOnline()
}

// waitOnline waits until the bridge is logged in: its info names the bot.
func (h *harness) waitOnline() {
	h.t.Helper()
	h.rec.wait(30*time.Second, "bridge info", func(m message) bool {
		return m.Topic == h.base+"/bridge/info" && strings.Contains(string(m.Payload), h.bot.UserID)
	})
}

// request publishes an action request with a fresh id and returns its one response.
func (h *harness) request(action string, fields map[string]any) map[string]any {
	h.t.Helper()
	reqID := fmt.Sprintf("req-%d", time.Now().UnixNano())
	fields["id"] = reqID
	payload, _ := json.Marshal(fields)
	h.rec.publish(h.base+"/bridge/request/"+action, 1, string(payload))
	return h.response(action, reqID)
}

// response waits for the response with the given id on action's response topic.
func (h *harness) response(action, reqID string) map[string]any {
	h.t.Helper()
	m := h.rec.wait(30*time.Second, "response "+reqID, func(m message) bool {
		return m.Topic == h.base+"/bridge/response/"+action && strings.Contains(string(m.Payload), `"id":"`+reqID+`"`)
	})
	return m.json(h.t)
}

// ok asserts a successful response and returns its data.
func (h *harness) ok(resp map[string]any) map[string]any {
	h.t.Helper()
	if resp["status"] != "ok" {
		h.t.Fatalf("expected ok, got %v", resp)
	}
	data, _ := resp["data"].(map[string]any)
	return data
}

// fail asserts an error response with code and returns its message.
func (h *harness) fail(resp map[string]any, code string) string {
	h.t.Helper()
	e, _ := resp["error"].(map[string]any)
	if resp["status"] != "error" || e["code"] != code {
		h.t.Fatalf("expected error %s, got %v", code, resp)
	}
	msg, _ := e["message"].(string)
	return msg
}

// sharedRoom has alice create a room, invite the bot, and waits until the bot joined.
func (h *harness) sharedRoom(extra *mautrix.ReqCreateRoom) id.RoomID {
	h.t.Helper()
	req := &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{h.bot.id()}}
	if extra != nil {
		req = extra
		req.Invite = append(req.Invite, h.bot.id())
	}
	room := h.alice.createRoom(h.t, req)
	eventually(h.t, 20*time.Second, func() error {
		members, err := h.alice.cli.JoinedMembers(context.Background(), room)
		if err != nil {
			return err
		}
		if _, ok := members.Joined[h.bot.id()]; !ok {
			return fmt.Errorf("bot has not joined %s yet", room)
		}
		return nil
	})
	return room
}

// startProcess runs the bridge binary (built without -race) instead of the in-process bridge,
// for tests that restart servers under it or kill it.
func (h *harness) startProcess() {
	h.t.Helper()
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "LOG_FORMAT=json")
	for k, v := range h.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logFile, err := os.Create(filepath.Join(h.t.TempDir(), fmt.Sprintf("bridge-%d.log", time.Now().UnixNano())))
	if err != nil {
		h.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	h.kill = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
			logFile.Close()
		})
	}
	h.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				h.t.Error("bridge process did not stop within 30s")
			}
			logFile.Close()
			if h.t.Failed() {
				data, _ := os.ReadFile(logFile.Name())
				h.t.Logf("bridge log:\n%s", data)
			}
		})
	}
	h.waitOnline()
}

// report logs a figure a test measured, and appends it to $MATRIX2MQTT_REPORT so that
// scripts/test.sh can print it after the run.
func report(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf("%s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Log(line)
	if path := os.Getenv("MATRIX2MQTT_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}

// testLogWriter writes log lines to the test's log until the test ends, and drops them after:
// mautrix's background work (a room key request, say) can log after the bridge stopped, and a
// test log written after its test completed panics the whole test binary.
func testLogWriter(t *testing.T) io.Writer {
	w := &endingWriter{w: zerolog.NewTestWriter(t)}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.ended = true
	})
	return w
}

type endingWriter struct {
	mu    sync.Mutex
	ended bool
	w     io.Writer
}

func (e *endingWriter) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return len(p), nil
	}
	return e.w.Write(p)
}
