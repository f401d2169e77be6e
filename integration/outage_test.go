package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestReconnects restarts the broker and the homeserver under a running bridge: it announces
// itself again, resubscribes, and delivers what was asked during the outage; /metrics counts
// the reconnects and the failed syncs.
func TestReconnects(t *testing.T) {
	httpAddr := freeAddr(t)
	h := newHarness(t, map[string]string{"HTTP_LISTEN": httpAddr})
	h.stop() // this test runs the bridge as a separate process
	h.startProcess()
	room := h.sharedRoom(nil)
	to := room.String()
	h.ok(h.request("send", map[string]any{"to": to, "text": "before broker restart"}))

	h.rec.mu.Lock()
	h.rec.msgs = nil
	h.rec.mu.Unlock()
	if err := env.RestartMosquitto(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The broker lost its retained messages; the bridge publishes them again after reconnecting.
	h.rec.wait(30*time.Second, "online after broker restart", func(m message) bool {
		return m.Topic == h.base+"/bridge/state" && string(m.Payload) == "online"
	})
	h.rec.wait(30*time.Second, "info after broker restart", func(m message) bool { return m.Topic == h.base+"/bridge/info" })
	data := h.ok(h.request("send", map[string]any{"to": to, "text": "after broker restart"}))
	if h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage().Body != "after broker restart" {
		t.Fatal("wrong message after broker restart")
	}

	if err := env.StopDendrite(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	h.rec.publish(h.base+"/bridge/request/send", 1, `{"id":"during-outage","to":"`+to+`","text":"sent during the homeserver outage"}`)
	time.Sleep(3 * time.Second)
	if err := env.StartDendrite(context.Background()); err != nil {
		t.Fatal(err)
	}
	data = h.ok(h.response("send", "during-outage"))
	t.Logf("request made during a 3s homeserver outage answered %s after it was published", time.Since(started).Round(time.Millisecond))
	if h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage().Body != "sent during the homeserver outage" {
		t.Fatal("wrong message after homeserver restart")
	}
	evt := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "inbound after outage"})
	h.rec.wait(60*time.Second, "inbound after homeserver restart", func(m message) bool {
		return strings.Contains(string(m.Payload), evt.String())
	})

	eventually(t, 10*time.Second, func() error {
		code, metrics, err := tryGet("http://"+httpAddr+"/metrics", "")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("metrics: %d %v", code, err)
		}
		for _, series := range []string{`matrix2mqtt_reconnects_total{peer="mqtt"}`, `matrix2mqtt_reconnects_total{peer="matrix"}`, `matrix2mqtt_matrix_sync_errors_total`} {
			if v := sample(metrics, series); v < 1 {
				return fmt.Errorf("%s = %v after the outages, want at least 1", series, v)
			}
		}
		retries := `matrix2mqtt_outbox_retries_total{action="send",code="matrix_error"}`
		t.Logf("after the outages: %s = %v", retries, sample(metrics, retries))
		return nil
	})
}
