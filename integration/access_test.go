package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestAllowedTargets: with ALLOWED_TARGETS set, a request to a target outside the list gets
// not_allowed, for every field that names a room or a user, and nothing reaches Matrix; targets
// in the list work.
func TestAllowedTargets(t *testing.T) {
	kitchen := fmt.Sprintf("kitchen%d", time.Now().UnixNano())
	h := newHarness(t, map[string]string{
		"E2EE":            "false",
		"TARGETS":         "kitchen=#" + kitchen + ":localhost",
		"ALLOWED_TARGETS": "kitchen",
	})
	allowed := h.sharedRoom(&mautrix.ReqCreateRoom{Preset: "private_chat", RoomAliasName: kitchen})
	forbidden := h.sharedRoom(nil)
	ev := h.alice.send(t, forbidden, &event.MessageEventContent{MsgType: event.MsgText, Body: "in the forbidden room"})
	room, user, evt := forbidden.String(), h.alice.UserID, ev.String()

	tests := []struct {
		action string
		fields map[string]any
	}{
		{"send", map[string]any{"to": room, "text": "must not arrive"}},
		{"send", map[string]any{"to": user, "text": "must not arrive"}},
		{"send_location", map[string]any{"to": room, "lat": 1.5, "lon": 2.5}},
		{"react", map[string]any{"to": room, "event_id": evt, "key": "👍"}},
		{"redact", map[string]any{"to": room, "event_id": evt}},
		{"typing", map[string]any{"to": room}},
		{"read_receipt", map[string]any{"to": room, "event_id": evt}},
		{"resolve", map[string]any{"to": room}},
		{"get_event", map[string]any{"to": room, "event_id": evt}},
		{"join", map[string]any{"room": room}},
		{"leave", map[string]any{"room": room}},
		{"ensure_encrypted", map[string]any{"room": room}},
		{"ensure_dm", map[string]any{"user": user}},
		{"invite", map[string]any{"room": room, "user": user}},
		{"kick", map[string]any{"room": "kitchen", "user": user}},
		{"ban", map[string]any{"room": room, "user": user}},
		{"unban", map[string]any{"room": room, "user": user}},
		{"set_power_level", map[string]any{"room": room, "user": user, "role": "user"}},
		{"set_room", map[string]any{"room": room, "name": "must not change"}},
		{"members", map[string]any{"room": room}},
		{"create_room", map[string]any{"invite": []string{user}}},
		{"broadcast", map[string]any{"to": []string{"kitchen", room}, "text": "must not arrive"}},
	}
	for _, tc := range tests {
		t.Run(tc.action+" "+strings.Join(keys(tc.fields), ","), func(t *testing.T) {
			msg := h.fail(h.request(tc.action, tc.fields), "not_allowed")
			if !strings.Contains(msg, "ALLOWED_TARGETS") {
				t.Fatalf("message %q does not name ALLOWED_TARGETS", msg)
			}
		})
	}
	t.Run("shortcut topic", func(t *testing.T) {
		h.rec.publish(h.base+"/send/"+room, 1, `{"id":"short-forbidden","text":"must not arrive"}`)
		h.fail(h.response("send", "short-forbidden"), "not_allowed")
	})
	t.Run("allowed target works", func(t *testing.T) {
		data := h.ok(h.request("send", map[string]any{"to": "kitchen", "text": "allowed"}))
		if data["room_id"] != allowed.String() {
			t.Fatalf("sent to %v, want %s", data["room_id"], allowed)
		}
		h.ok(h.request("typing", map[string]any{"to": "#" + kitchen + ":localhost", "typing": false}))
	})
	t.Run("nothing reached the forbidden room", func(t *testing.T) {
		msgs, err := h.alice.cli.Messages(context.Background(), forbidden, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range msgs.Chunk {
			if e.Sender == h.bot.id() && e.Type != event.StateMember {
				t.Fatalf("the bot sent %s into the forbidden room", e.Type.Type)
			}
		}
		members, err := h.alice.cli.JoinedMembers(context.Background(), forbidden)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := members.Joined[id.UserID(h.bot.UserID)]; !ok {
			t.Fatal("the bot left the forbidden room")
		}
	})
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
