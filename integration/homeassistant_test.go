package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/discovery"
	"github.com/matrix2mqtt/matrix2mqtt/internal/havalidate"
)

// haPrefix is the discovery prefix of a harness (see newHarnessOn).
func (h *harness) haPrefix() string { return h.base + "/homeassistant" }

// discoveryTopic is the device config topic of the harness's bridge.
func (h *harness) discoveryTopic() string {
	return discovery.Topic(h.haPrefix(), discovery.ObjectID(h.bot.UserID))
}

// waitConfig waits for a device config (not a removal, not empty) that matches, validates it
// against Home Assistant's rules and returns its components.
func (h *harness) waitConfig(what string, match func(cmps map[string]any) bool) map[string]any {
	h.t.Helper()
	var cmps map[string]any
	m := h.rec.wait(20*time.Second, what, func(m message) bool {
		if m.Topic != h.discoveryTopic() || len(m.Payload) == 0 {
			return false
		}
		var cfg struct {
			Cmps map[string]any `json:"cmps"`
		}
		if json.Unmarshal(m.Payload, &cfg) != nil || !match(cfg.Cmps) {
			return false
		}
		cmps = cfg.Cmps
		return true
	})
	if err := havalidate.Validate(h.haPrefix(), m.Topic, m.Payload); err != nil {
		h.t.Fatalf("discovery config is not what Home Assistant accepts: %v\n%s", err, m.Payload)
	}
	return cmps
}

// restart stops the bridge, applies env changes (an empty value removes the setting), forgets
// what the recorder saw and starts the bridge again.
func (h *harness) restart(changes map[string]string) {
	h.t.Helper()
	h.stop()
	for k, v := range changes {
		if v == "" {
			delete(h.env, k)
		} else {
			h.env[k] = v
		}
	}
	h.rec.mu.Lock()
	h.rec.msgs = nil
	h.rec.mu.Unlock()
	h.start()
}

func has(cmps map[string]any, ids ...string) bool {
	for _, id := range ids {
		if _, ok := cmps[id]; !ok {
			return false
		}
	}
	return true
}

func TestHADiscovery(t *testing.T) {
	h := newHarness(t, map[string]string{
		"COMMAND_SENDERS": "@someone:example.org", "COMMAND_ROOMS": "alice", "COMMANDS": "lights,alarm",
	})
	cmps := h.waitConfig("device config", func(map[string]any) bool { return true })
	for _, id := range []string{"connectivity", "outbox_pending", "oldest_pending_age", "sent", "failed", "expired",
		"inbound", "last_error", "joined_rooms", "e2ee_status", "flush_outbox", "notify_alice", "room_alice", "command_lights", "command_alarm"} {
		if _, ok := cmps[id]; !ok {
			t.Errorf("component %s missing; have %v", id, slices.Sorted(func(yield func(string) bool) {
				for k := range cmps {
					if !yield(k) {
						return
					}
				}
			}))
		}
	}

	t.Run("retained", func(t *testing.T) {
		late := newRecorder(t, h.base)
		late.wait(10*time.Second, "retained config", func(m message) bool { return m.Topic == h.discoveryTopic() && m.Retained })
	})
	t.Run("state topics carry what the entities read", func(t *testing.T) {
		h.rec.wait(20*time.Second, "matrix_connected in stats", func(m message) bool {
			return m.Topic == h.base+"/bridge/stats" && strings.Contains(string(m.Payload), `"matrix_connected":true`)
		})
		info := h.rec.wait(10*time.Second, "info", func(m message) bool { return m.Topic == h.base+"/bridge/info" }).json(t)
		if e2ee, _ := info["e2ee"].(map[string]any); e2ee == nil || e2ee["status"] == nil {
			t.Errorf("info has no e2ee.status for the E2EE sensor: %v", info)
		}
	})
	t.Run("flush button", func(t *testing.T) {
		btn := cmps["flush_outbox"].(map[string]any)
		h.rec.publish(btn["cmd_t"].(string), 1, btn["pl_prs"].(string))
		h.ok(h.response("outbox_flush", "ha_flush"))
	})
	t.Run("notify entity", func(t *testing.T) {
		// What Home Assistant publishes for notify.send_message: the command template applied
		// to the message, here a text starting with "{".
		n := cmps["notify_alice"].(map[string]any)
		payload, _ := json.Marshal(map[string]string{"text": "{washer} done"})
		h.rec.publish(n["cmd_t"].(string), 1, string(payload))
		resp := h.rec.wait(30*time.Second, "notify response", func(m message) bool {
			return m.Topic == h.base+"/bridge/response/send"
		}).json(t)
		if data := h.ok(resp); data["event_id"] == nil {
			t.Fatalf("no event_id in %v", resp)
		}
	})
}

func TestHABirthReannounce(t *testing.T) {
	h := newHarness(t, nil)
	h.waitConfig("device config", func(map[string]any) bool { return true })
	count := func() int { return len(h.rec.all(h.discoveryTopic())) }
	before := count()

	h.rec.publish(h.base+"/homeassistant/status", 0, "offline")
	time.Sleep(time.Second)
	if count() != before {
		t.Fatalf("config published again after Home Assistant went offline")
	}
	h.rec.publish(h.base+"/homeassistant/status", 0, "online")
	eventually(t, 10*time.Second, func() error {
		if count() <= before {
			return fmt.Errorf("no new config after the birth message")
		}
		return nil
	})
	msgs := h.rec.all(h.discoveryTopic())
	last := msgs[len(msgs)-1]
	if err := havalidate.Validate(h.haPrefix(), last.Topic, last.Payload); err != nil {
		t.Fatal(err)
	}
}

func TestHARemoval(t *testing.T) {
	h := newHarness(t, map[string]string{
		"COMMAND_SENDERS": "@someone:example.org", "COMMAND_ROOMS": "!kitchen:" + env.ServerName, "COMMANDS": "lights",
	})
	h.env["TARGETS"] += ",kitchen=!kitchen:" + env.ServerName
	h.restart(nil)
	h.waitConfig("config with kitchen", func(c map[string]any) bool { return has(c, "notify_kitchen", "room_kitchen", "command_lights") })

	t.Run("target and command removed", func(t *testing.T) {
		h.restart(map[string]string{"TARGETS": "alice=" + h.alice.UserID, "COMMAND_ROOMS": "alice", "COMMANDS": ""})
		// First the removal: the full config with each removed component reduced to its platform.
		removal := h.waitConfig("removal", func(c map[string]any) bool { return has(c, "notify_kitchen") })
		for id, platform := range map[string]string{"notify_kitchen": "notify", "room_kitchen": "event", "command_lights": "device_automation"} {
			got, _ := json.Marshal(removal[id])
			if want := `{"p":"` + platform + `"}`; string(got) != want {
				t.Errorf("removal of %s = %s, want %s", id, got, want)
			}
		}
		if !has(removal, "notify_alice", "connectivity") {
			t.Error("the removal does not carry the components that stay")
		}
		// Then the config without them, which stays retained.
		h.waitConfig("config without kitchen", func(c map[string]any) bool { return !has(c, "notify_kitchen") })
		late := newRecorder(t, h.base)
		m := late.wait(10*time.Second, "retained config", func(m message) bool { return m.Topic == h.discoveryTopic() })
		if strings.Contains(string(m.Payload), "kitchen") || strings.Contains(string(m.Payload), "command_lights") {
			t.Fatalf("retained config still has removed components: %s", m.Payload)
		}
	})
	t.Run("unchanged config removes nothing", func(t *testing.T) {
		h.restart(nil)
		h.waitConfig("config", func(map[string]any) bool { return true })
		for _, m := range h.rec.all(h.discoveryTopic()) {
			if strings.Contains(string(m.Payload), "kitchen") {
				t.Fatalf("removal published again: %s", m.Payload)
			}
		}
	})
	t.Run("discovery turned off", func(t *testing.T) {
		h.restart(map[string]string{"HA_DISCOVERY": "false"})
		h.rec.wait(10*time.Second, "empty retained config", func(m message) bool {
			return m.Topic == h.discoveryTopic() && len(m.Payload) == 0
		})
		late := newRecorder(t, h.base)
		late.wait(10*time.Second, "retained state", func(m message) bool { return m.Topic == h.base+"/bridge/state" && m.Retained })
		time.Sleep(300 * time.Millisecond)
		if got := late.all(h.discoveryTopic()); len(got) > 0 {
			t.Fatalf("a config is still retained: %s", got[0].Payload)
		}
	})
}

// commandHarness runs a bridge whose commands are read in the room "kitchen", from alice only,
// with bob as another member of that room.
func commandHarness(t *testing.T, extra map[string]string) (h *harness, kitchen id.RoomID, bob *user) {
	t.Helper()
	h = newHarness(t, nil)
	bob = newUser(t, "bob")
	kitchen = h.sharedRoom(&mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.id()}})
	bob.join(t, kitchen)
	changes := map[string]string{
		"TARGETS":         "alice=" + h.alice.UserID + ",kitchen=" + kitchen.String(),
		"COMMAND_SENDERS": h.alice.UserID,
		"COMMAND_ROOMS":   "kitchen",
		"COMMANDS":        "lights",
	}
	for k, v := range extra {
		changes[k] = v
	}
	h.restart(changes)
	return h, kitchen, bob
}

// reactions returns the keys of the bot's reactions to an event.
func (h *harness) reactions(t *testing.T, room id.RoomID, evt id.EventID) []string {
	t.Helper()
	rels, err := h.alice.cli.GetRelations(context.Background(), room, evt, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range rels.Chunk {
		if r.Sender != h.bot.id() {
			continue
		}
		_ = r.Content.ParseRaw(r.Type)
		keys = append(keys, r.Content.AsReaction().RelatesTo.Key)
	}
	return keys
}

// waitReaction waits until the bot reacted to evt with key.
func (h *harness) waitReaction(t *testing.T, room id.RoomID, evt id.EventID, key string) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		if got := h.reactions(t, room, evt); !slices.Contains(got, key) {
			return fmt.Errorf("bot reactions to %s: %v, want %s", evt, got, key)
		}
		return nil
	})
}

func text(body string) *event.MessageEventContent {
	return &event.MessageEventContent{MsgType: event.MsgText, Body: body}
}

// publishedFor returns the messages on topic about event evt.
func (h *harness) publishedFor(topic string, evt id.EventID) []message {
	var out []message
	for _, m := range h.rec.all(topic) {
		if strings.Contains(string(m.Payload), `"event_id":"`+evt.String()+`"`) {
			out = append(out, m)
		}
	}
	return out
}

func TestHACommandsAndEvents(t *testing.T) {
	h, kitchen, bob := commandHarness(t, nil)
	commandTopic := h.base + "/room/kitchen/command"
	eventTopic := h.base + "/room/kitchen/event"
	onEvent := func(topic string, evt id.EventID) func(m message) bool {
		return func(m message) bool {
			return m.Topic == topic && strings.Contains(string(m.Payload), `"event_id":"`+evt.String()+`"`)
		}
	}

	t.Run("accepted", func(t *testing.T) {
		evt := h.alice.send(t, kitchen, text("!Lights off now"))
		cmd := h.rec.wait(20*time.Second, "command", onEvent(commandTopic, evt)).json(t)
		want := map[string]any{
			"command": "lights", "args": []any{"off", "now"}, "raw": "!Lights off now", "sender": h.alice.UserID,
			"room_id": kitchen.String(), "event_id": evt.String(), "sender_verified": false,
		}
		for k, v := range want {
			if got, _ := json.Marshal(cmd[k]); string(got) != mustJSON(v) {
				t.Errorf("command.%s = %s, want %s", k, got, mustJSON(v))
			}
		}
		if ts, _ := cmd["ts"].(float64); ts <= 0 || cmd["sender_name"] == "" {
			t.Errorf("command = %v", cmd)
		}
		h.rec.wait(10*time.Second, "device trigger topic", onEvent(h.base+"/command/lights", evt))
		ev := h.rec.wait(10*time.Second, "event entity", onEvent(eventTopic, evt)).json(t)
		if ev["event_type"] != "command" || ev["command"] != "lights" {
			t.Errorf("event = %v", ev)
		}
		h.rec.wait(10*time.Second, "message", onEvent(h.base+"/room/kitchen/message", evt))
		h.waitReaction(t, kitchen, evt, "✅")
		if got := h.publishedFor(eventTopic, evt); len(got) != 1 {
			t.Errorf("event entity got %d events for one command, want 1", len(got))
		}
	})
	t.Run("other sender refused", func(t *testing.T) {
		evt := bob.send(t, kitchen, text("!lights on"))
		h.rec.wait(20*time.Second, "message", onEvent(h.base+"/room/kitchen/message", evt))
		h.waitReaction(t, kitchen, evt, "⛔")
		if got := h.publishedFor(commandTopic, evt); len(got) > 0 {
			t.Fatalf("refused command published: %s", got[0].Payload)
		}
		if got := h.publishedFor(h.base+"/command/lights", evt); len(got) > 0 {
			t.Fatalf("refused command fired the trigger: %s", got[0].Payload)
		}
		ev := h.rec.wait(10*time.Second, "event entity", onEvent(eventTopic, evt)).json(t)
		if ev["event_type"] != "message" {
			t.Errorf("refused command on the event entity as %v, want message", ev["event_type"])
		}
	})
	t.Run("other room ignored", func(t *testing.T) {
		other := h.sharedRoom(nil)
		evt := h.alice.send(t, other, text("!lights on"))
		h.rec.wait(20*time.Second, "message", onEvent(h.base+"/room/"+other.String()+"/message", evt))
		// Reactions are queued after the publishes of their batch: a later command's ✅ comes
		// after any reaction to this one.
		marker := h.alice.send(t, kitchen, text("!lights marker"))
		h.waitReaction(t, kitchen, marker, "✅")
		if got := h.reactions(t, other, evt); len(got) > 0 {
			t.Fatalf("bot reacted %v outside the command rooms", got)
		}
		if got := h.publishedFor(h.base+"/command/lights", evt); len(got) > 0 {
			t.Fatalf("command from another room published: %s", got[0].Payload)
		}
		h.rec.mu.Lock()
		defer h.rec.mu.Unlock()
		for _, m := range h.rec.msgs {
			// Messages and membership changes are published for every room; the rest
			// (event entity feed, commands) only for friendly names and command rooms.
			if strings.HasPrefix(m.Topic, h.base+"/room/"+other.String()+"/") && !strings.HasSuffix(m.Topic, "/message") &&
				!strings.HasSuffix(m.Topic, "/membership") {
				t.Fatalf("published on %s for a room without a friendly name", m.Topic)
			}
		}
	})
	t.Run("notices and edits are not commands", func(t *testing.T) {
		notice := h.alice.send(t, kitchen, &event.MessageEventContent{MsgType: event.MsgNotice, Body: "!lights on"})
		edit := h.alice.send(t, kitchen, &event.MessageEventContent{MsgType: event.MsgText, Body: "* !lights on",
			NewContent: text("!lights on"), RelatesTo: (&event.RelatesTo{}).SetReplace(notice)})
		marker := h.alice.send(t, kitchen, text("!lights marker2"))
		h.waitReaction(t, kitchen, marker, "✅")
		for _, evt := range []id.EventID{notice, edit} {
			if got := h.publishedFor(commandTopic, evt); len(got) > 0 {
				t.Errorf("published as a command: %s", got[0].Payload)
			}
			if got := h.reactions(t, kitchen, evt); len(got) > 0 {
				t.Errorf("bot reacted %v to a non-command", got)
			}
		}
	})
	t.Run("message and reaction events", func(t *testing.T) {
		msg := h.alice.send(t, kitchen, text("dinner is ready"))
		ev := h.rec.wait(20*time.Second, "message event", onEvent(eventTopic, msg)).json(t)
		if ev["event_type"] != "message" || ev["body"] != "dinner is ready" || ev["sender"] != h.alice.UserID || ev["room_id"] != kitchen.String() {
			t.Errorf("message event = %v", ev)
		}
		reaction := h.alice.send(t, kitchen, &event.ReactionEventContent{RelatesTo: *(&event.RelatesTo{}).SetAnnotation(msg, "👍")})
		ev = h.rec.wait(20*time.Second, "reaction event", onEvent(eventTopic, reaction)).json(t)
		if ev["event_type"] != "reaction" || ev["key"] != "👍" || ev["relates_to"] != msg.String() {
			t.Errorf("reaction event = %v", ev)
		}
	})
}

func TestHACommandsVerifiedOnly(t *testing.T) {
	h, kitchen, _ := commandHarness(t, map[string]string{"COMMAND_VERIFIED_ONLY": "true"})
	evt := h.alice.send(t, kitchen, text("!lights off"))
	h.rec.wait(20*time.Second, "message", func(m message) bool {
		return m.Topic == h.base+"/room/kitchen/message" && strings.Contains(string(m.Payload), evt.String())
	})
	h.waitReaction(t, kitchen, evt, "⛔")
	if got := h.publishedFor(h.base+"/room/kitchen/command", evt); len(got) > 0 {
		t.Fatalf("command from an unverified device published: %s", got[0].Payload)
	}
}

func TestHACommandsWithoutReactions(t *testing.T) {
	h, kitchen, _ := commandHarness(t, map[string]string{"COMMAND_REACT": "false"})
	evt := h.alice.send(t, kitchen, text("!lights off"))
	h.rec.wait(20*time.Second, "command", func(m message) bool {
		return m.Topic == h.base+"/room/kitchen/command" && strings.Contains(string(m.Payload), evt.String())
	})
	time.Sleep(time.Second)
	if got := h.reactions(t, kitchen, evt); len(got) > 0 {
		t.Fatalf("bot reacted %v with COMMAND_REACT=false", got)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
