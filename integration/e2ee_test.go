package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/internal/jsclient"
)

// jsUser is a human user's device running matrix-js-sdk with its Rust crypto (the crypto of
// Element Web), independent of mautrix.
type jsUser struct {
	*jsclient.Client
	user *user
}

// newJSUser logs a js device in for u (a fresh user when u is nil) that accepts invites.
func newJSUser(t *testing.T, u *user) *jsUser {
	t.Helper()
	if u == nil {
		u = newUser(t, "human")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logs, err := os.Create(filepath.Join(t.TempDir(), "jsclient.log"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := jsclient.Start(ctx, jsclient.Options{Stderr: logs})
	if err != nil {
		t.Fatalf("failed to start the js client (scripts/install-deps.sh installs it): %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		logs.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logs.Name())
			if len(data) > 20000 {
				data = data[len(data)-20000:]
			}
			t.Logf("js client log (tail):\n%s", data)
		}
	})
	if _, err := c.Login(ctx, jsclient.LoginArgs{Homeserver: env.HomeserverURL, UserID: u.UserID, Password: u.Password, AutoJoin: true}); err != nil {
		t.Fatalf("js login: %v", err)
	}
	return &jsUser{Client: c, user: u}
}

func jsCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// wait returns the event as the js device decrypted it; decryption failure fails the test.
func (j *jsUser) wait(t *testing.T, f jsclient.EventFilter) *jsclient.Event {
	t.Helper()
	if f.Timeout == 0 {
		f.Timeout = 30 * time.Second
	}
	evt, err := j.WaitEvent(jsCtx(t), f)
	if err != nil {
		t.Fatalf("js did not get %+v: %v", f, err)
	}
	return evt
}

// e2eeSetup is a bridge with E2EE and alice on js, sharing an encrypted room alice made.
type e2eeSetup struct {
	h     *harness
	alice *jsUser
	room  id.RoomID
	// metricsURL is the bridge's /metrics.
	metricsURL string
}

func newE2EESetup(t *testing.T) *e2eeSetup {
	t.Helper()
	return newE2EESetupWith(t, nil)
}

// newE2EESetupWith is newE2EESetup with extra settings for the bridge.
func newE2EESetupWith(t *testing.T, extra map[string]string) *e2eeSetup {
	t.Helper()
	httpAddr := freeAddr(t)
	settings := map[string]string{"HTTP_LISTEN": httpAddr}
	for k, v := range extra {
		settings[k] = v
	}
	h := newHarness(t, settings)
	alice := newJSUser(t, h.alice)
	ctx := jsCtx(t)
	if _, err := alice.BootstrapCrossSigning(ctx, h.alice.Password); err != nil {
		t.Fatalf("alice cross-signing: %v", err)
	}
	room, err := alice.CreateRoom(ctx, jsclient.CreateRoomArgs{Encrypted: true, Invite: []string{h.bot.UserID}, Name: "Encrypted"})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.WaitMember(ctx, room, h.bot.UserID, "join"); err != nil {
		t.Fatalf("bot did not join: %v", err)
	}
	return &e2eeSetup{h: h, alice: alice, room: id.RoomID(room), metricsURL: "http://" + httpAddr + "/metrics"}
}

// inbound waits for the MQTT message of an event alice sent.
func (s *e2eeSetup) inbound(t *testing.T, kind, evtID string) map[string]any {
	t.Helper()
	return s.h.rec.wait(30*time.Second, kind+" "+evtID, func(m message) bool {
		return m.Topic == s.h.base+"/room/"+s.room.String()+"/"+kind && strings.Contains(string(m.Payload), evtID)
	}).json(t)
}

func TestE2EEBothDirections(t *testing.T) {
	s := newE2EESetup(t)
	h, alice, room := s.h, s.alice, s.room.String()
	ctx := jsCtx(t)

	t.Run("js to MQTT", func(t *testing.T) {
		first, err := alice.Send(ctx, jsclient.SendArgs{RoomID: room, Body: "secret *hello*", HTML: "secret <em>hello</em>"})
		if err != nil {
			t.Fatal(err)
		}
		msg := s.inbound(t, "message", first)
		if msg["body"] != "secret *hello*" || msg["formatted_body"] != "secret <em>hello</em>" || msg["encrypted"] != true {
			t.Fatalf("message = %v", msg)
		}
		if msg["sender_verified"] != true {
			t.Errorf("alice's device is cross-signed by alice, but sender_verified = %v", msg["sender_verified"])
		}
		reply, _ := alice.Send(ctx, jsclient.SendArgs{RoomID: room, Body: "a reply", ReplyTo: first})
		if got := s.inbound(t, "message", reply); got["reply_to"] != first || got["body"] != "a reply" {
			t.Errorf("reply = %v", got)
		}
		threaded, _ := alice.Send(ctx, jsclient.SendArgs{RoomID: room, Body: "in thread", MsgType: "m.notice", Thread: first})
		if got := s.inbound(t, "message", threaded); got["thread"] != first || got["msgtype"] != "m.notice" {
			t.Errorf("thread = %v", got)
		}
		edit, _ := alice.Send(ctx, jsclient.SendArgs{RoomID: room, Body: "secret hello, edited", Edit: first})
		if got := s.inbound(t, "message", edit); got["edit_of"] != first || got["body"] != "secret hello, edited" {
			t.Errorf("edit = %v", got)
		}
		react, _ := alice.React(ctx, room, first, "🔒")
		if got := s.inbound(t, "reaction", react); got["relates_to"] != first || got["key"] != "🔒" {
			t.Errorf("reaction = %v", got)
		}
		red, _ := alice.Redact(ctx, room, reply, "gone")
		if got := s.inbound(t, "redaction", red); got["redacts"] != reply {
			t.Errorf("redaction = %v", got)
		}
	})

	t.Run("MQTT to js", func(t *testing.T) {
		root := h.ok(h.request("send", map[string]any{"to": room, "markdown": "**encrypted** alert"}))
		rootID := root["event_id"].(string)
		evt := alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: rootID})
		if !evt.Encrypted || evt.DecryptionFailed || !strings.Contains(fmt.Sprint(evt.Content["formatted_body"]), "<strong>encrypted</strong>") {
			t.Fatalf("event = %+v", evt)
		}
		if evt.ShieldColour != "NONE" {
			t.Errorf("Element would show a %s shield (%s) on the bot's message", evt.ShieldColour, evt.ShieldReason)
		}
		notice := h.ok(h.request("send", map[string]any{"to": room, "text": "notice", "msgtype": "notice", "reply_to": rootID}))
		n := alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: notice["event_id"].(string)})
		rel, _ := n.Content["m.relates_to"].(map[string]any)
		if n.Content["msgtype"] != "m.notice" || rel == nil || fmt.Sprint(rel["m.in_reply_to"]) != fmt.Sprintf("map[event_id:%s]", rootID) {
			t.Errorf("reply notice = %+v", n.Content)
		}
		threaded := h.ok(h.request("send", map[string]any{"to": room, "text": "thread", "thread": rootID}))
		th := alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: threaded["event_id"].(string)})
		if rel, _ := th.Content["m.relates_to"].(map[string]any); rel["rel_type"] != "m.thread" || rel["event_id"] != rootID {
			t.Errorf("thread = %+v", th.Content)
		}
		edited := h.ok(h.request("send", map[string]any{"to": room, "text": "edited alert", "edit": rootID}))
		ed := alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: edited["event_id"].(string)})
		if nc, _ := ed.Content["m.new_content"].(map[string]any); nc["body"] != "edited alert" {
			t.Errorf("edit = %+v", ed.Content)
		}
		located := h.ok(h.request("send_location", map[string]any{"to": room, "lat": -33.8568, "lon": 151.2153, "description": "Opera House"}))
		loc := alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: located["event_id"].(string)})
		if pin, _ := loc.Content["org.matrix.msc3488.location"].(map[string]any); !loc.Encrypted || loc.Content["msgtype"] != "m.location" ||
			loc.Content["geo_uri"] != "geo:-33.8568,151.2153" || pin["uri"] != "geo:-33.8568,151.2153" {
			t.Errorf("location = %+v", loc)
		}
		reaction := h.ok(h.request("react", map[string]any{"to": room, "event_id": rootID, "key": "✅"}))
		alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: reaction["event_id"].(string)})
		h.ok(h.request("redact", map[string]any{"to": room, "event_id": notice["event_id"], "reason": "cleanup"}))
		alice.wait(t, jsclient.EventFilter{RoomID: room, Redacts: notice["event_id"].(string), Type: "m.room.redaction"})
	})
}

// TestE2EEBotDeviceVerifiedByOwner: the js client sees the bot's device as cross-signed by its
// owner, so Element X shows no "not verified by its owner" warning; once alice verified the bot
// user, the device is cross-signing verified. A restart keeps the device and its trust.
func TestE2EEBotDeviceVerifiedByOwner(t *testing.T) {
	s := newE2EESetup(t)
	h, alice := s.h, s.alice
	ctx := jsCtx(t)
	info := h.rec.wait(10*time.Second, "info", func(m message) bool { return m.Topic == h.base+"/bridge/info" }).json(t)
	device := info["device_id"].(string)
	e2ee, _ := info["e2ee"].(map[string]any)
	if e2ee["status"] != "verified" || e2ee["device_cross_signed"] != true || e2ee["key_backup"] != true {
		t.Fatalf("bridge/info e2ee = %v", e2ee)
	}
	recovery := filepath.Join(h.env["DATA_DIR"], "recovery-key.txt")
	if fi, err := os.Stat(recovery); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("recovery key file: %v %v", fi, err)
	}

	status, err := alice.WaitDeviceSignedByOwner(ctx, h.bot.UserID, device, 30*time.Second)
	if err != nil {
		t.Fatalf("bot device not signed by its owner: %+v %v", status, err)
	}
	if err := alice.TrustUser(ctx, h.bot.UserID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		st, err := alice.DeviceStatus(ctx, h.bot.UserID, device)
		if err != nil {
			return err
		}
		if st.Device == nil || !st.Device.SignedByOwner || !st.Device.CrossSigningVerified {
			return fmt.Errorf("device status = %+v", st.Device)
		}
		return nil
	})
	report(t, "js (matrix-js-sdk rust crypto) sees the bot's device %s signed by its owner and cross-signing verified", device)

	h.stop()
	h.start()
	info = h.rec.wait(10*time.Second, "info after restart", func(m message) bool {
		return m.Topic == h.base+"/bridge/info" && strings.Contains(string(m.Payload), `"status":"verified"`)
	}).json(t)
	if info["device_id"] != device {
		t.Fatalf("device changed across restart: %s -> %v", device, info["device_id"])
	}
	in, _ := alice.SendText(ctx, s.room.String(), "after restart")
	if got := s.inbound(t, "message", in); got["body"] != "after restart" {
		t.Fatalf("message after restart = %v", got)
	}
	out := h.ok(h.request("send", map[string]any{"to": s.room.String(), "text": "bot after restart"}))
	evt := alice.wait(t, jsclient.EventFilter{RoomID: s.room.String(), EventID: out["event_id"].(string)})
	if evt.ShieldColour != "NONE" {
		t.Errorf("shield after restart: %s %s", evt.ShieldColour, evt.ShieldReason)
	}
	st, err := alice.DeviceStatus(ctx, h.bot.UserID, device)
	if err != nil || !st.Device.CrossSigningVerified {
		t.Fatalf("trust lost across restart: %+v %v", st, err)
	}
}

// TestE2EESecondDeviceGetsKeys: a device alice logs in later receives the keys of the bot's
// new messages.
func TestE2EESecondDeviceGetsKeys(t *testing.T) {
	s := newE2EESetup(t)
	h := s.h
	h.ok(h.request("send", map[string]any{"to": s.room.String(), "text": "before the second device"}))
	second := newJSUser(t, h.alice)
	loggedIn := time.Now()
	// The bot learns of the new device from its next sync (device_lists.changed) and shares the
	// room key of its next message with it.
	eventually(t, 30*time.Second, func() error {
		data := h.ok(h.request("send", map[string]any{"to": s.room.String(), "text": "for both devices"}))
		for name, dev := range map[string]*jsUser{"first": s.alice, "second": second} {
			evt, err := dev.WaitEvent(jsCtx(t), jsclient.EventFilter{RoomID: s.room.String(), EventID: data["event_id"].(string), Timeout: 5 * time.Second})
			if err != nil {
				return fmt.Errorf("%s device: %w", name, err)
			}
			if evt.Content["body"] != "for both devices" {
				return fmt.Errorf("%s device got %+v", name, evt.Content)
			}
		}
		return nil
	})
	report(t, "a second js device logged in later decrypts the bot's messages %s after its login", time.Since(loggedIn).Round(time.Millisecond))
}

// TestE2EERestoreFromRecoveryKey: the data dir is lost; the bridge starts on a new one with the
// recovery key, restores cross-signing and reads a message from before the loss through the
// key backup.
func TestE2EERestoreFromRecoveryKey(t *testing.T) {
	s := newE2EESetup(t)
	h, alice, room := s.h, s.alice, s.room.String()
	old, _ := alice.SendText(jsCtx(t), room, "sent before the loss")
	s.inbound(t, "message", old)
	// The room key reaches the backup after the sync that brought it.
	time.Sleep(2 * time.Second)
	recoveryKey := recoveryKeyOf(t, h)
	oldInfo := h.rec.wait(10*time.Second, "info", func(m message) bool { return m.Topic == h.base+"/bridge/info" }).json(t)

	h.stop()
	h.env["DATA_DIR"] = t.TempDir()
	h.env["E2EE_RECOVERY_KEY"] = recoveryKey
	h.rec.mu.Lock()
	h.rec.msgs = nil
	h.rec.mu.Unlock()
	h.start()
	info := h.rec.wait(30*time.Second, "info of the restored bridge", func(m message) bool {
		return m.Topic == h.base+"/bridge/info" && strings.Contains(string(m.Payload), `"status":"verified"`)
	}).json(t)
	if info["device_id"] == oldInfo["device_id"] {
		t.Fatal("expected a new device on a new data dir")
	}
	got := h.ok(h.request("get_event", map[string]any{"to": room, "event_id": old}))
	evt, _ := got["event"].(map[string]any)
	if evt["body"] != "sent before the loss" || evt["encrypted"] != true {
		t.Fatalf("get_event = %v", got)
	}
	if _, err := alice.WaitDeviceSignedByOwner(jsCtx(t), h.bot.UserID, info["device_id"].(string), 30*time.Second); err != nil {
		t.Fatalf("restored device not signed by its owner: %v", err)
	}
}

// TestE2EEEnsureDMWithJSUser: ensure_dm with a user who has only js makes an encrypted DM that
// both sides read.
func TestE2EEEnsureDMWithJSUser(t *testing.T) {
	h := newHarness(t, nil)
	bob := newJSUser(t, nil)
	dm := h.ok(h.request("ensure_dm", map[string]any{"user": bob.user.UserID}))
	room := dm["room_id"].(string)
	ctx := jsCtx(t)
	if err := bob.WaitMember(ctx, room, bob.user.UserID, "join"); err != nil {
		t.Fatalf("bob did not join the DM: %v", err)
	}
	if encrypted, err := bob.RoomEncrypted(ctx, room); err != nil || !encrypted {
		t.Fatalf("DM encrypted = %v %v", encrypted, err)
	}
	sent := h.ok(h.request("send", map[string]any{"to": bob.user.UserID, "text": "hello bob, privately"}))
	if sent["room_id"] != room {
		t.Fatalf("send to user went to %v, not the DM %s", sent["room_id"], room)
	}
	evt := bob.wait(t, jsclient.EventFilter{RoomID: room, EventID: sent["event_id"].(string)})
	if !evt.Encrypted || evt.Content["body"] != "hello bob, privately" {
		t.Fatalf("bob got %+v", evt)
	}
	answer, _ := bob.SendText(ctx, room, "hello bot")
	h.rec.wait(30*time.Second, "bob's answer", func(m message) bool {
		return strings.HasSuffix(m.Topic, "/message") && strings.Contains(string(m.Payload), answer) &&
			strings.Contains(string(m.Payload), `"body":"hello bot"`) && strings.Contains(string(m.Payload), `"encrypted":true`)
	})
}

// TestE2EEEnsureEncrypted turns encryption on in a plaintext room.
func TestE2EEEnsureEncrypted(t *testing.T) {
	h := newHarness(t, nil)
	alice := newJSUser(t, h.alice)
	ctx := jsCtx(t)
	// Turning on encryption takes power level 100, which alice gives the bot.
	created, err := h.alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Invite: []id.UserID{h.bot.id()},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{h.alice.id(): 100, h.bot.id(): 100}},
	})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID.String()
	if err := alice.WaitMember(ctx, room, h.bot.UserID, "join"); err != nil {
		t.Fatal(err)
	}
	// Without the power level it is a clear Matrix error.
	plain := h.alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{h.bot.id()}})
	eventually(t, 20*time.Second, func() error {
		resp := h.request("ensure_encrypted", map[string]any{"room": plain.String()})
		if e, _ := resp["error"].(map[string]any); e["errcode"] != "M_FORBIDDEN" {
			return fmt.Errorf("response = %v", resp)
		}
		return nil
	})
	res := h.ok(h.request("ensure_encrypted", map[string]any{"room": room}))
	if res["changed"] != true {
		t.Fatalf("ensure_encrypted = %v", res)
	}
	if again := h.ok(h.request("ensure_encrypted", map[string]any{"room": room})); again["changed"] != false {
		t.Fatalf("second ensure_encrypted = %v", again)
	}
	eventually(t, 20*time.Second, func() error {
		if enc, err := alice.RoomEncrypted(ctx, room); err != nil || !enc {
			return fmt.Errorf("not encrypted for js yet: %v %v", enc, err)
		}
		return nil
	})
	var data map[string]any
	eventually(t, 20*time.Second, func() error {
		// The bridge learns of the encryption event through sync before it encrypts.
		data = h.ok(h.request("send", map[string]any{"to": room, "text": "now encrypted"}))
		evt := alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: data["event_id"].(string)})
		if !evt.Encrypted {
			return fmt.Errorf("sent in plaintext")
		}
		return nil
	})
}

// TestE2EEShareKeysWithCrossSignedOnly: with E2EE_SHARE_KEYS_WITH=cross-signed, a device its
// owner cross-signed gets the keys of the bot's messages and one that is not does not.
func TestE2EEShareKeysWithCrossSignedOnly(t *testing.T) {
	h := newHarness(t, map[string]string{"E2EE_SHARE_KEYS_WITH": "cross-signed", "AUTO_JOIN": "*"})
	ctx := jsCtx(t)
	signed := newJSUser(t, nil)
	if _, err := signed.BootstrapCrossSigning(ctx, signed.user.Password); err != nil {
		t.Fatal(err)
	}
	unsigned := newJSUser(t, nil)
	room, err := signed.CreateRoom(ctx, jsclient.CreateRoomArgs{Encrypted: true, Invite: []string{h.bot.UserID, unsigned.user.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{h.bot.UserID, unsigned.user.UserID} {
		if err := signed.WaitMember(ctx, room, u, "join"); err != nil {
			t.Fatalf("%s did not join: %v", u, err)
		}
	}
	var data map[string]any
	eventually(t, 30*time.Second, func() error {
		// The bot needs the cross-signing keys of the room's members before it trusts them.
		data = h.ok(h.request("send", map[string]any{"to": room, "text": "for verified devices only"}))
		_, err := signed.WaitEvent(jsCtx(t), jsclient.EventFilter{RoomID: room, EventID: data["event_id"].(string), Timeout: 5 * time.Second})
		return err
	})
	evt, err := unsigned.WaitEvent(ctx, jsclient.EventFilter{RoomID: room, EventID: data["event_id"].(string), Timeout: 5 * time.Second})
	if !errors.Is(err, jsclient.ErrDecryptionFailed) {
		t.Fatalf("a device not cross-signed by its owner could read the bot's message: %+v %v", evt, err)
	}
}

// TestE2EEUndecryptableReported: alice's client withholds the room key from the bot (it shares
// keys only with devices alice verified), so the bot cannot read her message: the bridge says
// so on bridge/event and does not publish the message; once she shares keys again, her next
// message is published.
func TestE2EEUndecryptableReported(t *testing.T) {
	s := newE2EESetup(t)
	h, alice, room := s.h, s.alice, s.room.String()
	ctx := jsCtx(t)
	if err := alice.BlacklistUnverified(ctx, true); err != nil {
		t.Fatal(err)
	}
	withheld, err := alice.SendText(ctx, room, "not for unverified devices")
	if err != nil {
		t.Fatal(err)
	}
	notice := h.rec.wait(45*time.Second, "decryption_failed for "+withheld, func(m message) bool {
		return m.Topic == h.base+"/bridge/event" && strings.Contains(string(m.Payload), `"decryption_failed"`) &&
			strings.Contains(string(m.Payload), withheld)
	}).json(t)
	if notice["room_id"] != room || notice["sender"] != h.alice.UserID {
		t.Errorf("notice = %v", notice)
	}
	_, metrics := get(t, s.metricsURL, "")
	if n := sample(metrics, `matrix2mqtt_e2ee_decryption_failures_total{reason="withheld"}`); n != 1 {
		t.Errorf("withheld decryption failures = %v, want 1:\n%s", n, metrics)
	}

	if err := alice.BlacklistUnverified(ctx, false); err != nil {
		t.Fatal(err)
	}
	shared, err := alice.SendText(ctx, room, "for every device")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.inbound(t, "message", shared); got["body"] != "for every device" {
		t.Errorf("message = %v", got)
	}
	for _, m := range h.rec.all(h.base + "/room/" + room + "/message") {
		if strings.Contains(string(m.Payload), withheld) {
			t.Errorf("the undecryptable message was published: %s", m.Payload)
		}
	}
}

// TestE2EELateKeysAreRetried: an encrypted message whose room key reaches the bot only seconds
// after the message (a sender's to-device queue, a slow federation link) is decrypted and
// published when the key arrives, and is not reported as undecryptable. The sender is a mautrix
// OlmMachine here, because the test needs to hold the key back, which the js client cannot.
func TestE2EELateKeysAreRetried(t *testing.T) {
	h := newHarness(t, nil)
	late := sendWithLateKey(t, h, "the key comes later")
	// The bridge waits 3 s for the key, asks for it, and waits up to 22 s more.
	const delay = 6 * time.Second
	time.Sleep(delay)
	late.shareKey()
	late.expectPublished(h)
	report(t, "a message whose key arrived %s after it was published %s after it was sent", delay, time.Since(late.sent).Round(time.Millisecond))
}

// TestE2EELateKeysSurviveARestart: the bridge stops while a message waits for its key, and the
// key arrives while it is down. The next start tries the message again and publishes it, though
// the sync that brought it was saved before the stop.
func TestE2EELateKeysSurviveARestart(t *testing.T) {
	h := newHarness(t, nil)
	late := sendWithLateKey(t, h, "the key came while the bridge was down")
	// The sync that brought the message was saved, with the message waiting for its key.
	eventually(t, 15*time.Second, func() error {
		if n := undecryptedRows(t, h, late.eventID); n != 1 {
			return fmt.Errorf("not saved as waiting for its key (%d rows)", n)
		}
		return nil
	})
	h.stop()
	late.shareKey()
	h.start()
	late.expectPublished(h)
	eventually(t, 10*time.Second, func() error {
		if n := undecryptedRows(t, h, late.eventID); n != 0 {
			return fmt.Errorf("still waiting after it was published (%d rows)", n)
		}
		return nil
	})
}

// TestE2EEKeysThatNeverComeAreReported: a message still waiting for its key a day after it came
// is reported as undecryptable at the next start, and forgotten.
func TestE2EEKeysThatNeverComeAreReported(t *testing.T) {
	h := newHarness(t, nil)
	lost := sendWithLateKey(t, h, "its key never comes")
	eventually(t, 15*time.Second, func() error {
		if n := undecryptedRows(t, h, lost.eventID); n != 1 {
			return fmt.Errorf("not saved as waiting for its key (%d rows)", n)
		}
		return nil
	})
	h.stop()
	db := bridgeDB(t, h)
	if _, err := db.Exec("UPDATE matrix2mqtt_undecrypted SET seen_at = seen_at - $1 WHERE event_id=$2",
		(25 * time.Hour).Milliseconds(), lost.eventID); err != nil {
		t.Fatal(err)
	}
	h.start()
	notice := h.rec.wait(30*time.Second, "decryption_failed for "+lost.eventID.String(), func(m message) bool {
		return m.Topic == h.base+"/bridge/event" && strings.Contains(string(m.Payload), `"decryption_failed"`) &&
			strings.Contains(string(m.Payload), lost.eventID.String())
	}).json(t)
	if notice["room_id"] != lost.room.String() || notice["sender"] != h.alice.UserID || !strings.Contains(notice["message"].(string), "within a day") {
		t.Errorf("notice = %v", notice)
	}
	eventually(t, 10*time.Second, func() error {
		if n := undecryptedRows(t, h, lost.eventID); n != 0 {
			return fmt.Errorf("still waiting after it was reported (%d rows)", n)
		}
		return nil
	})
}

// bridgeDB opens the database of h's bridge (SQLite in its DATA_DIR) beside it.
func bridgeDB(t *testing.T, h *harness) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3-fk-wal", filepath.Join(h.env["DATA_DIR"], "matrix2mqtt.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// undecryptedRows counts the rows that keep evtID as waiting for its key in h's bridge database;
// none when the table is not there (package e2ee makes it once E2EE is on).
func undecryptedRows(t *testing.T, h *harness, evtID id.EventID) int {
	t.Helper()
	db := bridgeDB(t, h)
	var tables, n int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='matrix2mqtt_undecrypted'").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables == 0 {
		return 0
	}
	if err := db.QueryRow("SELECT count(*) FROM matrix2mqtt_undecrypted WHERE event_id=$1", evtID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// lateKey is an encrypted message in a room of its own whose room key the bot has not got.
type lateKey struct {
	t       *testing.T
	sender  *crypto.OlmMachine
	bot     id.UserID
	room    id.RoomID
	eventID id.EventID
	body    string
	roomKey event.Content
	sent    time.Time
}

// sendWithLateKey has alice send body in a new encrypted room, holding its key back.
func sendWithLateKey(t *testing.T, h *harness, body string) *lateKey {
	t.Helper()
	ctx := context.Background()
	room := h.sharedRoom(&mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{encryptionState()}})
	sender := newOlmMachine(t, h.alice.cli)
	session, err := crypto.NewOutboundGroupSession(room, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	session.Shared = true
	if err := sender.CryptoStore.AddOutboundGroupSession(ctx, session); err != nil {
		t.Fatal(err)
	}
	roomKey := session.ShareContent() // the key at index 0, before the message is encrypted
	encrypted, err := sender.EncryptMegolmEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.alice.cli.SendMessageEvent(ctx, room, event.EventEncrypted, encrypted)
	if err != nil {
		t.Fatal(err)
	}
	return &lateKey{t: t, sender: sender, bot: h.bot.id(), room: room, eventID: resp.EventID, body: body, roomKey: roomKey, sent: time.Now()}
}

// shareKey sends the room key to every device of the bot.
func (l *lateKey) shareKey() {
	l.t.Helper()
	ctx := context.Background()
	devices, err := l.sender.FetchKeys(ctx, []id.UserID{l.bot}, true)
	if err != nil || len(devices[l.bot]) == 0 {
		l.t.Fatalf("failed to fetch the bot's devices: %v %v", devices, err)
	}
	for _, device := range devices[l.bot] {
		if err := l.sender.SendEncryptedToDevice(ctx, device, event.ToDeviceRoomKey, l.roomKey); err != nil {
			l.t.Fatal(err)
		}
	}
}

// expectPublished waits for the message on MQTT, decrypted, and checks that it was not reported
// as undecryptable.
func (l *lateKey) expectPublished(h *harness) {
	l.t.Helper()
	got := h.rec.wait(30*time.Second, "late-decrypted message", func(m message) bool {
		return m.Topic == h.base+"/room/"+l.room.String()+"/message" && strings.Contains(string(m.Payload), l.eventID.String())
	}).json(l.t)
	if got["body"] != l.body || got["encrypted"] != true {
		l.t.Errorf("message = %v", got)
	}
	for _, m := range h.rec.all(h.base + "/bridge/event") {
		if strings.Contains(string(m.Payload), "decryption_failed") {
			l.t.Errorf("reported as undecryptable although the key came: %s", m.Payload)
		}
	}
}

// TestE2EEKeyRequestsFromOwnVerifiedDevices: another device of the bot's account (an operator
// reading the bot's rooms) asks the bridge for a room key it missed. The bridge refuses
// (m.room_key.withheld) while that device is not cross-signed, and forwards the key once the
// device was signed with the recovery key. js and Element do not send key requests (they use
// the key backup), so the other device is a mautrix OlmMachine.
func TestE2EEKeyRequestsFromOwnVerifiedDevices(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	room := h.sharedRoom(&mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{encryptionState()}})
	sent := h.ok(h.request("send", map[string]any{"to": room, "text": "read me on your other device"}))
	sentID := id.EventID(sent["event_id"].(string))

	// The operator's device logs in after the message was sent, so it was not given the key.
	cli, err := mautrix.NewClient(env.HomeserverURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: h.bot.UserID},
		Password: h.bot.Password, InitialDeviceDisplayName: "operator", StoreCredentials: true,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cli.Logout(context.Background()) })
	other := newOlmMachine(t, cli)
	// One goroutine does all the syncing and the checks: mautrix's MemoryStore is not safe for
	// concurrent use.
	since := ""
	syncOnce := func() {
		t.Helper()
		resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, Timeout: 500})
		if err != nil {
			t.Fatalf("sync of the operator's device failed: %v", err)
		}
		other.ProcessSyncResponse(ctx, resp, since)
		since = resp.NextBatch
	}
	syncOnce()

	evt, err := cli.GetEvent(ctx, room, sentID)
	if err != nil {
		t.Fatal(err)
	}
	evt.RoomID = room
	if err := evt.Content.ParseRaw(evt.Type); err != nil {
		t.Fatal(err)
	}
	if _, err := other.DecryptMegolmEvent(ctx, evt); err == nil {
		t.Fatal("the new device could decrypt without asking")
	}
	content := evt.Content.AsEncrypted()
	ask := func() {
		t.Helper()
		if err := other.SendRoomKeyRequest(ctx, room, content.SenderKey, content.SessionID, "", map[id.UserID][]id.DeviceID{h.bot.id(): {"*"}}); err != nil {
			t.Fatal(err)
		}
	}

	// session tells whether the key arrived (mautrix's WaitForSession also returns on a refusal).
	session := func() (bool, error) {
		igs, err := other.CryptoStore.GetGroupSession(ctx, room, content.SessionID)
		return igs != nil, err
	}
	ask()
	eventually(t, 15*time.Second, func() error {
		syncOnce()
		if got, err := session(); got {
			t.Fatal("the bridge forwarded the key to a device its owner has not verified")
		} else if !errors.Is(err, crypto.ErrGroupSessionWithheld) {
			return fmt.Errorf("no refusal yet (%v)", err)
		}
		return nil
	})

	if err := other.VerifyWithRecoveryKey(ctx, recoveryKeyOf(t, h)); err != nil {
		t.Fatalf("failed to cross-sign the operator's device: %v", err)
	}
	started := time.Now()
	// The bridge learns of the signature from its next syncs; a client asks again meanwhile.
	eventually(t, 30*time.Second, func() error {
		ask()
		var err error
		for range 4 {
			syncOnce()
			var got bool
			if got, err = session(); got {
				return nil
			}
		}
		return fmt.Errorf("no forwarded key yet (%v)", err)
	})
	decrypted, err := other.DecryptMegolmEvent(ctx, evt)
	if err != nil {
		t.Fatal(err)
	}
	if body := decrypted.Content.AsMessage().Body; body != "read me on your other device" {
		t.Fatalf("decrypted body = %q", body)
	}
	report(t, "the bridge refused a key request from an unverified device of its account, and forwarded the key %s after that device was cross-signed",
		time.Since(started).Round(time.Millisecond))
}

// recoveryKeyOf reads the recovery key that the bridge of h wrote on its first start.
func recoveryKeyOf(t *testing.T, h *harness) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.env["DATA_DIR"], "recovery-key.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			return line
		}
	}
	t.Fatalf("no recovery key in %s", data)
	return ""
}

// encryptionState is the initial state that makes a new room encrypted.
func encryptionState() *event.Event {
	return &event.Event{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}
}

// newOlmMachine gives cli's device E2EE keys, kept in memory, for tests that need to do what
// the js client cannot. A MemoryStore must be used from one goroutine at a time.
func newOlmMachine(t *testing.T, cli *mautrix.Client) *crypto.OlmMachine {
	t.Helper()
	log := zerolog.Nop()
	mach := crypto.NewOlmMachine(cli, &log, crypto.NewMemoryStore(nil), mautrix.NewMemoryStateStore().(crypto.StateStore))
	if err := mach.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := mach.ShareKeys(context.Background(), -1); err != nil {
		t.Fatal(err)
	}
	return mach
}
