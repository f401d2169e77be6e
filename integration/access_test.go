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
// not_allowed, for every field that names a room or a user (mentions and pills included), and
// nothing reaches Matrix; targets in the list work.
func TestAllowedTargets(t *testing.T) {
	kitchen := fmt.Sprintf("kitchen%d", time.Now().UnixNano())
	outside := fmt.Sprintf("#outside%d:localhost", time.Now().UnixNano()) // not in the list
	h := newHarness(t, map[string]string{
		"E2EE":            "false",
		"TARGETS":         "kitchen=#" + kitchen + ":localhost",
		"ALLOWED_TARGETS": "kitchen",
		"GROUPS":          "announce=kitchen," + outside,
		"BROADCAST_ALL":   "true",
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
		{"broadcast", map[string]any{"to": "announce", "text": "a group with a member outside the list"}},
		{"send_media", map[string]any{"to": room, "data": "aGVsbG8=", "filename": "hello.txt"}},
		{"send_poll", map[string]any{"to": room, "question": "must not arrive", "answers": []string{"a", "b"}}},
		{"end_poll", map[string]any{"to": room, "event_id": evt}},
		{"clear_tag", map[string]any{"to": room, "tag": "status"}},
		{"send", map[string]any{"to": "kitchen", "text": "who may answer", "options": []map[string]string{{"key": "👍", "label": "Yes"}}, "options_from": []string{user}}},
		{"create_room", map[string]any{"name": "must not exist", "moderators": []string{user}}},
		{"create_room", map[string]any{"name": "must not exist", "power_levels": map[string]any{"users": map[string]int{user: 50}}}},
		{"send", map[string]any{"to": "kitchen", "text": "must not notify", "mentions": []string{user}}},
		{"send", map[string]any{"to": "kitchen", "markdown": "must not notify [Alice](https://matrix.to/#/" + user + ")"}},
		{"send_media", map[string]any{"to": "kitchen", "data": "aGVsbG8=", "caption_html": `<a href="https://matrix.to/#/` + user + `">Alice</a>`}},
		{"broadcast", map[string]any{"to": []string{"kitchen"}, "text": "must not notify", "mentions": []string{user}}},
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
		h.ok(h.request("send", map[string]any{"to": "kitchen", "text": "everyone", "mentions": []string{"@room"}}))
	})
	t.Run("every room of * goes through the list", func(t *testing.T) {
		data := h.ok(h.request("broadcast", map[string]any{"to": "*", "text": "to every allowed room"}))
		results, _ := data["results"].([]any)
		var sent, refused int
		for _, r := range results {
			res := r.(map[string]any)
			switch {
			case res["room_id"] == allowed.String() && res["event_id"] != nil:
				sent++
			case res["error"] != nil && res["error"].(map[string]any)["code"] == "not_allowed":
				refused++
			default:
				t.Fatalf("result %v", res)
			}
		}
		if sent != 1 || refused < 1 {
			t.Fatalf("results %v: want the kitchen sent and the other rooms refused", results)
		}
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
