package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func TestBadInput(t *testing.T) {
	h := newHarness(t, map[string]string{"MAX_PAYLOAD_BYTES": "70000"})
	room := h.sharedRoom(nil)
	to := room.String()
	cases := []struct {
		name    string
		action  string
		payload string
		code    string
		mention string // the error message must name this
	}{
		{"not JSON", "send", `{"id":"bad-json","to":`, "invalid_request", "JSON"},
		{"not an object", "send", `["id","x"]`, "invalid_request", "object"},
		{"wrong type", "send", `{"id":"bad-type","to":"` + to + `","text":5}`, "invalid_request", "'text'"},
		{"unknown field", "send", `{"id":"bad-field","to":"` + to + `","txt":"hi"}`, "invalid_request", "'txt'"},
		{"missing to", "send", `{"id":"no-to","text":"hi"}`, "invalid_request", "'to'"},
		{"no text", "send", `{"id":"no-text","to":"` + to + `"}`, "invalid_request", "'text'"},
		{"two bodies", "send", `{"id":"two","to":"` + to + `","text":"a","html":"b"}`, "invalid_request", "exactly one"},
		{"bad msgtype", "send", `{"id":"mt","to":"` + to + `","text":"a","msgtype":"m.image"}`, "invalid_request", "'msgtype'"},
		{"bad event id", "send", `{"id":"evid","to":"` + to + `","text":"a","reply_to":"abc"}`, "invalid_request", "'reply_to'"},
		{"bad mention", "send", `{"id":"mention","to":"` + to + `","text":"a","mentions":["alice"]}`, "invalid_request", "'mentions'"},
		{"edit with thread", "send", `{"id":"edit-thread","to":"` + to + `","text":"a","edit":"$a","thread":"$b"}`, "invalid_request", "'edit'"},
		{"unknown target", "send", `{"id":"who","to":"nobody","text":"a"}`, "unknown_target", "nobody"},
		{"bad user id", "send", `{"id":"baduser","to":"@x","text":"a"}`, "unknown_target", "@x"},
		{"text too large", "send", `{"id":"big","to":"` + to + `","text":"` + strings.Repeat("a", 61000) + `"}`, "too_large", "60000"},
		{"payload too large", "send", `{"id":"huge","to":"` + to + `","text":"` + strings.Repeat("a", 71000) + `"}`, "too_large", "MAX_PAYLOAD_BYTES"},
		{"unknown action", "sned", `{"id":"typo"}`, "unknown_action", "sned"},
		{"media host not allowed", "send_media", `{"id":"media","to":"` + to + `","url":"http://x/a.png"}`, "not_allowed", "MEDIA_HOSTS"},
		{"location out of range", "send_location", `{"id":"far","to":"` + to + `","lat":95,"lon":0}`, "invalid_request", "'lat'"},
		{"react without key", "react", `{"id":"nokey","to":"` + to + `","event_id":"$x"}`, "invalid_request", "'key'"},
		{"redact without event", "redact", `{"id":"noev","to":"` + to + `"}`, "invalid_request", "'event_id'"},
		{"join without room", "join", `{"id":"noroom"}`, "invalid_request", "'room'"},
		{"typing wrong type", "typing", `{"id":"typ","to":"` + to + `","typing":"yes"}`, "invalid_request", "'typing'"},
		{"not UTF-8", "send", "{\"id\":\"utf\",\"to\":\"" + to + "\",\"text\":\"\xff\"}", "invalid_request", "UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.rec.publish(h.base+"/bridge/request/"+tc.action, 1, tc.payload)
			reqID := requestIDOf(tc.payload)
			var resp map[string]any
			if reqID != "" {
				resp = h.response(tc.action, reqID)
			} else {
				resp = h.rec.wait(20*time.Second, "response without id", func(m message) bool {
					return m.Topic == h.base+"/bridge/response/"+tc.action && strings.Contains(string(m.Payload), tc.mention) && !strings.Contains(string(m.Payload), `"id"`)
				}).json(t)
			}
			msg := h.fail(resp, tc.code)
			if !strings.Contains(msg, tc.mention) {
				t.Fatalf("message %q does not mention %q", msg, tc.mention)
			}
		})
	}
	t.Run("empty shortcut target", func(t *testing.T) {
		h.rec.publish(h.base+"/send/", 1, "x")
		resp := h.rec.wait(20*time.Second, "error for empty target", func(m message) bool {
			return m.Topic == h.base+"/bridge/response/send" && strings.Contains(string(m.Payload), "target in topic")
		}).json(t)
		h.fail(resp, "invalid_request")
	})
	t.Run("still works afterwards", func(t *testing.T) {
		data := h.ok(h.request("send", map[string]any{"to": to, "text": "still alive"}))
		if h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage().Body != "still alive" {
			t.Fatal("message not delivered after bad input")
		}
	})
}

func requestIDOf(payload string) string {
	var v struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal([]byte(payload), &v)
	return v.ID
}

func TestRestartKeepsDeviceAndSyncPosition(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	info := func() map[string]any {
		return h.rec.wait(10*time.Second, "info", func(m message) bool { return m.Topic == h.base+"/bridge/info" }).json(t)
	}
	device := info()["device_id"]
	before := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "before restart"})
	h.rec.wait(20*time.Second, "message before restart", func(m message) bool { return strings.Contains(string(m.Payload), before.String()) })

	h.stop()
	during := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "while the bridge was down"})
	h.rec.mu.Lock()
	h.rec.msgs = nil
	h.rec.mu.Unlock()
	h.start()
	if got := info()["device_id"]; got != device {
		t.Fatalf("device changed across restart: %v -> %v", device, got)
	}
	h.rec.wait(20*time.Second, "message sent while down", func(m message) bool { return strings.Contains(string(m.Payload), during.String()) })
	after := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "after restart"})
	h.rec.wait(20*time.Second, "message after restart", func(m message) bool { return strings.Contains(string(m.Payload), after.String()) })
	topic := h.base + "/room/" + room.String() + "/message"
	counts := map[string]int{}
	for _, m := range h.rec.all(topic) {
		counts[m.json(t)["event_id"].(string)]++
	}
	if counts[before.String()] != 0 {
		t.Errorf("message from before the restart published again; seen after the restart:\n%s", h.rec.dump())
	}
	if counts[during.String()] != 1 || counts[after.String()] != 1 {
		t.Errorf("counts = %v", counts)
	}
}

func TestFirstSyncPublishesNoHistory(t *testing.T) {
	alice := newUser(t, "alice")
	bot := newUser(t, "bot")
	room := alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot.id()}})
	bot.join(t, room)
	old := alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "history"})

	h := &harness{t: t, base: fmt.Sprintf("m2m%d", harnessCount.Add(1)), bot: bot, alice: alice}
	h.env = map[string]string{
		"MATRIX_HOMESERVER": env.HomeserverURL, "MATRIX_USER_ID": bot.UserID, "MATRIX_PASSWORD": bot.Password,
		"MATRIX_SYNC_TIMEOUT": "5s", "MQTT_URL": env.MQTTURL, "MQTT_CLIENT_ID": h.base, "MQTT_BASE_TOPIC": h.base, "DATA_DIR": t.TempDir(),
	}
	h.rec = newRecorder(t, h.base)
	h.start()
	t.Cleanup(h.stop)
	h.rec.wait(20*time.Second, "rooms with the room", func(m message) bool {
		return m.Topic == h.base+"/bridge/rooms" && strings.Contains(string(m.Payload), room.String())
	})
	fresh := alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "new"})
	h.rec.wait(20*time.Second, "new message", func(m message) bool { return strings.Contains(string(m.Payload), fresh.String()) })
	for _, m := range h.rec.all(h.base + "/room/" + room.String() + "/message") {
		if strings.Contains(string(m.Payload), old.String()) {
			t.Fatalf("history published: %s", m.Payload)
		}
	}
}

// TestReloginAfterTokenRejected invalidates the bridge's token (a password login to the same
// device replaces it) and checks that the bridge logs in again by itself.
func TestReloginAfterTokenRejected(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	info := h.rec.wait(10*time.Second, "info", func(m message) bool { return m.Topic == h.base+"/bridge/info" }).json(t)
	device := id.DeviceID(info["device_id"].(string))
	cli, _ := mautrix.NewClient(env.HomeserverURL, "", "")
	if _, err := cli.Login(context.Background(), &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: h.bot.UserID},
		Password: h.bot.Password, DeviceID: device,
	}); err != nil {
		t.Fatal(err)
	}
	// The bridge's next sync fails with M_UNKNOWN_TOKEN, it logs in again, and keeps working.
	eventually(t, 30*time.Second, func() error {
		evt := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "after relogin"})
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			for _, m := range h.rec.all(h.base + "/room/" + room.String() + "/message") {
				if strings.Contains(string(m.Payload), evt.String()) {
					return nil
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		return fmt.Errorf("message %s not published", evt)
	})
	data := h.ok(h.request("send", map[string]any{"to": room.String(), "text": "sent after relogin"}))
	if data["event_id"] == "" {
		t.Fatal("no event id")
	}
}

// TestTokenRejectedWithoutPassword: with only an access token the bridge cannot log in again;
// it says so on bridge/event and keeps requests in the outbox.
func TestTokenRejectedWithoutPassword(t *testing.T) {
	bot := newUser(t, "bot")
	alice := newUser(t, "alice")
	h := &harness{t: t, base: fmt.Sprintf("m2m%d", harnessCount.Add(1)), bot: bot, alice: alice}
	h.env = map[string]string{
		"MATRIX_HOMESERVER": env.HomeserverURL, "MATRIX_USER_ID": bot.UserID, "MATRIX_ACCESS_TOKEN": bot.AccessToken,
		"MATRIX_SYNC_TIMEOUT": "2s", "MQTT_URL": env.MQTTURL, "MQTT_CLIENT_ID": h.base, "MQTT_BASE_TOPIC": h.base,
		"DATA_DIR": t.TempDir(), "AUTO_JOIN": alice.UserID,
	}
	h.rec = newRecorder(t, h.base)
	h.start()
	t.Cleanup(h.stop)
	room := h.sharedRoom(nil)

	req, _ := http.NewRequest(http.MethodPost, env.HomeserverURL+"/_matrix/client/v3/logout", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+bot.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %v %v", err, resp)
	}
	resp.Body.Close()
	h.rec.wait(30*time.Second, "token_invalid event", func(m message) bool {
		return m.Topic == h.base+"/bridge/event" && strings.Contains(string(m.Payload), `"type":"token_invalid"`)
	})
	h.rec.publish(h.base+"/bridge/request/send", 1, `{"id":"kept","to":"`+room.String()+`","text":"waits for a new token"}`)
	eventually(t, 20*time.Second, func() error {
		stats := h.ok(h.request("outbox_stats", map[string]any{}))
		if stats["outbox_pending"] != float64(1) {
			return fmt.Errorf("outbox_pending = %v", stats["outbox_pending"])
		}
		return nil
	})
	for _, m := range h.rec.all(h.base + "/bridge/response/send") {
		if strings.Contains(string(m.Payload), `"kept"`) {
			t.Fatalf("request answered although the token is gone: %s", m.Payload)
		}
	}
}

// TestRetainedRequestIsIgnored: a request published with the retain flag runs once, when it is
// published, and is not run again when the broker replays it after a restart of the bridge.
func TestRetainedRequestIsIgnored(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	h.rec.cli.Publish(h.base+"/bridge/request/send", 1, true, `{"id":"retained","to":"`+room.String()+`","text":"once only"}`).Wait()
	h.ok(h.response("send", "retained"))
	h.stop()
	h.rec.mu.Lock()
	h.rec.msgs = nil
	h.rec.mu.Unlock()
	h.start()
	h.fail(h.response("send", "retained"), "invalid_request")
	h.rec.cli.Publish(h.base+"/bridge/request/send", 1, true, "").Wait() // clear it
	msgs, err := h.alice.cli.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for _, evt := range msgs.Chunk {
		if evt.Type == event.EventMessage && evt.Sender == h.bot.id() {
			sent++
		}
	}
	if sent != 1 {
		t.Fatalf("retained request sent %d times", sent)
	}
}

// TestEncryptedRoomRefusedWithoutE2EE: with E2EE=false the bridge sends no plaintext into an
// encrypted room, and leaves the encrypted messages it cannot read alone (it does not keep them
// as waiting for keys it will never look for).
func TestEncryptedRoomRefusedWithoutE2EE(t *testing.T) {
	h := newHarness(t, map[string]string{"E2EE": "false"})
	late := sendWithLateKey(t, h, "unreadable without E2EE")
	room := late.room
	eventually(t, 10*time.Second, func() error {
		resp := h.request("send", map[string]any{"to": room.String(), "text": "must not go out in plaintext"})
		if resp["status"] == "ok" {
			t.Fatalf("plaintext sent into an encrypted room: %v", resp)
		}
		if e, _ := resp["error"].(map[string]any); e["code"] != "not_allowed" {
			return fmt.Errorf("response = %v", resp)
		}
		return nil
	})
	// Two plaintext messages after it, in two syncs: once the second is published, the sync
	// that brought the encrypted one has been saved.
	for _, body := range []string{"first after", "second after"} {
		marker := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
		h.rec.wait(10*time.Second, body, func(m message) bool { return strings.Contains(string(m.Payload), marker.String()) })
	}
	if n := undecryptedRows(t, h, late.eventID); n != 0 {
		t.Fatalf("the encrypted message is kept as waiting for its key (%d rows)", n)
	}
}

// TestLongOutageLosesNothing: while the bridge is down a room gets more events than one sync
// returns; after the restart every one of them is published once, in order.
func TestLongOutageLosesNothing(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	h.stop()
	const n = 120 // the bridge's sync returns at most 50 events of a room
	sent := make([]id.EventID, n)
	for i := range sent {
		sent[i] = h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("missed %03d", i)})
	}
	h.start()
	h.rec.wait(60*time.Second, "the last missed message", func(m message) bool { return strings.Contains(string(m.Payload), sent[n-1].String()) })
	var got []string
	for _, m := range h.rec.all(h.base + "/room/" + room.String() + "/message") {
		if body, _ := m.json(t)["body"].(string); strings.HasPrefix(body, "missed ") {
			got = append(got, body)
		}
	}
	if len(got) != n {
		t.Fatalf("published %d of %d messages sent while the bridge was down: %v", len(got), n, got)
	}
	for i, body := range got {
		if want := fmt.Sprintf("missed %03d", i); body != want {
			t.Fatalf("message %d is %q, want %q", i, body, want)
		}
	}
	report(t, "%d messages sent while the bridge was down (more than one sync returns) all published once, in order", n)
}

// TestOperationsEndpoints: /healthz and /stats on HTTP_LISTEN, and the one-off subcommands of
// the binary against the running bridge's settings.
func TestOperationsEndpoints(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := newHarness(t, map[string]string{"HTTP_LISTEN": addr})
	eventually(t, 20*time.Second, func() error {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz = %d", resp.StatusCode)
		}
		return nil
	})
	resp, err := http.Get("http://" + addr + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var stats map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil || stats["outbox_pending"] == nil {
		t.Fatalf("stats = %v, %v", stats, err)
	}
	resp.Body.Close()

	run := func(args ...string) (string, error) {
		cmd := exec.Command(binary, args...)
		for k, v := range h.env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("healthcheck"); err != nil {
		t.Fatalf("healthcheck: %v: %s", err, out)
	}
	if out, err := run("check-config"); err != nil || !strings.Contains(out, "valid") {
		t.Fatalf("check-config: %v: %s", err, out)
	}
	out, err := run("e2ee", "status")
	if err != nil || !strings.Contains(out, `"status": "verified"`) || !strings.Contains(out, `"key_backup": true`) {
		t.Fatalf("e2ee status: %v: %s", err, out)
	}
	h.env["MQTT_URL"] = "udp://nowhere"
	if out, err := run("check-config"); err == nil || !strings.Contains(out, "MQTT_URL") {
		t.Fatalf("check-config with a bad setting: %v: %s", err, out)
	}
}

// TestMQTTTransports runs the bridge over TLS with a client certificate (settings given as
// files, as an operator would) and over WebSockets, against the same Mosquitto.
func TestMQTTTransports(t *testing.T) {
	for name, extra := range map[string]map[string]string{
		"tls with a client certificate": {"MQTT_URL": env.MQTTSClientAuthURL, "MQTT_CA_FILE": env.CAFile,
			"MQTT_CERT_FILE": env.ClientCertFile, "MQTT_KEY_FILE": env.ClientKeyFile},
		"websockets": {"MQTT_URL": env.MQTTWSURL},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, extra)
			room := h.sharedRoom(nil)
			data := h.ok(h.request("send", map[string]any{"to": room, "text": "over " + name}))
			if body := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage().Body; body != "over "+name {
				t.Fatalf("body = %q", body)
			}
		})
	}
}
