package mapping

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

func TestMemberChange(t *testing.T) {
	const a, b = id.UserID("@a:hs"), id.UserID("@b:hs")
	tests := []struct {
		name         string
		sender, user id.UserID
		prev, now    event.Membership
		want         string
	}{
		{"join", b, b, event.MembershipInvite, event.MembershipJoin, "join"},
		{"leave", b, b, event.MembershipJoin, event.MembershipLeave, "leave"},
		{"invite declined", b, b, event.MembershipInvite, event.MembershipLeave, "leave"},
		{"kick", a, b, event.MembershipJoin, event.MembershipLeave, "kick"},
		{"invite withdrawn", a, b, event.MembershipInvite, event.MembershipLeave, "kick"},
		{"ban", a, b, event.MembershipJoin, event.MembershipBan, "ban"},
		{"unban", a, b, event.MembershipBan, event.MembershipLeave, "unban"},
		{"invite", a, b, event.MembershipLeave, event.MembershipInvite, "invite"},
		{"knock", b, b, event.MembershipLeave, event.MembershipKnock, "knock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := MemberChange(tc.sender, tc.user, tc.prev, tc.now); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestLevelChanges reads the previous power levels from unsigned.prev_content, parsed or not.
func TestLevelChanges(t *testing.T) {
	raw := `{"type":"m.room.power_levels","state_key":"","event_id":"$e","room_id":"!r:hs","sender":"@a:hs",
		"content":{"users":{"@a:hs":100,"@b:hs":50},"users_default":0},
		"unsigned":{"prev_content":{"users":{"@a:hs":100,"@c:hs":20}}}}`
	var evt event.Event
	if err := json.Unmarshal([]byte(raw), &evt); err != nil {
		t.Fatal(err)
	}
	_ = evt.Content.ParseRaw(evt.Type)
	got := LevelChanges(&evt)
	if len(got) != 2 || got[0].User != "@b:hs" || got[0].From != 0 || got[0].To != 50 || got[1].User != "@c:hs" || got[1].From != 20 || got[1].To != 0 {
		t.Fatalf("changes = %+v", got)
	}
	if again := LevelChanges(&evt); len(again) != 2 {
		t.Fatalf("with prev_content parsed already: %+v", again)
	}
}

// TestPrevContentThatDoesNotParse: previous content that does not parse counts as none, however
// often and in whatever order it is looked at (mautrix's ParseRaw keeps what it half read, so a
// second look found a "ban" there, and the leave became an unban).
func TestPrevContentThatDoesNotParse(t *testing.T) {
	raw := `{"type":"m.room.member","state_key":"@b:hs","event_id":"$e","room_id":"!r:hs","sender":"@b:hs",
		"content":{"membership":"leave"},"unsigned":{"prev_content":{"membership":"ban","displayname":5}}}`
	var evt event.Event
	if err := json.Unmarshal([]byte(raw), &evt); err != nil {
		t.Fatal(err)
	}
	_ = evt.Content.ParseRaw(evt.Type)
	for i := range 2 {
		if !MembershipChanged(&evt) {
			t.Fatalf("look %d: a membership change read as a profile change", i+1)
		}
		if prev := PrevMembership(&evt); prev != event.MembershipLeave {
			t.Fatalf("look %d: previous membership %q, want leave (none)", i+1, prev)
		}
		if change := MemberChange(evt.Sender, "@b:hs", PrevMembership(&evt), event.MembershipLeave); change != "leave" {
			t.Fatalf("look %d: change %q, want leave", i+1, change)
		}
	}
}

// TestTimelinePollEnd: an org.matrix.msc3381.poll.end referencing a poll maps to a
// *wire.PollEnd without a kind; one without the reference is not mapped.
func TestTimelinePollEnd(t *testing.T) {
	tests := []struct {
		name    string
		content string
		poll    id.EventID // empty: not mapped
	}{
		{"end", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$p"},"org.matrix.msc3381.poll.end":{},"org.matrix.msc1767.text":"Ended"}`, "$p"},
		{"no relation", `{"org.matrix.msc3381.poll.end":{}}`, ""},
		{"not a reference", `{"m.relates_to":{"rel_type":"m.thread","event_id":"$p"}}`, ""},
		{"no event", `{"m.relates_to":{"rel_type":"m.reference"}}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := `{"type":"org.matrix.msc3381.poll.end","event_id":"$e","room_id":"!r:hs","sender":"@a:hs","origin_server_ts":42,"content":` + tc.content + `}`
			var evt event.Event
			if err := json.Unmarshal([]byte(raw), &evt); err != nil {
				t.Fatal(err)
			}
			_ = evt.Content.ParseRaw(evt.Type)
			kind, payload, ok := Timeline(&evt)
			if tc.poll == "" {
				if ok {
					t.Fatalf("mapped to %+v", payload)
				}
				return
			}
			end, _ := payload.(*wire.PollEnd)
			if !ok || kind != "" || end == nil || *end != (wire.PollEnd{EventID: "$e", RoomID: "!r:hs", Sender: "@a:hs", Poll: tc.poll, Timestamp: 42}) {
				t.Fatalf("mapped to %q %+v %v", kind, payload, ok)
			}
		})
	}
}
