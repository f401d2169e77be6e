package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/internal/jsclient"
)

// react has u react to evtID with key.
func (u *user) react(t *testing.T, room id.RoomID, evtID id.EventID, key string) id.EventID {
	t.Helper()
	return u.send(t, room, &event.ReactionEventContent{RelatesTo: *(&event.RelatesTo{}).SetAnnotation(evtID, key)})
}

// relations returns the events of sender that relate to evtID, as u sees the room's timeline.
func (u *user) relations(t *testing.T, room id.RoomID, evtID id.EventID, sender id.UserID) []*event.Event {
	t.Helper()
	resp, err := u.cli.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatalf("failed to read the timeline: %v", err)
	}
	var out []*event.Event
	for _, evt := range resp.Chunk {
		_ = evt.Content.ParseRaw(evt.Type)
		rel, _ := evt.Content.Raw["m.relates_to"].(map[string]any)
		if evt.Sender == sender && rel != nil && rel["event_id"] == evtID.String() {
			out = append(out, evt)
		}
	}
	return out
}

// callbacks returns the callbacks recorded for the message evtID.
func (h *harness) callbacks(room id.RoomID, evtID id.EventID) []map[string]any {
	var out []map[string]any
	for _, m := range h.rec.all(h.base + "/room/" + room.String() + "/callback") {
		v := m.json(h.t)
		if v["event_id"] == evtID.String() {
			out = append(out, v)
		}
	}
	return out
}

// waitPublishedReaction waits until the reaction evtID was published as a plain reaction: everything the
// bridge publishes for it (a callback or none) was published by then.
func (h *harness) waitPublishedReaction(room id.RoomID, evtID id.EventID) {
	h.t.Helper()
	h.rec.wait(20*time.Second, "reaction "+evtID.String(), func(m message) bool {
		return m.Topic == h.base+"/room/"+room.String()+"/reaction" && strings.Contains(string(m.Payload), evtID.String())
	})
}

// TestActionableOptions: a message with options lists them and carries the bot's reaction per
// key; an allowed user's reaction with a key is a callback, a stranger's or another key is a
// mere reaction; a single_use message takes its first answer only, loses the bot's reactions and
// says who answered.
func TestActionableOptions(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	bob := newUser(t, "bob")
	if _, err := h.alice.cli.InviteUser(context.Background(), room, &mautrix.ReqInviteUser{UserID: bob.id()}); err != nil {
		t.Fatal(err)
	}
	bob.join(t, room)

	data := h.ok(h.request("send", map[string]any{"to": room.String(), "text": "Garage open — close it?",
		"options":      []map[string]any{{"key": "👍", "label": "Close it"}, {"key": "👎", "label": "Leave it"}},
		"options_from": []string{"alice"}}))
	msgID := id.EventID(data["event_id"].(string))
	msg := h.alice.event(t, room, msgID)
	if body := msg.Content.AsMessage().Body; !strings.HasSuffix(body, "\n👍 Close it\n👎 Leave it") {
		t.Fatalf("the options are not listed: %q", body)
	}
	eventually(t, 10*time.Second, func() error {
		keys := map[string]bool{}
		for _, evt := range h.alice.relations(t, room, msgID, h.bot.id()) {
			if evt.Type == event.EventReaction {
				keys[evt.Content.AsReaction().RelatesTo.Key] = true
			}
		}
		if len(keys) != 2 || !keys["👍"] || !keys["👎"] {
			return fmt.Errorf("the bot reacted with %v", keys)
		}
		return nil
	})

	stranger := bob.react(t, room, msgID, "👎")
	otherKey := h.alice.react(t, room, msgID, "🎉")
	answer := h.alice.react(t, room, msgID, "👍")
	h.waitPublishedReaction(room, stranger)
	h.waitPublishedReaction(room, otherKey)
	cb := h.rec.wait(20*time.Second, "callback", func(m message) bool {
		return m.Topic == h.base+"/room/"+room.String()+"/callback" && strings.Contains(string(m.Payload), answer.String())
	}).json(t)
	if cb["option"] != "👍" || cb["label"] != "Close it" || cb["sender"] != h.alice.UserID || cb["event_id"] != msgID.String() ||
		!strings.HasPrefix(cb["request_id"].(string), "req-") || cb["room_id"] != room.String() {
		t.Fatalf("callback %v", cb)
	}
	if got := h.callbacks(room, msgID); len(got) != 1 {
		t.Fatalf("want one callback (none from the stranger or for another key), got %v", got)
	}

	// single_use, anyone in the room: bob answers first, alice's later answer does not count.
	data = h.ok(h.request("send", map[string]any{"to": room.String(), "markdown": "Door **open**", "msgtype": "m.notice",
		"options": []map[string]any{{"key": "🔒", "label": "Lock"}, {"key": "🚪", "label": "Leave"}}, "single_use": true}))
	onceID := id.EventID(data["event_id"].(string))
	first := bob.react(t, room, onceID, "🔒")
	h.rec.wait(20*time.Second, "single_use callback", func(m message) bool {
		return m.Topic == h.base+"/room/"+room.String()+"/callback" && strings.Contains(string(m.Payload), first.String())
	})
	late := h.alice.react(t, room, onceID, "🚪")
	h.waitPublishedReaction(room, late)
	if got := h.callbacks(room, onceID); len(got) != 1 || got[0]["sender"] != bob.UserID {
		t.Fatalf("want only bob's callback, got %v", got)
	}
	eventually(t, 20*time.Second, func() error {
		var edited string
		var msgtype event.MessageType
		for _, evt := range h.alice.relations(t, room, onceID, h.bot.id()) {
			switch {
			case evt.Type == event.EventReaction:
				return fmt.Errorf("the bot's reaction %s is not redacted", evt.ID)
			case evt.Type == event.EventMessage && evt.Content.AsMessage().NewContent != nil:
				edited, msgtype = evt.Content.AsMessage().NewContent.Body, evt.Content.AsMessage().NewContent.MsgType
			}
		}
		if !strings.HasPrefix(edited, "Door **open**") || !strings.Contains(edited, "\n\n✅ Closed by ") || !strings.HasSuffix(edited, ": 🔒 Lock") {
			return fmt.Errorf("not edited to say who answered: %q", edited)
		}
		if msgtype != event.MsgNotice {
			return fmt.Errorf("the closing edit is a %s, not the message's m.notice", msgtype)
		}
		return nil
	})
}

// TestActionableMediaOptions: send_media takes options as send does: a file without a caption
// lists them as its caption, the bot reacts with each key, alice's answer is a callback with
// the request's id, and the closing edit of the single_use file keeps the file.
func TestActionableMediaOptions(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	data := h.ok(h.request("send_media", map[string]any{"to": room.String(), "data": base64.StdEncoding.EncodeToString([]byte("%PDF-1.4 a report")),
		"filename": "report.pdf", "single_use": true,
		"options": []map[string]any{{"key": "👍", "label": "Approve"}, {"key": "👎", "label": "Reject"}}}))
	msgID := id.EventID(data["event_id"].(string))
	msg := h.alice.event(t, room, msgID).Content.AsMessage()
	if msg.MsgType != event.MsgFile || msg.FileName != "report.pdf" || msg.URL == "" || msg.Body != "👍 Approve\n👎 Reject" ||
		!strings.Contains(msg.FormattedBody, "<li>👎 Reject</li>") {
		t.Fatalf("the file as alice sees it: %+v", msg)
	}
	eventually(t, 10*time.Second, func() error {
		if n := len(h.alice.relations(t, room, msgID, h.bot.id())); n != 2 {
			return fmt.Errorf("the bot reacted %d times, want once per key", n)
		}
		return nil
	})
	answer := h.alice.react(t, room, msgID, "👍")
	cb := h.rec.wait(20*time.Second, "callback", func(m message) bool {
		return m.Topic == h.base+"/room/"+room.String()+"/callback" && strings.Contains(string(m.Payload), answer.String())
	}).json(t)
	if cb["option"] != "👍" || cb["label"] != "Approve" || cb["event_id"] != msgID.String() || !strings.HasPrefix(cb["request_id"].(string), "req-") {
		t.Fatalf("callback %v", cb)
	}
	eventually(t, 20*time.Second, func() error {
		for _, evt := range h.alice.relations(t, room, msgID, h.bot.id()) {
			if nc := evt.Content.AsMessage().NewContent; evt.Type == event.EventMessage && nc != nil {
				if nc.MsgType != event.MsgFile || nc.URL != msg.URL || nc.FileName != "report.pdf" || !strings.HasPrefix(nc.Body, "✅ Closed by ") {
					return fmt.Errorf("the closing edit lost the file: %+v", nc)
				}
				return nil
			}
		}
		return fmt.Errorf("not edited yet")
	})
}

// TestActionableBadInput: bad options get clear errors through MQTT, and the bridge goes on.
func TestActionableBadInput(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	for _, tc := range []struct {
		name    string
		options any
		mention string
	}{
		{"not an emoji", []map[string]any{{"key": "yes", "label": "Yes"}}, "single emoji"},
		{"repeated", []map[string]any{{"key": "👍", "label": "Yes"}, {"key": "👍", "label": "Sure"}}, "repeats"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := h.fail(h.request("send", map[string]any{"to": room.String(), "text": "?", "options": tc.options}), "invalid_request")
			if !strings.Contains(msg, tc.mention) {
				t.Fatalf("message %q does not say %q", msg, tc.mention)
			}
		})
	}
	h.ok(h.request("send", map[string]any{"to": room.String(), "text": "still here"}))
}

// TestActionableLiveStatus: a tagged status sent four times (with a bridge restart before the
// last) is one message on the other side with three edits, the last holding the latest text;
// "edit": "last" edits the last new message; clear_tag redacts the tagged message; priorities
// become m.notice and m.mentions as configured.
func TestActionableLiveStatus(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	bob := newUser(t, "bob")
	if _, err := h.alice.cli.InviteUser(context.Background(), room, &mautrix.ReqInviteUser{UserID: bob.id()}); err != nil {
		t.Fatal(err)
	}
	bob.join(t, room)
	send := func(fields map[string]any) map[string]any {
		t.Helper()
		fields["to"] = room.String()
		return h.ok(h.request("send", fields))
	}

	first := send(map[string]any{"text": "Washer: 40 min", "tag": "washer"})
	if first["edit_of"] != nil {
		t.Fatalf("the first send with a tag edited %v", first["edit_of"])
	}
	orig := id.EventID(first["event_id"].(string))
	for _, text := range []string{"Washer: 20 min", "Washer: 5 min"} {
		if got := send(map[string]any{"text": text, "tag": "washer"}); got["edit_of"] != orig.String() {
			t.Fatalf("send %q: edit_of %v, want %s", text, got["edit_of"], orig)
		}
	}
	h.stop()
	h.start()
	if got := send(map[string]any{"text": "Washer: done", "tag": "washer"}); got["edit_of"] != orig.String() {
		t.Fatalf("after a restart: edit_of %v, want %s", got["edit_of"], orig)
	}
	edits := h.alice.relations(t, room, orig, h.bot.id())
	if len(edits) != 3 || edits[0].Content.AsMessage().NewContent.Body != "Washer: done" ||
		edits[0].Content.AsMessage().RelatesTo.GetReplaceID() != orig {
		t.Fatalf("want three m.replace edits of %s, the latest \"Washer: done\"; got %d", orig, len(edits))
	}

	other := id.EventID(send(map[string]any{"text": "Dryer started"})["event_id"].(string))
	if got := send(map[string]any{"text": "Dryer: 30 min", "edit": "last"}); got["edit_of"] != other.String() {
		t.Fatalf("edit last: edit_of %v, want %s", got["edit_of"], other)
	}

	cleared := h.ok(h.request("clear_tag", map[string]any{"to": room.String(), "tag": "washer"}))
	if cleared["redacted"] != orig.String() || cleared["cleared"] != true {
		t.Fatalf("clear_tag: %v", cleared)
	}
	// Dendrite applies a redaction a moment after it accepted it.
	eventually(t, 10*time.Second, func() error {
		if evt := h.alice.event(t, room, orig); evt.Unsigned.RedactedBecause == nil && len(evt.Content.Raw) > 0 {
			return fmt.Errorf("the tagged message is not redacted: %v", evt.Content.Raw)
		}
		return nil
	})
	if got := send(map[string]any{"text": "Washer: 40 min", "tag": "washer"}); got["edit_of"] != nil {
		t.Fatalf("after clear_tag the tag edited %v", got["edit_of"])
	}

	for _, tc := range []struct {
		priority string
		msgtype  event.MessageType
		users    []id.UserID
		room     bool
	}{
		{"low", event.MsgNotice, nil, false},
		{"high", event.MsgText, []id.UserID{h.alice.id(), bob.id()}, false},
		{"urgent", event.MsgText, nil, true},
	} {
		evtID := id.EventID(send(map[string]any{"text": "priority " + tc.priority, "priority": tc.priority})["event_id"].(string))
		msg := h.alice.event(t, room, evtID).Content.AsMessage()
		var users []id.UserID
		if msg.Mentions != nil {
			users = msg.Mentions.UserIDs
		}
		if msg.MsgType != tc.msgtype || msg.Mentions == nil || msg.Mentions.Room != tc.room || !sameUsers(users, tc.users) {
			t.Errorf("priority %s: msgtype %s, mentions %+v", tc.priority, msg.MsgType, msg.Mentions)
		}
	}

	msg := h.fail(h.request("send", map[string]any{"to": room.String(), "text": "x", "tag": "a/b"}), "invalid_request")
	if !strings.Contains(msg, "'tag'") {
		t.Fatalf("error %q does not name the tag", msg)
	}
}

// sameUsers compares two lists of users regardless of order.
func sameUsers(a, b []id.UserID) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[id.UserID]bool{}
	for _, u := range a {
		seen[u] = true
	}
	for _, u := range b {
		if !seen[u] {
			return false
		}
	}
	return true
}

// TestActionableScheduled: a message scheduled with delay_s goes out on time although the bridge
// restarted in between, and not before; one scheduled with at is cancelled with outbox_cancel
// (its own response says so) and never sent; at in the past is refused.
func TestActionableScheduled(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	stats := func() map[string]any { return h.ok(h.request("outbox_stats", map[string]any{})) }

	sentAt := time.Now()
	h.rec.publish(h.base+"/bridge/request/send", 1, fmt.Sprintf(`{"id":"later","to":%q,"text":"scheduled hello","delay_s":12}`, room))
	h.rec.publish(h.base+"/bridge/request/send", 1, fmt.Sprintf(`{"id":"never","to":%q,"text":"cancelled hello","at":%q}`, room,
		time.Now().Add(time.Hour).Format(time.RFC3339)))
	eventually(t, 10*time.Second, func() error {
		if got := stats()["scheduled_messages"]; got != 2.0 {
			return fmt.Errorf("scheduled_messages = %v", got)
		}
		return nil
	})
	// The bridge received the request between sentAt and now: it is due 12 s after (room for a restart on a busy machine).
	earliest, latest := sentAt.Add(12*time.Second), time.Now().Add(12*time.Second)
	h.stop()
	h.start()
	if got := h.ok(h.request("outbox_cancel", map[string]any{"request_id": "never"})); got["cancelled"] != 1.0 {
		t.Fatalf("outbox_cancel: %v", got)
	}
	// The restarted bridge read its outbox and answered before the message was due, so the
	// message is sent by it.
	if restarted := time.Now(); !restarted.Before(earliest) {
		t.Fatalf("the restart finished %s after the message was due: it proves nothing", restarted.Sub(earliest))
	}
	if msg := h.fail(h.response("send", "never"), "expired"); !strings.Contains(msg, "cancelled") {
		t.Fatalf("the cancelled request's response: %q", msg)
	}
	h.fail(h.request("outbox_cancel", map[string]any{"request_id": "never"}), "invalid_request")

	data := h.ok(h.response("send", "later"))
	arrived := time.Now()
	if arrived.Sub(sentAt) < 12*time.Second {
		t.Fatalf("sent after %s, before its delay_s", arrived.Sub(sentAt))
	}
	evt := h.alice.event(t, room, id.EventID(data["event_id"].(string)))
	if body := evt.Content.AsMessage().Body; body != "scheduled hello" {
		t.Fatalf("body %q", body)
	}
	if ts := time.UnixMilli(evt.Timestamp); ts.Before(earliest) || ts.After(latest.Add(2*time.Second)) {
		t.Fatalf("sent at %s, want within 2 s after it was due (%s to %s)", ts.Format(time.StampMilli),
			earliest.Format(time.StampMilli), latest.Format(time.StampMilli))
	}
	// A request is answered before it leaves the outbox (a crash in between answers it again):
	// the count drops a moment after the answer.
	eventually(t, 5*time.Second, func() error {
		if got := stats()["scheduled_messages"]; got != 0.0 {
			return fmt.Errorf("scheduled_messages = %v after both were answered", got)
		}
		return nil
	})
	timeline, err := h.alice.cli.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	bodies := map[string]int{}
	for _, evt := range timeline.Chunk {
		if evt.Sender == h.bot.id() && evt.Type == event.EventMessage {
			_ = evt.Content.ParseRaw(evt.Type)
			bodies[evt.Content.AsMessage().Body]++
		}
	}
	if bodies["scheduled hello"] != 1 || bodies["cancelled hello"] != 0 {
		t.Fatalf("the bot's messages in the room: %v", bodies)
	}

	msg := h.fail(h.request("send", map[string]any{"to": room.String(), "text": "x", "at": time.Now().Add(-time.Hour).Format(time.RFC3339)}), "invalid_request")
	if !strings.Contains(msg, "in the past") {
		t.Fatalf("error %q", msg)
	}
}

// TestActionableReadReceipts: a user's public read receipt publishes a read for each message of
// the bridge it covers, once per user and message; a later message of a user covers what came
// before it; a private receipt publishes nothing.
func TestActionableReadReceipts(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	bob := newUser(t, "bob")
	if _, err := h.alice.cli.InviteUser(context.Background(), room, &mautrix.ReqInviteUser{UserID: bob.id()}); err != nil {
		t.Fatal(err)
	}
	bob.join(t, room)
	sendOne := func(text string) id.EventID {
		t.Helper()
		return id.EventID(h.ok(h.request("send", map[string]any{"to": room.String(), "text": text}))["event_id"].(string))
	}
	receipt := func(u *user, evtID id.EventID, typ event.ReceiptType) {
		t.Helper()
		if err := u.cli.SendReceipt(context.Background(), room, evtID, typ, nil); err != nil {
			t.Fatal(err)
		}
	}
	topic := h.base + "/room/" + room.String() + "/read"
	reads := func() map[string]int {
		out := map[string]int{}
		for _, m := range h.rec.all(topic) {
			v := m.json(t)
			out[v["user"].(string)+" "+v["event_id"].(string)]++
		}
		return out
	}
	waitRead := func(u *user, evtID id.EventID) map[string]any {
		t.Helper()
		return h.rec.wait(20*time.Second, "read of "+evtID.String()+" by "+u.UserID, func(m message) bool {
			return m.Topic == topic && strings.Contains(string(m.Payload), evtID.String()) && strings.Contains(string(m.Payload), `"user":"`+u.UserID+`"`)
		}).json(t)
	}

	first, second := sendOne("first"), sendOne("second")
	receipt(h.alice, first, event.ReceiptTypeRead)
	r := waitRead(h.alice, first)
	if !strings.HasPrefix(r["request_id"].(string), "req-") || r["room_id"] != room.String() || r["ts"].(float64) <= 0 {
		t.Fatalf("read %v", r)
	}
	receipt(h.alice, second, event.ReceiptTypeRead)
	waitRead(h.alice, second)
	receipt(h.alice, second, event.ReceiptTypeRead)
	bob.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "seen it"})
	waitRead(bob, first)
	waitRead(bob, second)

	third := sendOne("third")
	receipt(h.alice, third, event.ReceiptTypeReadPrivate)
	receipt(bob, third, event.ReceiptTypeRead)
	waitRead(bob, third)
	want := map[string]int{
		h.alice.UserID + " " + first.String(): 1, h.alice.UserID + " " + second.String(): 1,
		bob.UserID + " " + first.String(): 1, bob.UserID + " " + second.String(): 1, bob.UserID + " " + third.String(): 1,
	}
	got := reads()
	if len(got) != len(want) {
		t.Fatalf("reads %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("reads %v, want %v", got, want)
		}
	}

	// A picture, a poll, a location, a picture with options and a broadcast are watched for
	// reads too; "edit": "last" still edits the last text message, not one with options either.
	picture := id.EventID(h.ok(h.request("send_media", map[string]any{"to": room.String(),
		"data": base64.StdEncoding.EncodeToString(testPNG(t, 16, 16)), "filename": "seen.png"}))["event_id"].(string))
	h.ok(h.request("send", map[string]any{"to": room.String(), "text": "choose", "options": []map[string]string{{"key": "👍", "label": "Yes"}}}))
	poll := id.EventID(h.ok(h.request("send_poll", map[string]any{"to": room.String(), "question": "Seen?", "answers": []string{"yes", "no"}}))["event_id"].(string))
	pin := id.EventID(h.ok(h.request("send_location", map[string]any{"to": room.String(), "lat": 52.5, "lon": 13.4}))["event_id"].(string))
	question := id.EventID(h.ok(h.request("send_media", map[string]any{"to": room.String(), "data": base64.StdEncoding.EncodeToString(testPNG(t, 16, 16)),
		"caption": "this one?", "options": []map[string]string{{"key": "👍", "label": "Yes"}}}))["event_id"].(string))
	results := h.ok(h.request("broadcast", map[string]any{"to": []string{room.String()}, "text": "to all"}))["results"].([]any)
	announced := id.EventID(results[0].(map[string]any)["event_id"].(string))
	receipt(h.alice, announced, event.ReceiptTypeRead)
	for _, evtID := range []id.EventID{third, picture, poll, pin, question, announced} {
		if r := waitRead(h.alice, evtID); !strings.HasPrefix(r["request_id"].(string), "req-") {
			t.Fatalf("read of %s: %v", evtID, r)
		}
	}
	if data := h.ok(h.request("send", map[string]any{"to": room.String(), "text": "third, edited", "edit": "last"})); data["edit_of"] != third.String() {
		t.Fatalf(`"edit": "last" after a picture, options, a poll, a location and a broadcast edited %v, want the text %s`, data["edit_of"], third)
	}
}

// waitForMarker has the bot send a message to room and waits until alice's /messages shows it,
// so that what the bot sent before it (or did not) shows too.
func (h *harness) waitForMarker(t *testing.T, room id.RoomID) {
	t.Helper()
	marker := h.ok(h.request("send", map[string]any{"to": room.String(), "text": "marker"}))["event_id"]
	eventually(t, 20*time.Second, func() error {
		resp, err := h.alice.cli.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 20)
		if err != nil {
			return err
		}
		for _, evt := range resp.Chunk {
			if evt.ID.String() == marker {
				return nil
			}
		}
		return fmt.Errorf("the marker %v is not in alice's timeline yet", marker)
	})
}

// vote sends u's poll response.
func (u *user) vote(t *testing.T, room id.RoomID, poll id.EventID, answers ...string) id.EventID {
	t.Helper()
	content := map[string]any{
		"m.relates_to":                     map[string]any{"rel_type": "m.reference", "event_id": poll},
		"org.matrix.msc3381.poll.response": map[string]any{"answers": answers},
	}
	resp, err := u.cli.SendMessageEvent(context.Background(), room, event.EventUnstablePollResponse, content)
	if err != nil {
		t.Fatalf("failed to vote: %v", err)
	}
	return resp.EventID
}

// endPoll sends the end of poll as u, as Element's "End poll" does.
func (u *user) endPoll(t *testing.T, room id.RoomID, poll id.EventID) id.EventID {
	t.Helper()
	content := map[string]any{
		"m.relates_to":                map[string]any{"rel_type": "m.reference", "event_id": poll},
		"org.matrix.msc3381.poll.end": map[string]any{},
		"org.matrix.msc1767.text":     "Ended poll",
	}
	resp, err := u.cli.SendMessageEvent(context.Background(), room, event.EventUnstablePollEnd, content)
	if err != nil {
		t.Fatalf("failed to end the poll: %v", err)
	}
	return resp.EventID
}

// pollTally is a published tally, as the tests read it.
type pollTally struct {
	EventID   string `json:"event_id"`
	RequestID string `json:"request_id"`
	Question  string `json:"question"`
	Answers   []struct {
		ID    string `json:"id"`
		Text  string `json:"text"`
		Votes int    `json:"votes"`
	} `json:"answers"`
	Voters  int      `json:"voters"`
	Spoiled int      `json:"spoiled"`
	Ended   bool     `json:"ended"`
	Winners []string `json:"winners"`
}

// TestActionablePoll: a poll with three voters is tallied as MSC3381 says (a changed vote
// replaces the first, an unknown answer spoils), the tally is published when it changes,
// end_poll returns the final tally, publishes it and sends the end event alice sees, and a vote
// after the end changes nothing. A poll ended in Element by alice, the room's admin, ends with
// her end event; an end from carol, who may not redact others' events, is ignored.
func TestActionablePoll(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	bob, carol := newUser(t, "bob"), newUser(t, "carol")
	for _, u := range []*user{bob, carol} {
		if _, err := h.alice.cli.InviteUser(context.Background(), room, &mautrix.ReqInviteUser{UserID: u.id()}); err != nil {
			t.Fatal(err)
		}
		u.join(t, room)
	}
	data := h.ok(h.request("send_poll", map[string]any{"to": room.String(), "question": "Dinner?", "answers": []string{"Pizza", "Pasta", "Salad"}}))
	poll := id.EventID(data["event_id"].(string))
	start := h.alice.event(t, room, poll)
	ps, _ := start.Content.Parsed.(*event.PollStartEventContent)
	if start.Type != event.EventUnstablePollStart || ps == nil || ps.PollStart.Question.Text != "Dinner?" || len(ps.PollStart.Answers) != 3 {
		t.Fatalf("poll start as alice sees it: %s %s", start.Type.Type, start.Content.VeryRaw)
	}

	topic := h.base + "/room/" + room.String() + "/poll"
	// waitTally waits for a published tally of poll with these votes per answer, voters,
	// spoiled and ended.
	waitTally := func(poll id.EventID, votes [3]int, voters, spoiled int, ended bool) pollTally {
		t.Helper()
		var tally pollTally
		h.rec.wait(20*time.Second, fmt.Sprintf("tally %v ended %v", votes, ended), func(m message) bool {
			if m.Topic != topic {
				return false
			}
			_ = json.Unmarshal(m.Payload, &tally)
			return tally.EventID == poll.String() && len(tally.Answers) == 3 &&
				[3]int{tally.Answers[0].Votes, tally.Answers[1].Votes, tally.Answers[2].Votes} == votes &&
				tally.Voters == voters && tally.Spoiled == spoiled && tally.Ended == ended
		})
		return tally
	}
	// noChange sends a late vote and fails if the tally was published again once the vote was
	// seen.
	noChange := func(voter *user, poll id.EventID, answer string) {
		t.Helper()
		published := len(h.rec.all(topic))
		late := voter.vote(t, room, poll, answer)
		// A message after the late vote: once it is published, the vote was seen too.
		marker := bob.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "after the end"})
		h.rec.wait(20*time.Second, "marker", func(m message) bool { return strings.Contains(string(m.Payload), marker.String()) })
		if got := h.rec.all(topic); len(got) != published {
			t.Fatalf("the vote %s after the end changed the tally: %s", late, got[len(got)-1].Payload)
		}
	}
	h.alice.vote(t, room, poll, "a1")
	bob.vote(t, room, poll, "a2")
	carol.vote(t, room, poll, "a1")
	waitTally(poll, [3]int{2, 1, 0}, 3, 0, false)
	bob.vote(t, room, poll, "a1") // changed vote
	waitTally(poll, [3]int{3, 0, 0}, 3, 0, false)
	carol.vote(t, room, poll, "a9") // unknown answer: spoiled
	waitTally(poll, [3]int{2, 0, 0}, 2, 1, false)

	end := h.ok(h.request("end_poll", map[string]any{"to": room.String(), "event_id": poll.String()}))
	answers := end["answers"].([]any)
	if end["ended"] != true || answers[0].(map[string]any)["votes"] != 2.0 || end["voters"] != 2.0 || end["spoiled"] != 1.0 ||
		fmt.Sprint(end["winners"]) != "[a1]" {
		t.Fatalf("end_poll: %v", end)
	}
	final := waitTally(poll, [3]int{2, 0, 0}, 2, 1, true)
	if final.Question != "Dinner?" || !strings.HasPrefix(final.RequestID, "req-") ||
		final.Answers[0].Text != "Pizza" || final.Answers[2].Text != "Salad" || fmt.Sprint(final.Winners) != "[a1]" {
		t.Fatalf("the published final tally: %+v", final)
	}
	// Ending it again sends nothing and answers the final tally.
	if again := h.ok(h.request("end_poll", map[string]any{"to": room.String(), "event_id": poll.String()})); again["ended"] != true || fmt.Sprint(again["winners"]) != "[a1]" {
		t.Fatalf("end_poll again: %v", again)
	}
	h.waitForMarker(t, room)
	var ends []*event.Event
	for _, evt := range h.alice.relations(t, room, poll, h.bot.id()) {
		if evt.Type == event.EventUnstablePollEnd {
			ends = append(ends, evt)
		}
	}
	if len(ends) != 1 || ends[0].Content.Raw["org.matrix.msc1767.text"] != "The poll has ended. Top answer: Pizza (2 votes)" {
		t.Fatalf("the end events alice sees: %v", ends)
	}
	noChange(h.alice, poll, "a3")

	// Ended in Element: carol's end is ignored (her vote still counts after it), alice's counts.
	lunch := id.EventID(h.ok(h.request("send_poll", map[string]any{"to": room.String(), "question": "Lunch?",
		"answers": []string{"Soup", "Bread", "Cake"}}))["event_id"].(string))
	bob.vote(t, room, lunch, "a2")
	waitTally(lunch, [3]int{0, 1, 0}, 1, 0, false)
	carol.endPoll(t, room, lunch)
	carol.vote(t, room, lunch, "a2")
	waitTally(lunch, [3]int{0, 2, 0}, 2, 0, false)
	h.alice.endPoll(t, room, lunch)
	waitTally(lunch, [3]int{0, 2, 0}, 2, 0, true)
	noChange(bob, lunch, "a1")
	// end_poll of a poll alice ended answers its tally and sends no end event of the bot's.
	if end := h.ok(h.request("end_poll", map[string]any{"to": room.String(), "event_id": lunch.String()})); end["ended"] != true || fmt.Sprint(end["winners"]) != "[a2]" {
		t.Fatalf("end_poll of a poll alice ended: %v", end)
	}
	h.waitForMarker(t, room)
	if ends := h.alice.relations(t, room, lunch, h.bot.id()); len(ends) != 0 {
		t.Fatalf("the bot sent %d events about the poll alice ended", len(ends))
	}

	msg := h.fail(h.request("send_poll", map[string]any{"to": room.String(), "question": "?",
		"answers": strings.Split(strings.Repeat("x,", 20)+"x", ",")}), "invalid_request")
	if !strings.Contains(msg, "1 to 20") {
		t.Fatalf("21 answers: %q", msg)
	}
}

// TestE2EEActionable: in an encrypted room, with alice on matrix-js-sdk (Rust crypto): she
// decrypts the options message and the poll, her encrypted reaction is a callback that closes
// the single_use question, her encrypted vote is tallied, end_poll ends the poll, and so does
// her encrypted end of another poll.
func TestE2EEActionable(t *testing.T) {
	s := newE2EESetup(t)
	h, room := s.h, s.room.String()
	data := h.ok(h.request("send", map[string]any{"to": room, "text": "Garage open — close it?", "single_use": true,
		"options": []map[string]any{{"key": "👍", "label": "Close it"}, {"key": "👎", "label": "Leave it"}}}))
	msgID := data["event_id"].(string)
	msg := s.alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: msgID})
	if !msg.Encrypted || !strings.HasSuffix(msg.Body(), "👍 Close it\n👎 Leave it") {
		t.Fatalf("alice sees %q (encrypted %v)", msg.Body(), msg.Encrypted)
	}
	s.alice.wait(t, jsclient.EventFilter{RoomID: room, Type: "m.reaction", Sender: h.bot.UserID, RelatesTo: msgID})
	answer, err := s.alice.React(jsCtx(t), room, msgID, "👍")
	if err != nil {
		t.Fatal(err)
	}
	cb := s.inbound(t, "callback", answer)
	if cb["option"] != "👍" || cb["event_id"] != msgID || cb["sender"] != h.alice.UserID {
		t.Fatalf("callback %v", cb)
	}
	edit := s.alice.wait(t, jsclient.EventFilter{RoomID: room, Type: "m.room.message", Sender: h.bot.UserID, RelatesTo: msgID})
	if nc, _ := edit.Content["m.new_content"].(map[string]any); nc == nil || !strings.Contains(fmt.Sprint(nc["body"]), "✅ Closed by") {
		t.Fatalf("the closing edit as alice sees it: %v", edit.Content)
	}

	poll := h.ok(h.request("send_poll", map[string]any{"to": room, "question": "Dinner?", "answers": []string{"Pizza", "Pasta"}}))["event_id"].(string)
	start := s.alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: poll})
	if !start.Encrypted || start.Type != "org.matrix.msc3381.poll.start" {
		t.Fatalf("the poll as alice sees it: %s (encrypted %v)", start.Type, start.Encrypted)
	}
	if _, err := s.alice.Send(jsCtx(t), jsclient.SendArgs{RoomID: room, Type: "org.matrix.msc3381.poll.response", Content: map[string]any{
		"m.relates_to":                     map[string]any{"rel_type": "m.reference", "event_id": poll},
		"org.matrix.msc3381.poll.response": map[string]any{"answers": []string{"a2"}},
	}}); err != nil {
		t.Fatal(err)
	}
	h.rec.wait(30*time.Second, "tally", func(m message) bool {
		return m.Topic == h.base+"/room/"+room+"/poll" && strings.Contains(string(m.Payload), `{"id":"a2","text":"Pasta","votes":1}`)
	})
	// end_poll reads its own encrypted end event back for the time the poll ended.
	if end := h.ok(h.request("end_poll", map[string]any{"to": room, "event_id": poll})); end["ended"] != true || fmt.Sprint(end["winners"]) != "[a2]" {
		t.Fatalf("end_poll: %v", end)
	}
	h.rec.wait(20*time.Second, "ended tally", func(m message) bool {
		return m.Topic == h.base+"/room/"+room+"/poll" && strings.Contains(string(m.Payload), `"ended":true`)
	})
	// Alice, the room's admin, ends a poll in Element style: her encrypted end ends it.
	lunch := h.ok(h.request("send_poll", map[string]any{"to": room, "question": "Lunch?", "answers": []string{"Soup", "Cake"}}))["event_id"].(string)
	s.alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: lunch})
	if _, err := s.alice.Send(jsCtx(t), jsclient.SendArgs{RoomID: room, Type: "org.matrix.msc3381.poll.end", Content: map[string]any{
		"m.relates_to":                map[string]any{"rel_type": "m.reference", "event_id": lunch},
		"org.matrix.msc3381.poll.end": map[string]any{},
		"org.matrix.msc1767.text":     "Ended poll",
	}}); err != nil {
		t.Fatal(err)
	}
	h.rec.wait(30*time.Second, "tally ended by alice", func(m message) bool {
		return m.Topic == h.base+"/room/"+room+"/poll" && strings.Contains(string(m.Payload), `"event_id":"`+lunch+`"`) &&
			strings.Contains(string(m.Payload), `"ended":true`)
	})
}

// TestHACallbacks: in a friendly-name room the callback feeds the room's event entity (as a
// callback, once) and the room's callback device trigger is announced; with
// CALLBACK_VERIFIED_ONLY an answer from an unverified device is a mere reaction.
func TestHACallbacks(t *testing.T) {
	for _, verifiedOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("verified_only=%v", verifiedOnly), func(t *testing.T) {
			h, kitchen, _ := commandHarness(t, map[string]string{"CALLBACK_VERIFIED_ONLY": fmt.Sprint(verifiedOnly)})
			cmps := h.waitConfig("callback trigger", func(c map[string]any) bool { return has(c, "callback_kitchen") })
			if trig := cmps["callback_kitchen"].(map[string]any); trig["t"] != h.base+"/room/kitchen/callback" || trig["type"] != "callback" {
				t.Fatalf("callback trigger %v", trig)
			}
			data := h.ok(h.request("send", map[string]any{"to": "kitchen", "text": "Lights off?",
				"options": []map[string]any{{"key": "💡", "label": "Off"}}}))
			answer := h.alice.react(t, kitchen, id.EventID(data["event_id"].(string)), "💡")
			ev := h.rec.wait(20*time.Second, "event entity", func(m message) bool {
				return m.Topic == h.base+"/room/kitchen/event" && strings.Contains(string(m.Payload), answer.String())
			}).json(t)
			if got := h.publishedFor(h.base+"/room/kitchen/callback", id.EventID(data["event_id"].(string))); verifiedOnly != (len(got) == 0) {
				t.Fatalf("verified_only=%v: %d callbacks", verifiedOnly, len(got))
			}
			want := "callback"
			if verifiedOnly {
				want = "reaction"
			}
			if ev["event_type"] != want {
				t.Fatalf("event entity got %v, want %s", ev, want)
			}
		})
	}
}

// TestPollEndUsesSyncedPowerLevels: a user's poll end is checked against the power levels the
// sync brought: with the homeserver's answers to power-level reads held back, alice's end still
// ends the poll at once.
func TestPollEndUsesSyncedPowerLevels(t *testing.T) {
	proxy := newGateProxy(t)
	h := newHarness(t, map[string]string{"MATRIX_HOMESERVER": proxy.URL, "E2EE": "false"})
	room := h.sharedRoom(nil)
	poll := id.EventID(h.ok(h.request("send_poll", map[string]any{"to": room.String(), "question": "Tea?", "answers": []string{"yes", "no"}}))["event_id"].(string))
	proxy.setHold(func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/state/m.room.power_levels")
	})
	h.alice.endPoll(t, room, poll)
	h.rec.wait(20*time.Second, "the tally ended by alice", func(m message) bool {
		return m.Topic == h.base+"/room/"+room.String()+"/poll" && strings.Contains(string(m.Payload), `"event_id":"`+poll.String()+`"`) &&
			strings.Contains(string(m.Payload), `"ended":true`)
	})
}
