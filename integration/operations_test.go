package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"

	"github.com/matrix2mqtt/matrix2mqtt/bridge"
)

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// get fetches url with an optional bearer token and returns the status and body.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	code, body, err := tryGet(url, token)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// tryGet is get that returns its error, for use inside eventually.
func tryGet(url, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// sample returns the value of the sample series (name{labels} as exposed, labels sorted by
// name) in a Prometheus text exposition, or -1 when it is not there.
func sample(exposition, series string) float64 {
	for line := range strings.SplitSeq(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// TestMetricsAfterWorkload scrapes /metrics (behind HTTP_TOKEN) after a short workload against
// the real servers and checks the counters it caused: requests by action and outcome, their
// latency, outbox deliveries, inbound events by kind. It also checks /readyz and that /stats
// and /metrics refuse requests without the token.
func TestMetricsAfterWorkload(t *testing.T) {
	addr := freeAddr(t)
	const token = "metrics-token-for-the-test"
	h := newHarness(t, map[string]string{"HTTP_LISTEN": addr, "HTTP_TOKEN": token})
	base := "http://" + addr

	for _, path := range []string{"/metrics", "/stats"} {
		for _, sent := range []string{"", "wrong-token", token + "x", token[:5]} {
			if code, body := get(t, base+path, sent); code != http.StatusUnauthorized || body != "unauthorized\n" {
				t.Errorf("%s with token %q: %d %q, want 401 unauthorized", path, sent, code, body)
			}
		}
	}
	eventually(t, 20*time.Second, func() error {
		if code, body, err := tryGet(base+"/readyz", ""); err != nil || code != http.StatusOK || body != "ready\n" {
			return fmt.Errorf("readyz: %d %q %v", code, body, err)
		}
		return nil
	})

	room := h.sharedRoom(nil)
	for i := range 2 {
		h.ok(h.request("send", map[string]any{"to": room, "text": fmt.Sprintf("metered %d", i)}))
	}
	h.fail(h.request("send", map[string]any{"to": room}), "invalid_request")
	h.ok(h.request("list_rooms", map[string]any{}))
	msg := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "to the bot 1"})
	h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "to the bot 2"})
	h.alice.send(t, room, &event.ReactionEventContent{RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: msg, Key: "👍"}})
	h.rec.wait(20*time.Second, "the reaction", func(m message) bool { return strings.HasSuffix(m.Topic, "/reaction") })

	var metrics string
	eventually(t, 10*time.Second, func() error {
		code, body, err := tryGet(base+"/metrics", token)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("metrics: %d %q %v", code, body, err)
		}
		metrics = body
		if sample(body, `matrix2mqtt_inbound_events_total{kind="reaction"}`) < 1 {
			return fmt.Errorf("the reaction is not counted yet")
		}
		return nil
	})
	for series, want := range map[string]float64{
		`matrix2mqtt_requests_total{action="send",outcome="ok"}`:              2,
		`matrix2mqtt_requests_total{action="send",outcome="invalid_request"}`: 1,
		`matrix2mqtt_requests_total{action="list_rooms",outcome="ok"}`:        1,
		`matrix2mqtt_request_duration_seconds_count{action="send"}`:           3,
		`matrix2mqtt_request_duration_seconds_count{action="list_rooms"}`:     1,
		`matrix2mqtt_outbox_deliveries_total{action="send",result="sent"}`:    2,
		`matrix2mqtt_inbound_events_total{kind="message"}`:                    2,
		`matrix2mqtt_inbound_events_total{kind="reaction"}`:                   1,
		`matrix2mqtt_outbox_pending`:                                          0,
		`matrix2mqtt_reconnects_total{peer="mqtt"}`:                           0,
		`matrix2mqtt_e2ee_decryption_failures_total{reason="withheld"}`:       0,
	} {
		if got := sample(metrics, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for _, series := range []string{"matrix2mqtt_matrix_sync_lag_seconds", "go_goroutines", "process_resident_memory_bytes", "matrix2mqtt_matrix_sync_errors_total"} {
		if sample(metrics, series) < 0 {
			t.Errorf("%s is missing or negative", series)
		}
	}
	if lag := sample(metrics, "matrix2mqtt_matrix_sync_lag_seconds"); lag > 30 {
		t.Errorf("sync lag %v s with a 5 s sync timeout", lag)
	}
	report(t, "%d metric lines after the workload", strings.Count(metrics, "\n"))
}

// TestReadyzSaysWhy: with a homeserver that does not answer, /readyz answers 503 naming Matrix
// while /healthz is a bare 503.
func TestReadyzSaysWhy(t *testing.T) {
	addr := freeAddr(t)
	environ := []string{
		"MATRIX_HOMESERVER=http://" + freeAddr(t), // nothing listens there
		"MATRIX_USER_ID=@nobody:localhost", "MATRIX_PASSWORD=unused",
		"MQTT_URL=" + env.MQTTURL, "MQTT_CLIENT_ID=readyz-test", "MQTT_BASE_TOPIC=readyz-test",
		"DATA_DIR=" + t.TempDir(), "HA_DISCOVERY=false", "HTTP_LISTEN=" + addr,
	}
	cfg, err := bridge.LoadConfig(environ)
	if err != nil {
		t.Fatal(err)
	}
	// The bridge's log goes nowhere: its MQTT client may still log after the test ended.
	ctx, cancel := context.WithCancel(zerolog.Nop().WithContext(context.Background()))
	done := make(chan error, 1)
	go func() { done <- bridge.Run(ctx, cfg, bridge.Options{Version: "test"}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bridge stopped with error: %v", err)
		}
	}()
	eventually(t, 20*time.Second, func() error {
		code, body, err := tryGet("http://"+addr+"/readyz", "")
		if err != nil || code != http.StatusServiceUnavailable || body != "not ready: Matrix not synced yet\n" {
			return fmt.Errorf("readyz: %d %q %v", code, body, err)
		}
		return nil
	})
	if code, body := get(t, "http://"+addr+"/healthz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("healthz: %d %q", code, body)
	}
}

// TestCheckConfigMasksSecrets runs `matrix2mqtt check-config` with the test bridge's settings
// plus credentials in the URLs: no secret is printed.
func TestCheckConfigMasksSecrets(t *testing.T) {
	cmd := exec.Command(binary, "check-config")
	cmd.Env = []string{
		"MATRIX_HOMESERVER=" + env.HomeserverURL, "MATRIX_USER_ID=@bot:localhost",
		"MATRIX_PASSWORD=matrix-password-1", "MATRIX_ACCESS_TOKEN=syt_access_token_2",
		"MQTT_URL=tcp://user:mqtt-url-password-3@127.0.0.1:1883", "MQTT_PASSWORD=mqtt-password-4",
		"DATABASE_URL=postgres://m2m:db-password-5@127.0.0.1/m2m?sslmode=disable",
		"E2EE_RECOVERY_KEY=recovery-key-6", "E2EE_PICKLE_KEY=pickle-key-7", "HTTP_TOKEN=http-token-8",
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("check-config: %v: %s", err, out)
	}
	for i, secret := range []string{"matrix-password-1", "syt_access_token_2", "mqtt-url-password-3", "mqtt-password-4", "db-password-5", "recovery-key-6", "pickle-key-7", "http-token-8"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("secret %d printed:\n%s", i+1, out)
		}
	}
	for _, line := range []string{"MQTT_URL=tcp://user:********@127.0.0.1:1883", "DATABASE_URL=postgres://m2m:********@127.0.0.1/m2m?sslmode=disable", "MATRIX_PASSWORD=********"} {
		if !strings.Contains(string(out), line+"\n") {
			t.Errorf("missing %q in:\n%s", line, out)
		}
	}
	help, err := exec.Command(binary, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(help), "check-config") || !strings.Contains(string(help), "configs/example.env") {
		t.Errorf("--help: %v\n%s", err, help)
	}
}
