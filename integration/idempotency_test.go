package integration

import (
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// TestRequestIDIsAnIdempotencyKey: a send published again with the same id (an automation that
// retries, a broker that hands it over again) is not sent again, before and after a restart of
// the bridge: each repeat is answered with the first's event; another id runs.
func TestRequestIDIsAnIdempotencyKey(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	payload := `{"id":"once","to":"` + room.String() + `","text":"` + burstBody("idem", 0, 1) + `"}`
	h.rec.publish(h.base+"/bridge/request/send", 1, payload)
	first := h.ok(h.response("send", "once"))["event_id"]
	h.rec.publish(h.base+"/bridge/request/send", 1, payload)
	answers := waitAnswers(t, h, "once", 2)

	h.stop()
	h.start()
	h.rec.publish(h.base+"/bridge/request/send", 1, payload)
	answers = append(answers, waitAnswers(t, h, "once", 1)...)
	for _, resp := range answers {
		if h.ok(resp)["event_id"] != first {
			t.Fatalf("a repeat was answered with another event: %v, first %v", resp, first)
		}
	}
	h.rec.publish(h.base+"/bridge/request/send", 1, `{"id":"other","to":"`+room.String()+`","text":"`+burstBody("idem", 0, 2)+`"}`)
	h.ok(h.response("send", "other"))
	time.Sleep(time.Second) // a copy sent by mistake is in the room by now
	got := delivered(t, h.alice, []id.RoomID{room}, "idem")[0]
	if len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("messages in the room: %v, want [1 2]", got)
	}
}

// waitAnswers waits until the recorder holds n responses to send requests with reqID and
// returns them.
func waitAnswers(t *testing.T, h *harness, reqID string, n int) []map[string]any {
	t.Helper()
	var found []map[string]any
	eventually(t, 20*time.Second, func() error {
		found = nil
		for _, m := range h.rec.all(h.base + "/bridge/response/send") {
			if resp := m.json(t); resp["id"] == reqID {
				found = append(found, resp)
			}
		}
		if len(found) < n {
			return fmt.Errorf("%d of %d answers to %s", len(found), n, reqID)
		}
		return nil
	})
	return found
}

// TestRoomOperationRunsOncePerID: create_room published twice with one id (and once more after
// a restart) creates one room; each repeat is answered with the first's room. Requests with
// ids of their own each run.
func TestRoomOperationRunsOncePerID(t *testing.T) {
	h := newHarness(t, map[string]string{"E2EE": "false"})
	name := fmt.Sprintf("Once %d", time.Now().UnixNano())
	payload := `{"id":"room-once","name":"` + name + `","invite":["` + h.alice.UserID + `"]}`
	h.rec.publish(h.base+"/bridge/request/create_room", 1, payload)
	first := h.ok(h.response("create_room", "room-once"))["room_id"]
	h.rec.publish(h.base+"/bridge/request/create_room", 1, payload)
	h.stop()
	h.start()
	h.rec.publish(h.base+"/bridge/request/create_room", 1, payload)
	eventually(t, 20*time.Second, func() error {
		var rooms []any
		for _, m := range h.rec.all(h.base + "/bridge/response/create_room") {
			if resp := m.json(t); resp["id"] == "room-once" {
				rooms = append(rooms, h.ok(resp)["room_id"])
			}
		}
		if len(rooms) < 3 {
			return fmt.Errorf("%d of 3 answers", len(rooms))
		}
		for _, r := range rooms {
			if r != first {
				t.Fatalf("a repeat was answered with another room: %v, first %v", rooms, first)
			}
		}
		return nil
	})
	invited := 0
	eventually(t, 20*time.Second, func() error {
		invited = 0
		resp, err := h.alice.cli.SyncRequest(t.Context(), 0, "", "", true, "")
		if err != nil {
			return err
		}
		for _, room := range resp.Rooms.Invite {
			for _, ev := range room.State.Events {
				if ev.Type.Type == "m.room.name" && ev.Content.Raw["name"] == name {
					invited++
				}
			}
		}
		if invited == 0 {
			return fmt.Errorf("alice has no invite to %s yet", name)
		}
		return nil
	})
	if invited != 1 {
		t.Fatalf("alice was invited to %d rooms named %q, want 1", invited, name)
	}
	a := h.ok(h.request("create_room", map[string]any{"name": name + " without id"}))["room_id"]
	b := h.ok(h.request("create_room", map[string]any{"name": name + " without id"}))["room_id"]
	if a == b {
		t.Fatalf("two create_room requests with their own ids made one room %v", a)
	}
}
