package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// membership is user's membership in room as other reads it from the homeserver.
func membership(t *testing.T, other *user, room id.RoomID, u id.UserID) event.Membership {
	t.Helper()
	var m event.MemberEventContent
	if err := other.cli.StateEvent(context.Background(), room, event.StateMember, u.String(), &m); err != nil {
		t.Fatalf("failed to read %s's membership: %v", u, err)
	}
	return m.Membership
}

// powerLevel is user's power level in room as other reads it.
func powerLevel(t *testing.T, other *user, room id.RoomID, u id.UserID) int {
	t.Helper()
	var pl event.PowerLevelsEventContent
	if err := other.cli.StateEvent(context.Background(), room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatalf("failed to read power levels: %v", err)
	}
	return pl.GetUserLevel(u)
}

// TestRoomAdministration: invite, kick, ban, unban, set_power_level, set_room and members change
// the room as the other users see it, and what the bot may not do is refused with a clear error.
func TestRoomAdministration(t *testing.T) {
	h := newHarness(t, map[string]string{"E2EE": "false"})
	bob, carol := newUser(t, "bob"), newUser(t, "carol")
	ctx := context.Background()
	room := h.sharedRoom(&mautrix.ReqCreateRoom{Preset: "private_chat", PowerLevelOverride: &event.PowerLevelsEventContent{
		Users: map[id.UserID]int{h.alice.id(): 100, h.bot.id(): 100},
	}})
	r := room.String()

	t.Run("invite", func(t *testing.T) {
		data := h.ok(h.request("invite", map[string]any{"room": r, "user": bob.UserID, "reason": "welcome"}))
		if data["room_id"] != r || data["user"] != bob.UserID {
			t.Fatalf("data = %v", data)
		}
		if m := membership(t, h.alice, room, bob.id()); m != event.MembershipInvite {
			t.Fatalf("bob's membership = %s, want invite", m)
		}
		bob.join(t, room) // only works because bob was invited
		h.ok(h.request("invite", map[string]any{"room": r, "user": carol.UserID}))
		carol.join(t, room)
	})
	t.Run("set_power_level by role and by number", func(t *testing.T) {
		data := h.ok(h.request("set_power_level", map[string]any{"room": r, "user": bob.UserID, "role": "moderator"}))
		if data["level"] != 50.0 {
			t.Fatalf("data = %v", data)
		}
		if l := powerLevel(t, bob, room, bob.id()); l != 50 {
			t.Fatalf("bob sees his level as %d, want 50", l)
		}
		h.ok(h.request("set_power_level", map[string]any{"room": r, "user": carol.UserID, "level": 25}))
		if l := powerLevel(t, carol, room, carol.id()); l != 25 {
			t.Fatalf("carol sees her level as %d, want 25", l)
		}
	})
	t.Run("set_power_level refused for a user at the bot's level", func(t *testing.T) {
		msg := h.fail(h.request("set_power_level", map[string]any{"room": r, "user": h.alice.UserID, "role": "user"}), "not_allowed")
		t.Logf("refusal: %s", msg)
		if l := powerLevel(t, h.alice, room, h.alice.id()); l != 100 {
			t.Fatalf("alice's level changed to %d", l)
		}
	})
	t.Run("kick", func(t *testing.T) {
		h.ok(h.request("kick", map[string]any{"room": r, "user": carol.UserID, "reason": "bye"}))
		if m := membership(t, h.alice, room, carol.id()); m != event.MembershipLeave {
			t.Fatalf("carol's membership = %s, want leave", m)
		}
	})
	t.Run("ban and unban", func(t *testing.T) {
		h.ok(h.request("ban", map[string]any{"room": r, "user": bob.UserID, "reason": "spam"}))
		if m := membership(t, h.alice, room, bob.id()); m != event.MembershipBan {
			t.Fatalf("bob's membership = %s, want ban", m)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, room); err == nil {
			t.Fatal("banned bob could join again")
		}
		data := h.ok(h.request("members", map[string]any{"room": r, "membership": "ban"}))
		if got := memberIDs(data); !slices.Equal(got, []string{bob.UserID}) {
			t.Fatalf("banned members = %v, want bob", got)
		}
		h.ok(h.request("unban", map[string]any{"room": r, "user": bob.UserID}))
		if m := membership(t, h.alice, room, bob.id()); m != event.MembershipLeave {
			t.Fatalf("bob's membership after unban = %s, want leave", m)
		}
	})
	t.Run("set_room name, topic and avatar", func(t *testing.T) {
		up, err := h.alice.cli.UploadBytes(ctx, []byte("not really a png"), "image/png")
		if err != nil {
			t.Fatal(err)
		}
		avatar := up.ContentURI.String()
		data := h.ok(h.request("set_room", map[string]any{"room": r, "name": "Guests", "topic": "This weekend", "avatar": avatar}))
		if ids, _ := data["event_ids"].(map[string]any); len(ids) != 3 {
			t.Fatalf("data = %v", data)
		}
		var name event.RoomNameEventContent
		var topic event.TopicEventContent
		var av event.RoomAvatarEventContent
		for typ, into := range map[event.Type]any{event.StateRoomName: &name, event.StateTopic: &topic, event.StateRoomAvatar: &av} {
			if err := h.alice.cli.StateEvent(ctx, room, typ, "", into); err != nil {
				t.Fatal(err)
			}
		}
		if name.Name != "Guests" || topic.Topic != "This weekend" || string(av.URL) != avatar {
			t.Fatalf("alice sees name %q topic %q avatar %q", name.Name, topic.Topic, av.URL)
		}
	})
	t.Run("members with a filter", func(t *testing.T) {
		data := h.ok(h.request("members", map[string]any{"room": r, "membership": "join"}))
		got := memberIDs(data)
		want := []string{h.alice.UserID, h.bot.UserID}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("joined members = %v, want %v", got, want)
		}
		for _, m := range data["members"].([]any) {
			if m := m.(map[string]any); m["power_level"] != 100.0 || m["membership"] != "join" {
				t.Fatalf("member %v", m)
			}
		}
		all := memberIDs(h.ok(h.request("members", map[string]any{"room": r})))
		if len(all) != 4 {
			t.Fatalf("all members = %v, want alice, bob, carol and the bot", all)
		}
	})

	weak := h.sharedRoom(nil) // the bot has level 0 here
	elsewhere := h.alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	bad := []struct {
		name, action string
		fields       map[string]any
		code         string
	}{
		{"a user that does not exist", "invite", map[string]any{"room": r, "user": "@nobody-" + fmt.Sprint(h.base) + ":localhost"}, "unknown_target"},
		{"a room the bot is not in", "kick", map[string]any{"room": elsewhere.String(), "user": bob.UserID}, "unknown_target"},
		{"members of a room the bot is not in", "members", map[string]any{"room": elsewhere.String()}, "unknown_target"},
		{"a level out of range", "set_power_level", map[string]any{"room": r, "user": bob.UserID, "level": 1e16}, "invalid_request"},
		{"a level above the bot's", "set_power_level", map[string]any{"room": r, "user": bob.UserID, "level": 101}, "not_allowed"},
		{"kick without power", "kick", map[string]any{"room": weak.String(), "user": h.alice.UserID}, "not_allowed"},
		{"set_room without power", "set_room", map[string]any{"room": weak.String(), "name": "x"}, "not_allowed"},
		{"an unknown role", "set_power_level", map[string]any{"room": r, "user": bob.UserID, "role": "owner"}, "invalid_request"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			msg := h.fail(h.request(tc.action, tc.fields), tc.code)
			if msg == "" {
				t.Fatal("error without a message")
			}
			t.Logf("%s: %s", tc.code, msg)
		})
	}
}

// memberIDs returns the sorted user IDs of a members response.
func memberIDs(data map[string]any) []string {
	var out []string
	list, _ := data["members"].([]any)
	for _, m := range list {
		out = append(out, m.(map[string]any)["user_id"].(string))
	}
	slices.Sort(out)
	return out
}

// TestCreateRoomFromTemplate: a room made from a template with moderators is encrypted (E2EE
// is on and the preset is private), its moderator sees level 50, its alias resolves, and its
// key names it in later requests, also after a restart.
func TestCreateRoomFromTemplate(t *testing.T) {
	bob, carol := newUser(t, "bob"), newUser(t, "carol")
	path := filepath.Join(t.TempDir(), "templates.json")
	tpl := fmt.Sprintf(`{"guests": {"topic": "Guests of the house", "preset": "private_chat",
		"moderators": [%q], "invite": [%q], "power_levels": {"events": {"m.room.topic": 0}}}}`, bob.UserID, carol.UserID)
	if err := os.WriteFile(path, []byte(tpl), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, map[string]string{"ROOM_TEMPLATES_FILE": path})
	ctx := context.Background()
	n := time.Now().UnixNano()
	key, alias := fmt.Sprintf("weekend%d", n), fmt.Sprintf("guests%d", n)

	data := h.ok(h.request("create_room", map[string]any{"template": "guests", "key": key, "alias": alias, "name": "Guests"}))
	room := id.RoomID(data["room_id"].(string))
	if data["key"] != key || data["alias"] != "#"+alias+":localhost" {
		t.Fatalf("data = %v", data)
	}
	bob.join(t, room)
	carol.join(t, room)
	t.Run("the moderator sees level 50", func(t *testing.T) {
		if l := powerLevel(t, bob, room, bob.id()); l != 50 {
			t.Fatalf("bob's level = %d", l)
		}
		if l := powerLevel(t, carol, room, carol.id()); l != 0 {
			t.Fatalf("carol's level = %d", l)
		}
	})
	t.Run("encrypted, with the template's topic, the request's name and power levels", func(t *testing.T) {
		var enc event.EncryptionEventContent
		if err := bob.cli.StateEvent(ctx, room, event.StateEncryption, "", &enc); err != nil || enc.Algorithm != id.AlgorithmMegolmV1 {
			t.Fatalf("encryption = %+v, %v", enc, err)
		}
		var topic event.TopicEventContent
		var name event.RoomNameEventContent
		_ = bob.cli.StateEvent(ctx, room, event.StateTopic, "", &topic)
		_ = bob.cli.StateEvent(ctx, room, event.StateRoomName, "", &name)
		if topic.Topic != "Guests of the house" || name.Name != "Guests" {
			t.Fatalf("topic %q name %q", topic.Topic, name.Name)
		}
		var pl event.PowerLevelsEventContent
		_ = bob.cli.StateEvent(ctx, room, event.StatePowerLevels, "", &pl)
		if pl.GetEventLevel(event.StateTopic) != 0 || pl.GetUserLevel(h.bot.id()) != 100 {
			t.Fatalf("topic level %d, bot level %d", pl.GetEventLevel(event.StateTopic), pl.GetUserLevel(h.bot.id()))
		}
	})
	t.Run("the alias resolves", func(t *testing.T) {
		resp, err := carol.cli.ResolveAlias(ctx, id.RoomAlias("#"+alias+":localhost"))
		if err != nil || resp.RoomID != room {
			t.Fatalf("alias resolves to %v, %v", resp, err)
		}
	})
	checkKey := func(t *testing.T) {
		t.Helper()
		data := h.ok(h.request("members", map[string]any{"room": key, "membership": "join"}))
		if data["room_id"] != room.String() || len(memberIDs(data)) != 3 {
			t.Fatalf("members of %s = %v", key, data)
		}
	}
	t.Run("bridge/rooms lists it under its key with the bot's level", func(t *testing.T) {
		h.rec.wait(20*time.Second, "the new room in bridge/rooms", func(m message) bool {
			if m.Topic != h.base+"/bridge/rooms" {
				return false
			}
			var rooms []map[string]any
			_ = json.Unmarshal(m.Payload, &rooms)
			for _, r := range rooms {
				if r["room_id"] == room.String() && r["key"] == key && r["power_level"] == 100.0 && r["encrypted"] == true {
					return true
				}
			}
			return false
		})
	})
	t.Run("the key names the room", checkKey)
	t.Run("the key survives a restart", func(t *testing.T) {
		h.stop()
		h.start()
		checkKey(t)
	})
	t.Run("bad input", func(t *testing.T) {
		msg := h.fail(h.request("create_room", map[string]any{"template": "nope"}), "invalid_request")
		if !strings.Contains(msg, "guests") {
			t.Fatalf("message %q does not list the known templates", msg)
		}
		h.fail(h.request("create_room", map[string]any{"key": key}), "invalid_request")
		h.fail(h.request("create_room", map[string]any{"preset": "secret"}), "invalid_request")
	})
}

// copies counts the bot's messages with this body in room, as alice reads them.
func copies(t *testing.T, h *harness, room id.RoomID, body string) int {
	t.Helper()
	resp, err := h.alice.cli.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatalf("failed to read messages: %v", err)
	}
	n := 0
	for _, evt := range resp.Chunk {
		if evt.Sender != h.bot.id() || evt.Type != event.EventMessage {
			continue
		}
		_ = evt.Content.ParseRaw(evt.Type)
		if evt.Content.AsMessage().Body == body {
			n++
		}
	}
	return n
}

// waitCopies waits until room holds want copies of the bot's message body: Dendrite's /messages
// may show an event a moment after its send was answered.
func waitCopies(t *testing.T, h *harness, room id.RoomID, body string, want int) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if n := copies(t, h, room, body); n != want {
			return fmt.Errorf("room %s has %d copies of %q, want %d", room, n, body, want)
		}
		return nil
	})
}

// broadcastRooms makes n rooms shared by alice and the bot; the last one forbids the bot to
// speak (messages need level 50).
func broadcastRooms(h *harness, n int) []id.RoomID {
	rooms := h.sharedRooms(n - 1)
	return append(rooms, h.sharedRoom(&mautrix.ReqCreateRoom{Preset: "private_chat", PowerLevelOverride: &event.PowerLevelsEventContent{
		Users: map[id.UserID]int{h.alice.id(): 100}, EventsDefault: 50,
	}}))
}

func roomStrings(rooms []id.RoomID) []any {
	out := make([]any, len(rooms))
	for i, r := range rooms {
		out[i] = r.String()
	}
	return out
}

// TestBroadcast: one broadcast to 20 rooms, one of which forbids the bot to speak: 19 rooms get
// the message once, the other is a matrix_error result, in one response; a GROUPS group works,
// and "*" is refused unless BROADCAST_ALL allows it.
func TestBroadcast(t *testing.T) {
	h := newHarness(t, map[string]string{"E2EE": "false"})
	rooms := broadcastRooms(h, 20)
	forbidden := rooms[len(rooms)-1]

	data := h.ok(h.request("broadcast", map[string]any{"to": roomStrings(rooms), "text": "to everyone"}))
	if data["sent"] != 19.0 || data["failed"] != 1.0 {
		t.Fatalf("sent %v failed %v", data["sent"], data["failed"])
	}
	results := data["results"].([]any)
	for i, r := range results {
		res := r.(map[string]any)
		if res["to"] != rooms[i].String() {
			t.Fatalf("result %d is for %v, want %s", i, res["to"], rooms[i])
		}
		if rooms[i] == forbidden {
			e, _ := res["error"].(map[string]any)
			if e["code"] != "matrix_error" || e["errcode"] != "M_FORBIDDEN" {
				t.Fatalf("forbidden room's result = %v", res)
			}
			continue
		}
		if res["event_id"] == nil || res["error"] != nil {
			t.Fatalf("result %d = %v", i, res)
		}
	}
	for _, room := range rooms {
		want := 1
		if room == forbidden {
			want = 0
		}
		waitCopies(t, h, room, "to everyone", want)
	}

	t.Run("everywhere needs BROADCAST_ALL", func(t *testing.T) {
		msg := h.fail(h.request("broadcast", map[string]any{"to": "*", "text": "x"}), "not_allowed")
		if !strings.Contains(msg, "BROADCAST_ALL") {
			t.Fatalf("message %q does not name BROADCAST_ALL", msg)
		}
	})
	t.Run("a group, and everywhere when allowed", func(t *testing.T) {
		h.stop()
		h.env["GROUPS"] = fmt.Sprintf("announce=%s,%s", rooms[0], rooms[1])
		h.env["BROADCAST_ALL"] = "true"
		h.start()
		data := h.ok(h.request("broadcast", map[string]any{"to": "announce", "text": "to the group"}))
		waitCopies(t, h, rooms[0], "to the group", 1)
		if data["sent"] != 2.0 || copies(t, h, rooms[2], "to the group") != 0 {
			t.Fatalf("group broadcast = %v", data)
		}
		data = h.ok(h.request("broadcast", map[string]any{"to": "*", "text": "to all"}))
		if data["sent"] != 19.0 || data["failed"] != 1.0 {
			t.Fatalf("broadcast to * = sent %v failed %v", data["sent"], data["failed"])
		}
	})
}

// TestBroadcastSurvivesKill: the bridge is killed (SIGKILL) in the middle of a broadcast to 20
// rooms, while the homeserver holds the send to the eighth: the rooms before it have the message,
// the rooms after it nothing yet. After the restart every room has the message exactly once and
// the one response comes.
func TestBroadcastSurvivesKill(t *testing.T) {
	proxy := newGateProxy(t)
	h := newHarness(t, map[string]string{"MATRIX_HOMESERVER": proxy.URL, "E2EE": "false"})
	rooms := h.sharedRooms(20)
	h.stop()
	h.startProcess()
	const held = 7
	proxy.setHold(func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/rooms/"+rooms[held].String()+"/send/m.room.message/")
	})
	body := fmt.Sprintf("kill test %d", time.Now().UnixNano())
	payload, _ := json.Marshal(map[string]any{"id": "bk", "to": roomStrings(rooms), "text": body})
	h.rec.publish(h.base+"/bridge/request/broadcast", 1, string(payload))
	proxy.waitHeld(t)
	for i, room := range rooms {
		want := 0
		if i < held {
			want = 1
		}
		waitCopies(t, h, room, body, want)
	}
	h.kill()
	proxy.setHold(nil)
	h.startProcess()
	data := h.ok(h.response("broadcast", "bk"))
	if data["sent"] != 20.0 {
		t.Fatalf("response after the restart = %v", data)
	}
	for _, room := range rooms {
		waitCopies(t, h, room, body, 1)
	}
}

// TestDeclinedInvite: an invite from someone AUTO_JOIN does not cover is reported (who invited
// the bot to which room) and declined: the inviter sees the bot leave.
func TestDeclinedInvite(t *testing.T) {
	h := newHarness(t, map[string]string{"E2EE": "false"})
	stranger := newUser(t, "stranger")
	room := stranger.createRoom(t, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{h.bot.id()}})
	for _, typ := range []string{"invite", "invite_declined"} {
		m := h.rec.wait(20*time.Second, typ+" notice", func(m message) bool {
			return m.Topic == h.base+"/bridge/event" && strings.Contains(string(m.Payload), `"type":"`+typ+`"`) &&
				strings.Contains(string(m.Payload), room.String())
		})
		if n := m.json(t); n["sender"] != stranger.UserID {
			t.Fatalf("%s notice = %v", typ, n)
		}
	}
	eventually(t, 10*time.Second, func() error {
		if m := membership(t, stranger, room, h.bot.id()); m != event.MembershipLeave {
			return fmt.Errorf("the bot's membership is %s, want leave", m)
		}
		return nil
	})
}

// TestMembershipTracking: joins, invites, kicks, bans, unbans, leaves and power level changes
// that others (or the bot, through requests) make in a joined room are published on <base>/room/<key>/membership, and
// <base>/bridge/rooms follows the member count and the bot's own power level, and drops the
// rooms the bot leaves (by a leave request) or is kicked from.
func TestMembershipTracking(t *testing.T) {
	h := newHarness(t, map[string]string{"E2EE": "false"})
	bob := newUser(t, "bob")
	ctx := context.Background()
	room := h.sharedRoom(nil)
	r := room.String()
	topic := h.base + "/room/" + mqtt.SafeSegment(r) + "/membership"
	expectFrom := func(sender *user, change string, check func(p map[string]any) bool) {
		t.Helper()
		m := h.rec.wait(20*time.Second, change+" on "+topic, func(m message) bool {
			if m.Topic != topic || !strings.Contains(string(m.Payload), `"change":"`+change+`"`) {
				return false
			}
			var p map[string]any
			return json.Unmarshal(m.Payload, &p) == nil && check(p)
		})
		p := m.json(t)
		if p["room_id"] != r || p["sender"] != sender.UserID {
			t.Fatalf("%s payload = %v", change, p)
		}
	}
	expect := func(change string, check func(p map[string]any) bool) {
		t.Helper()
		expectFrom(h.alice, change, check)
	}
	isBob := func(membership string) func(p map[string]any) bool {
		return func(p map[string]any) bool { return p["user"] == bob.UserID && p["membership"] == membership }
	}
	alice := h.alice.cli
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.id()}); err != nil {
		t.Fatal(err)
	}
	expect("invite", isBob("invite"))
	bob.join(t, room)
	h.rec.wait(20*time.Second, "join by bob", func(m message) bool {
		return m.Topic == topic && strings.Contains(string(m.Payload), `"change":"join"`) && strings.Contains(string(m.Payload), bob.UserID)
	})
	var pl event.PowerLevelsEventContent
	if err := alice.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	pl.SetUserLevel(bob.id(), 50)
	pl.SetUserLevel(h.bot.id(), 60)
	if _, err := alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	expect("power_levels", func(p map[string]any) bool {
		levels, _ := p["levels"].([]any)
		got := map[string]float64{}
		for _, l := range levels {
			l := l.(map[string]any)
			got[l["user"].(string)] = l["to"].(float64)
		}
		return got[bob.UserID] == 50 && got[h.bot.UserID] == 60
	})
	h.rec.wait(20*time.Second, "bridge/rooms with the bot's level and two members", func(m message) bool {
		if m.Topic != h.base+"/bridge/rooms" {
			return false
		}
		var rooms []map[string]any
		_ = json.Unmarshal(m.Payload, &rooms)
		for _, rm := range rooms {
			if rm["room_id"] == r && rm["power_level"] == 60.0 && rm["members"] == 3.0 {
				return true
			}
		}
		return false
	})
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: bob.id(), Reason: "too loud"}); err != nil {
		t.Fatal(err)
	}
	expect("kick", func(p map[string]any) bool { return isBob("leave")(p) && p["reason"] == "too loud" })
	if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.id()}); err != nil {
		t.Fatal(err)
	}
	expect("ban", isBob("ban"))
	if _, err := alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: bob.id()}); err != nil {
		t.Fatal(err)
	}
	expect("unban", isBob("leave"))
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.id()}); err != nil {
		t.Fatal(err)
	}
	bob.join(t, room)
	if _, err := bob.cli.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	expectFrom(bob, "leave", isBob("leave"))

	// Changes the bot makes through requests are published like anyone's.
	byBot := func(membership string) func(p map[string]any) bool {
		return func(p map[string]any) bool { return isBob(membership)(p) && p["sender"] == h.bot.UserID }
	}
	h.ok(h.request("invite", map[string]any{"room": r, "user": bob.UserID}))
	expectFrom(h.bot, "invite", byBot("invite"))
	bob.join(t, room)
	h.ok(h.request("kick", map[string]any{"room": r, "user": bob.UserID, "reason": "by request"}))
	expectFrom(h.bot, "kick", func(p map[string]any) bool { return byBot("leave")(p) && p["reason"] == "by request" })
	if got := h.rec.all(topic); slices.ContainsFunc(got, func(m message) bool {
		return strings.Contains(string(m.Payload), `"user":"`+h.bot.UserID+`"`) && strings.Contains(string(m.Payload), `"sender":"`+h.bot.UserID+`"`)
	}) {
		t.Fatalf("the bot's own membership was published on %s", topic)
	}

	// <base>/bridge/rooms drops a room the bot left by request, and one it was kicked from.
	other := h.sharedRoom(nil)
	listed := func(room id.RoomID, want bool) func(map[id.RoomID]map[string]any) bool {
		return func(rooms map[id.RoomID]map[string]any) bool { return (rooms[room] != nil) == want }
	}
	h.roomList(t, 0, "listing both rooms", func(rooms map[id.RoomID]map[string]any) bool {
		return listed(room, true)(rooms) && listed(other, true)(rooms)
	})
	published := len(h.rec.all(h.base + "/bridge/rooms"))
	h.ok(h.request("leave", map[string]any{"room": other.String()}))
	h.roomList(t, published, "without the room left", listed(other, false))
	published = len(h.rec.all(h.base + "/bridge/rooms"))
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: h.bot.id(), Reason: "out"}); err != nil {
		t.Fatal(err)
	}
	h.roomList(t, published, "without the room the bot was kicked from", listed(room, false))
}

// roomList waits until the latest <base>/bridge/rooms after the first skip messages on it
// satisfies ok, and returns it by room ID.
func (h *harness) roomList(t *testing.T, skip int, what string, ok func(rooms map[id.RoomID]map[string]any) bool) map[id.RoomID]map[string]any {
	t.Helper()
	var last map[id.RoomID]map[string]any
	eventually(t, 30*time.Second, func() error {
		msgs := h.rec.all(h.base + "/bridge/rooms")
		if len(msgs) <= skip {
			return fmt.Errorf("no bridge/rooms yet for %s", what)
		}
		var list []map[string]any
		if err := json.Unmarshal(msgs[len(msgs)-1].Payload, &list); err != nil {
			return fmt.Errorf("bridge/rooms is not a list: %w", err)
		}
		last = make(map[id.RoomID]map[string]any, len(list))
		for _, r := range list {
			roomID, _ := r["room_id"].(string)
			last[id.RoomID(roomID)] = r
		}
		if !ok(last) {
			return fmt.Errorf("bridge/rooms is not %s: %s", what, msgs[len(msgs)-1].Payload)
		}
		return nil
	})
	return last
}

// upgradeRoom has u upgrade room (POST /rooms/{room}/upgrade) and returns the new room.
func upgradeRoom(t *testing.T, u *user, room id.RoomID) id.RoomID {
	t.Helper()
	var resp struct {
		ReplacementRoom id.RoomID `json:"replacement_room"`
	}
	url := u.cli.BuildClientURL("v3", "rooms", room, "upgrade")
	if _, err := u.cli.MakeRequest(context.Background(), "POST", url, map[string]any{"new_version": "10"}, &resp); err != nil {
		t.Fatalf("failed to upgrade the room: %v", err)
	}
	return resp.ReplacementRoom
}

// TestRoomUpgradeFollowed: when a room is upgraded, the bot joins the replacement, reports it,
// and requests that name the old room (its key from create_room, its room ID, or a TARGETS name
// of it, also after a restart) reach the new room. <base>/bridge/rooms (the Home Assistant
// "Joined rooms" sensor counts it) and a broadcast to "*" have the new room in the old one's
// place, ALLOWED_TARGETS allows the new room where it named the old one, and a replacement that
// does not name the old room as its predecessor is not followed.
func TestRoomUpgradeFollowed(t *testing.T) {
	h := newHarness(t, map[string]string{"E2EE": "false", "BROADCAST_ALL": "true"})
	ctx := context.Background()
	key := fmt.Sprintf("garden%d", time.Now().UnixNano())
	data := h.ok(h.request("create_room", map[string]any{"key": key, "preset": "public_chat", "name": "Garden",
		"invite": []string{h.alice.UserID}, "power_levels": map[string]any{"users": map[string]any{h.alice.UserID: 100}}}))
	oldRoom := id.RoomID(data["room_id"].(string))
	h.alice.join(t, oldRoom)
	before := h.roomList(t, 0, "listing the garden under its key", func(rooms map[id.RoomID]map[string]any) bool {
		return rooms[oldRoom] != nil && rooms[oldRoom]["key"] == key
	})

	newRoom := upgradeRoom(t, h.alice, oldRoom)
	m := h.rec.wait(30*time.Second, "room_upgraded notice", func(m message) bool {
		return m.Topic == h.base+"/bridge/event" && strings.Contains(string(m.Payload), `"type":"room_upgraded"`)
	})
	if n := m.json(t); n["room_id"] != oldRoom.String() || n["replacement_room"] != newRoom.String() || n["sender"] != h.alice.UserID {
		t.Fatalf("notice = %v", n)
	}
	members, err := h.alice.cli.JoinedMembers(ctx, newRoom)
	if err != nil {
		t.Fatal(err)
	}
	if _, in := members.Joined[h.bot.id()]; !in {
		t.Fatal("the bot is not in the replacement room")
	}
	replaced := func(rooms map[id.RoomID]map[string]any) bool {
		return rooms[oldRoom] == nil && rooms[newRoom] != nil && rooms[newRoom]["key"] == key
	}
	t.Run("bridge/rooms lists the new room with the old one's key, and not the old room", func(t *testing.T) {
		after := h.roomList(t, 0, "the new room in the old one's place", replaced)
		if len(after) != len(before) {
			t.Fatalf("bridge/rooms counts %d rooms after the upgrade, %d before", len(after), len(before))
		}
	})
	t.Run("a broadcast to * reaches the new room once and the old room not", func(t *testing.T) {
		body := fmt.Sprintf("to all %d", time.Now().UnixNano())
		data := h.ok(h.request("broadcast", map[string]any{"to": "*", "text": body}))
		results, _ := data["results"].([]any)
		if data["sent"] != 1.0 || data["failed"] != 0.0 || len(results) != 1 || results[0].(map[string]any)["room_id"] != newRoom.String() {
			t.Fatalf("broadcast to * = %v, want one result, for the new room", data)
		}
		waitCopies(t, h, newRoom, body, 1)
		waitCopies(t, h, oldRoom, body, 0)
	})
	sendTo := func(t *testing.T, target, body string) {
		t.Helper()
		data := h.ok(h.request("send", map[string]any{"to": target, "text": body}))
		if data["room_id"] != newRoom.String() {
			t.Fatalf("send to %s went to %v, want the new room %s", target, data["room_id"], newRoom)
		}
		waitCopies(t, h, newRoom, body, 1)
		if copies(t, h, oldRoom, body) != 0 {
			t.Fatalf("%q is in the old room", body)
		}
	}
	t.Run("the key", func(t *testing.T) { sendTo(t, key, "by key") })
	t.Run("the old room ID", func(t *testing.T) { sendTo(t, oldRoom.String(), "by old ID") })
	t.Run("a TARGETS name of the old room, after a restart", func(t *testing.T) {
		published := len(h.rec.all(h.base + "/bridge/rooms"))
		h.stop()
		h.env["TARGETS"] += ",patio=" + oldRoom.String()
		h.start()
		sendTo(t, "patio", "by TARGETS name")
		sendTo(t, key, "by key after the restart")
		h.roomList(t, published, "the new room in the old one's place after the restart", replaced)
	})
	t.Run("ALLOWED_TARGETS naming the old room allows the new one", func(t *testing.T) {
		h.stop()
		h.env["ALLOWED_TARGETS"] = oldRoom.String()
		h.start()
		defer func() {
			h.stop()
			delete(h.env, "ALLOWED_TARGETS")
			h.start()
		}()
		sendTo(t, newRoom.String(), "by new ID, allowed through the old one")
		sendTo(t, key, "by key, allowed through the old one")
		h.fail(h.request("send", map[string]any{"to": "alice", "text": "not allowed"}), "not_allowed")
	})
	t.Run("a replacement that does not name the old room is not followed", func(t *testing.T) {
		room := h.sharedRoom(nil)
		impostor := h.alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := h.alice.cli.SendStateEvent(ctx, room, event.StateTombstone, "", &event.TombstoneEventContent{
			Body: "moved", ReplacementRoom: impostor,
		}); err != nil {
			t.Fatalf("failed to send the tombstone: %v", err)
		}
		m := h.rec.wait(30*time.Second, "room_upgrade_failed notice", func(m message) bool {
			return m.Topic == h.base+"/bridge/event" && strings.Contains(string(m.Payload), `"type":"room_upgrade_failed"`) &&
				strings.Contains(string(m.Payload), room.String())
		})
		n := m.json(t)
		if n["room_id"] != room.String() || n["replacement_room"] != impostor.String() || n["sender"] != h.alice.UserID {
			t.Fatalf("notice = %v", n)
		}
		if msg, _ := n["message"].(string); !strings.Contains(msg, "predecessor") {
			t.Fatalf("message %q does not say why", msg)
		}
		data := h.ok(h.request("send", map[string]any{"to": room.String(), "text": "still here"}))
		waitCopies(t, h, room, "still here", 1)
		if data["room_id"] != room.String() || copies(t, h, impostor, "still here") != 0 {
			t.Fatalf("send after the failed upgrade = %v, want it in the old room only", data)
		}
		h.roomList(t, 0, "still listing the old room", func(rooms map[id.RoomID]map[string]any) bool { return rooms[room] != nil })
	})
}

// TestBroadcastReadBeforeItEnds: a broadcast's copy that alice reads while the broadcast still
// waits on another room is published as read then, not once the last room is done.
func TestBroadcastReadBeforeItEnds(t *testing.T) {
	proxy := newGateProxy(t)
	h := newHarness(t, map[string]string{"MATRIX_HOMESERVER": proxy.URL, "E2EE": "false"})
	first, slow := h.sharedRoom(nil), h.sharedRoom(nil)
	proxy.setHold(func(r *http.Request) bool { // the bot's message to the slow room hangs
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, slow.String()+"/send/")
	})
	payload, _ := json.Marshal(map[string]any{"id": "bc-read", "to": []string{first.String(), slow.String()}, "text": "hello all"})
	h.rec.publish(h.base+"/bridge/request/broadcast", 1, string(payload))
	proxy.waitHeld(t)

	var copyID id.EventID
	eventually(t, 20*time.Second, func() error {
		resp, err := h.alice.cli.Messages(context.Background(), first, "", "", mautrix.DirectionBackward, nil, 20)
		if err != nil {
			return err
		}
		for _, evt := range resp.Chunk {
			if evt.Sender == h.bot.id() && evt.Type == event.EventMessage {
				copyID = evt.ID
				return nil
			}
		}
		return fmt.Errorf("no copy of the broadcast in the first room yet")
	})
	if err := h.alice.cli.SendReceipt(context.Background(), first, copyID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	read := h.rec.wait(20*time.Second, "read of the broadcast's first copy", func(m message) bool {
		return m.Topic == h.base+"/room/"+first.String()+"/read" && strings.Contains(string(m.Payload), copyID.String())
	}).json(t)
	if read["request_id"] != "bc-read" || read["user"] != h.alice.UserID {
		t.Fatalf("read %v", read)
	}
	for _, m := range h.rec.all(h.base + "/bridge/response/broadcast") {
		if strings.Contains(string(m.Payload), "bc-read") {
			t.Fatalf("the broadcast was answered though a room was held: %s", m.Payload)
		}
	}
}
