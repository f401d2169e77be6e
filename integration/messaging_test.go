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

func TestBridgeAnnouncesItself(t *testing.T) {
	h := newHarness(t, nil)
	state := h.rec.wait(10*time.Second, "state", func(m message) bool { return m.Topic == h.base+"/bridge/state" })
	if string(state.Payload) != "online" {
		t.Fatalf("state = %q, want online", state.Payload)
	}
	info := h.rec.wait(10*time.Second, "info", func(m message) bool { return m.Topic == h.base+"/bridge/info" }).json(t)
	if info["user_id"] != h.bot.UserID || info["device_id"] == "" || info["homeserver"] != env.HomeserverURL || info["base_topic"] != h.base {
		t.Fatalf("info = %v", info)
	}
	// A client that subscribes later gets state, info, rooms and stats retained (once the bridge
	// published them all: rooms comes after the first sync).
	for _, topic := range []string{"rooms", "stats"} {
		h.rec.wait(10*time.Second, topic, func(m message) bool { return m.Topic == h.base+"/bridge/"+topic })
	}
	late := newRecorder(t, h.base)
	for _, topic := range []string{"state", "info", "rooms", "stats"} {
		late.wait(10*time.Second, "retained "+topic, func(m message) bool { return m.Topic == h.base+"/bridge/"+topic && m.Retained })
	}
	h.stop()
	off := late.wait(10*time.Second, "offline", func(m message) bool {
		return m.Topic == h.base+"/bridge/state" && string(m.Payload) == "offline"
	})
	t.Logf("state after stop: %s", off.Payload)
}

func TestSendKinds(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	to := room.String()

	t.Run("text", func(t *testing.T) {
		data := h.ok(h.request("send", map[string]any{"to": to, "text": "plain <b>text</b>"}))
		if data["room_id"] != to {
			t.Fatalf("room_id = %v", data["room_id"])
		}
		c := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage()
		if c.MsgType != event.MsgText || c.Body != "plain <b>text</b>" || c.FormattedBody != "" {
			t.Fatalf("content = %+v", c)
		}
	})
	t.Run("markdown", func(t *testing.T) {
		data := h.ok(h.request("send", map[string]any{"to": to, "markdown": "**alarm** in _hall_"}))
		c := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage()
		if c.Format != event.FormatHTML || !strings.Contains(c.FormattedBody, "<strong>alarm</strong>") || !strings.Contains(c.FormattedBody, "<em>hall</em>") {
			t.Fatalf("content = %+v", c)
		}
		if strings.Contains(c.Body, "<") {
			t.Fatalf("plain body carries HTML: %q", c.Body)
		}
	})
	t.Run("html notice", func(t *testing.T) {
		data := h.ok(h.request("send", map[string]any{"to": to, "html": "<h1>Door</h1><p>open</p>", "msgtype": "notice"}))
		c := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage()
		if c.MsgType != event.MsgNotice || c.FormattedBody != "<h1>Door</h1><p>open</p>" || !strings.Contains(c.Body, "Door") {
			t.Fatalf("content = %+v", c)
		}
	})
	t.Run("emote", func(t *testing.T) {
		data := h.ok(h.request("send", map[string]any{"to": to, "text": "waves", "msgtype": "emote"}))
		c := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage()
		if c.MsgType != event.MsgEmote {
			t.Fatalf("msgtype = %s", c.MsgType)
		}
	})

	root := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "root"})
	t.Run("reply", func(t *testing.T) {
		data := h.ok(h.request("send", map[string]any{"to": to, "text": "answer", "reply_to": root.String()}))
		c := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage()
		if c.RelatesTo == nil || c.RelatesTo.GetReplyTo() != root || c.RelatesTo.Type != "" {
			t.Fatalf("relates_to = %+v", c.RelatesTo)
		}
	})
	t.Run("thread", func(t *testing.T) {
		data := h.ok(h.request("send", map[string]any{"to": to, "text": "in thread", "thread": root.String()}))
		rel := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage().RelatesTo
		if rel == nil || rel.Type != event.RelThread || rel.EventID != root || !rel.IsFallingBack || rel.GetReplyTo() != root {
			t.Fatalf("relates_to = %+v", rel)
		}
		// Dendrite serves the thread relation: the reply is a child of the root.
		rels, err := h.alice.cli.GetRelations(context.Background(), room, root, &mautrix.ReqGetRelations{RelationType: event.RelThread})
		if err != nil {
			t.Fatal(err)
		}
		if len(rels.Chunk) == 0 || rels.Chunk[0].ID.String() != data["event_id"] {
			t.Fatalf("thread relations = %+v", rels.Chunk)
		}
	})
	t.Run("thread reply", func(t *testing.T) {
		inThread := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "thread msg",
			RelatesTo: (&event.RelatesTo{}).SetThread(root, root)})
		data := h.ok(h.request("send", map[string]any{"to": to, "text": "reply in thread", "thread": root.String(), "reply_to": inThread.String()}))
		rel := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage().RelatesTo
		if rel.Type != event.RelThread || rel.EventID != root || rel.IsFallingBack || rel.GetReplyTo() != inThread {
			t.Fatalf("relates_to = %+v", rel)
		}
	})
	t.Run("edit", func(t *testing.T) {
		orig := h.ok(h.request("send", map[string]any{"to": to, "text": "temp 20°C"}))
		data := h.ok(h.request("send", map[string]any{"to": to, "markdown": "temp **21°C**", "edit": orig["event_id"]}))
		c := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage()
		if c.RelatesTo == nil || c.RelatesTo.Type != event.RelReplace || c.RelatesTo.EventID.String() != orig["event_id"] {
			t.Fatalf("relates_to = %+v", c.RelatesTo)
		}
		if c.NewContent == nil || !strings.Contains(c.NewContent.FormattedBody, "<strong>21°C</strong>") || !strings.HasPrefix(c.Body, "* ") {
			t.Fatalf("edit content = %+v new = %+v", c, c.NewContent)
		}
	})
	t.Run("mentions", func(t *testing.T) {
		data := h.ok(h.request("send", map[string]any{"to": to, "text": "hey alice", "mentions": []string{h.alice.UserID, "@room"}}))
		c := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage()
		if c.Mentions == nil || len(c.Mentions.UserIDs) != 1 || c.Mentions.UserIDs[0] != h.alice.id() || !c.Mentions.Room {
			t.Fatalf("mentions = %+v", c.Mentions)
		}
	})
	t.Run("location", func(t *testing.T) {
		data := h.ok(h.request("send_location", map[string]any{"to": to, "lat": 52.3702, "lon": -4.8952, "description": "Front door", "reply_to": root.String()}))
		evt := h.alice.event(t, room, id.EventID(data["event_id"].(string)))
		c := evt.Content.AsMessage()
		if c.MsgType != event.MsgLocation || c.GeoURI != "geo:52.3702,-4.8952" || c.Body != "Front door (geo:52.3702,-4.8952)" || c.RelatesTo.GetReplyTo() != root {
			t.Fatalf("content = %+v", c)
		}
		loc, _ := evt.Content.Raw["org.matrix.msc3488.location"].(map[string]any)
		if loc["uri"] != "geo:52.3702,-4.8952" || loc["description"] != "Front door" {
			t.Fatalf("org.matrix.msc3488.location = %v", evt.Content.Raw["org.matrix.msc3488.location"])
		}
	})
	t.Run("react and redact", func(t *testing.T) {
		data := h.ok(h.request("react", map[string]any{"to": to, "event_id": root.String(), "key": "👍"}))
		r := h.alice.event(t, room, id.EventID(data["event_id"].(string)))
		rc := r.Content.AsReaction()
		if r.Type != event.EventReaction || rc.RelatesTo.EventID != root || rc.RelatesTo.Key != "👍" || rc.RelatesTo.Type != event.RelAnnotation {
			t.Fatalf("reaction = %s %+v", r.Type.Type, rc.RelatesTo)
		}
		msg := h.ok(h.request("send", map[string]any{"to": to, "text": "delete me"}))
		red := h.ok(h.request("redact", map[string]any{"to": to, "event_id": msg["event_id"], "reason": "test"}))
		if red["event_id"] == "" {
			t.Fatal("no redaction event id")
		}
		eventually(t, 10*time.Second, func() error {
			evt, err := h.alice.cli.GetEvent(context.Background(), room, id.EventID(msg["event_id"].(string)))
			if err != nil {
				return err
			}
			if len(evt.Content.Raw) != 0 || evt.Unsigned.RedactedBecause == nil {
				return fmt.Errorf("not redacted yet: %s", evt.Content.VeryRaw)
			}
			return nil
		})
	})
	t.Run("typing and read receipt", func(t *testing.T) {
		h.ok(h.request("typing", map[string]any{"to": to, "typing": true, "timeout_ms": 5000}))
		h.ok(h.request("typing", map[string]any{"to": to, "typing": false}))
		h.ok(h.request("read_receipt", map[string]any{"to": to, "event_id": root.String()}))
	})
	t.Run("own echoes are not republished", func(t *testing.T) {
		// Alice's message after all of the above arrives; none of the bot's sends did.
		marker := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "marker"})
		h.rec.wait(20*time.Second, "marker", func(m message) bool { return strings.Contains(string(m.Payload), marker.String()) })
		for _, m := range h.rec.all(h.base + "/room/" + to + "/message") {
			if strings.Contains(string(m.Payload), h.bot.UserID+`","sender_name`) {
				t.Fatalf("bot echo published: %s", m.Payload)
			}
		}
	})
}

func TestTargetsAndRooms(t *testing.T) {
	// Plaintext, so that alice's client (no crypto) can read the DMs; encrypted DMs are in
	// e2ee_test.go.
	h := newHarness(t, map[string]string{"E2EE": "false"})

	t.Run("user target makes one DM and reuses it", func(t *testing.T) {
		first := h.ok(h.request("send", map[string]any{"to": h.alice.UserID, "text": "hello by user id"}))
		second := h.ok(h.request("send", map[string]any{"to": "alice", "text": "hello by friendly name"}))
		if first["room_id"] != second["room_id"] {
			t.Fatalf("two DMs: %v and %v", first["room_id"], second["room_id"])
		}
		dm := h.ok(h.request("ensure_dm", map[string]any{"user": "alice"}))
		if dm["room_id"] != first["room_id"] || dm["created"] != false {
			t.Fatalf("ensure_dm = %v", dm)
		}
		room := id.RoomID(first["room_id"].(string))
		h.alice.join(t, room)
		var direct event.DirectChatsEventContent
		if err := h.bot.cli.GetAccountData(context.Background(), "m.direct", &direct); err != nil {
			t.Fatal(err)
		}
		if len(direct[h.alice.id()]) != 1 || direct[h.alice.id()][0] != room {
			t.Fatalf("m.direct = %v", direct)
		}
		create := h.alice.event(t, room, id.EventID(first["event_id"].(string)))
		if create.Content.AsMessage().Body != "hello by user id" {
			t.Fatalf("body = %q", create.Content.AsMessage().Body)
		}
	})
	t.Run("shortcut topic plain and JSON", func(t *testing.T) {
		h.rec.publish(h.base+"/send/alice", 1, "plain from shortcut")
		resp := h.rec.wait(20*time.Second, "shortcut response", func(m message) bool {
			return m.Topic == h.base+"/bridge/response/send" && !strings.Contains(string(m.Payload), `"id"`)
		}).json(t)
		data := h.ok(resp)
		c := h.alice.event(t, id.RoomID(data["room_id"].(string)), id.EventID(data["event_id"].(string))).Content.AsMessage()
		if c.Body != "plain from shortcut" {
			t.Fatalf("body = %q", c.Body)
		}
		h.rec.publish(h.base+"/send/alice", 1, `{"id":"sc-json","markdown":"*json* shortcut","msgtype":"notice"}`)
		data = h.ok(h.response("send", "sc-json"))
		c = h.alice.event(t, id.RoomID(data["room_id"].(string)), id.EventID(data["event_id"].(string))).Content.AsMessage()
		if c.MsgType != event.MsgNotice || !strings.Contains(c.FormattedBody, "<em>json</em>") {
			t.Fatalf("content = %+v", c)
		}
	})
	t.Run("alias target, resolve, join and leave", func(t *testing.T) {
		alias := fmt.Sprintf("public%d", time.Now().UnixNano())
		room := h.alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: alias})
		full := "#" + alias + ":" + env.ServerName
		res := h.ok(h.request("resolve", map[string]any{"to": full}))
		if res["room_id"] != room.String() {
			t.Fatalf("resolve = %v", res)
		}
		joined := h.ok(h.request("join", map[string]any{"room": full}))
		if joined["room_id"] != room.String() {
			t.Fatalf("join = %v", joined)
		}
		rooms := h.ok(h.request("list_rooms", map[string]any{}))
		if !strings.Contains(fmt.Sprint(rooms["rooms"]), room.String()) {
			t.Fatalf("list_rooms = %v", rooms)
		}
		// The shortcut topic takes the alias without its '#'.
		h.rec.publish(h.base+"/send/"+alias+":"+env.ServerName, 1, `{"id":"by-alias","text":"via alias topic"}`)
		data := h.ok(h.response("send", "by-alias"))
		if data["room_id"] != room.String() {
			t.Fatalf("send by alias = %v", data)
		}
		h.rec.wait(20*time.Second, "rooms with the joined room", func(m message) bool {
			return m.Topic == h.base+"/bridge/rooms" && strings.Contains(string(m.Payload), room.String())
		})
		h.ok(h.request("leave", map[string]any{"room": room.String()}))
		eventually(t, 10*time.Second, func() error {
			members, err := h.alice.cli.JoinedMembers(context.Background(), room)
			if err != nil {
				return err
			}
			if _, in := members.Joined[h.bot.id()]; in {
				return fmt.Errorf("bot still in room")
			}
			return nil
		})
	})
	t.Run("unknown targets", func(t *testing.T) {
		h.fail(h.request("send", map[string]any{"to": "nobody", "text": "x"}), "unknown_target")
		h.fail(h.request("send", map[string]any{"to": "#missing:" + env.ServerName, "text": "x"}), "unknown_target")
		h.fail(h.request("send", map[string]any{"to": "@ghost:" + env.ServerName, "text": "x"}), "unknown_target")
		h.fail(h.request("ensure_dm", map[string]any{"user": "#room:x"}), "invalid_request")
		resp := h.request("send", map[string]any{"to": "!notjoined:" + env.ServerName, "text": "x"})
		h.fail(resp, "matrix_error")
	})
}

func TestInbound(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Hall"})
	topic := func(kind string) string { return h.base + "/room/" + room.String() + "/" + kind }
	byEvent := func(kind string, evtID id.EventID) map[string]any {
		return h.rec.wait(20*time.Second, kind+" "+evtID.String(), func(m message) bool {
			return m.Topic == topic(kind) && strings.Contains(string(m.Payload), `"event_id":"`+evtID.String()+`"`)
		}).json(t)
	}
	if err := h.alice.cli.SetDisplayName(context.Background(), "Alice A."); err != nil {
		t.Fatal(err)
	}

	first := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "hi *bot*", Format: event.FormatHTML, FormattedBody: "hi <em>bot</em>"})
	msg := byEvent("message", first)
	want := map[string]any{"room_id": room.String(), "room_name": "Hall", "sender": h.alice.UserID, "msgtype": "m.text",
		"body": "hi *bot*", "formatted_body": "hi <em>bot</em>", "encrypted": false, "sender_verified": false}
	for k, v := range want {
		if msg[k] != v {
			t.Errorf("message[%s] = %v, want %v", k, msg[k], v)
		}
	}
	eventually(t, 10*time.Second, func() error {
		// The display name change reaches the bot's state store with a later sync.
		later := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "name?"})
		if got := byEvent("message", later)["sender_name"]; got != "Alice A." {
			return fmt.Errorf("sender_name = %v", got)
		}
		return nil
	})
	if ts, ok := msg["ts"].(float64); !ok || ts < float64(time.Now().Add(-time.Minute).UnixMilli()) {
		t.Errorf("ts = %v", msg["ts"])
	}

	reply := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "a reply", RelatesTo: (&event.RelatesTo{}).SetReplyTo(first)})
	if got := byEvent("message", reply)["reply_to"]; got != first.String() {
		t.Errorf("reply_to = %v", got)
	}
	threaded := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgNotice, Body: "threaded", RelatesTo: (&event.RelatesTo{}).SetThread(first, first)})
	tm := byEvent("message", threaded)
	if tm["thread"] != first.String() || tm["reply_to"] != nil || tm["msgtype"] != "m.notice" {
		t.Errorf("thread message = %v", tm)
	}
	edit := &event.MessageEventContent{MsgType: event.MsgText, Body: "hi again"}
	edit.SetEdit(first)
	editID := h.alice.send(t, room, edit)
	em := byEvent("message", editID)
	if em["edit_of"] != first.String() || em["body"] != "hi again" {
		t.Errorf("edit = %v", em)
	}
	location := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgLocation, Body: "Here", GeoURI: "geo:48.85,2.35"})
	if lm := byEvent("message", location); lm["msgtype"] != "m.location" || lm["geo_uri"] != "geo:48.85,2.35" || lm["body"] != "Here" {
		t.Errorf("location = %v", lm)
	}
	upload, err := h.alice.cli.UploadBytes(context.Background(), []byte("\x89PNG fake"), "image/png")
	if err != nil {
		t.Fatal(err)
	}
	image := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgImage, Body: "door.png", URL: upload.ContentURI.CUString(),
		Info: &event.FileInfo{MimeType: "image/png", Size: 10, Width: 640, Height: 480}})
	im := byEvent("message", image)
	media, _ := im["media"].(map[string]any)
	if im["msgtype"] != "m.image" || media["mxc"] != upload.ContentURI.String() || media["mimetype"] != "image/png" ||
		media["filename"] != "door.png" || media["size"] != 10.0 || media["width"] != 640.0 || media["height"] != 480.0 || media["encrypted"] != false {
		t.Errorf("image = %v", im)
	}
	react := h.alice.send(t, room, &event.ReactionEventContent{RelatesTo: *(&event.RelatesTo{}).SetAnnotation(first, "🎉")})
	rm := byEvent("reaction", react)
	if rm["relates_to"] != first.String() || rm["key"] != "🎉" || rm["sender"] != h.alice.UserID {
		t.Errorf("reaction = %v", rm)
	}
	red, err := h.alice.cli.RedactEvent(context.Background(), room, reply, mautrix.ReqRedact{Reason: "oops"})
	if err != nil {
		t.Fatal(err)
	}
	rd := byEvent("redaction", red.EventID)
	if rd["redacts"] != reply.String() || rd["reason"] != "oops" {
		t.Errorf("redaction = %v", rd)
	}
	for _, m := range h.rec.all(topic("message")) {
		if !m.Retained {
			continue
		}
		t.Errorf("inbound message retained: %s", m.Payload)
	}
}

func TestInboundFriendlyKeyAndInvite(t *testing.T) {
	h := newHarness(t, nil)
	dm := h.ok(h.request("ensure_dm", map[string]any{"user": "alice"}))
	room := id.RoomID(dm["room_id"].(string))
	h.alice.join(t, room)
	evt := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "via friendly key"})
	h.rec.wait(20*time.Second, "message on the friendly key", func(m message) bool {
		return m.Topic == h.base+"/room/alice/message" && strings.Contains(string(m.Payload), evt.String())
	})
	// An invite from someone not in AUTO_JOIN is reported but not accepted.
	stranger := newUser(t, "stranger")
	other := stranger.createRoom(t, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{h.bot.id()}})
	h.rec.wait(20*time.Second, "invite event", func(m message) bool {
		return m.Topic == h.base+"/bridge/event" && strings.Contains(string(m.Payload), `"type":"invite"`) && strings.Contains(string(m.Payload), other.String())
	})
	time.Sleep(time.Second)
	members, err := stranger.cli.JoinedMembers(context.Background(), other)
	if err != nil {
		t.Fatal(err)
	}
	if _, in := members.Joined[h.bot.id()]; in {
		t.Fatal("bot accepted an invite from a user not in AUTO_JOIN")
	}
}
