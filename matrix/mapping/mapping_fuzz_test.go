package mapping

import (
	"encoding/json"
	"slices"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// timelineTypes are the types Timeline is given in FuzzTimeline: the ones it maps, and two it
// must leave alone.
var timelineTypes = []event.Type{
	event.EventMessage, event.EventSticker, event.EventReaction, event.EventUnstablePollResponse, event.EventRedaction,
	event.StateMember, event.EventUnstablePollStart,
}

// trustStates are the trust states FuzzTimeline gives its events: only the cross-signed ones
// make a verified sender.
var trustStates = []id.TrustState{
	id.TrustStateUnset, id.TrustStateBlacklisted, id.TrustStateUnknownDevice, id.TrustStateCrossSignedUntrusted,
	id.TrustStateCrossSignedTOFU, id.TrustStateCrossSignedVerified, id.TrustStateVerified,
}

// fuzzEvent reads raw as a whole event (content, redacts, unsigned…) the way a sync hands it
// over: of type typ in a known room, its content parsed where it parses.
func fuzzEvent(raw string, typ event.Type) (*event.Event, bool) {
	evt := &event.Event{}
	if err := json.Unmarshal([]byte(raw), evt); err != nil {
		return nil, false
	}
	evt.Type, evt.ID, evt.RoomID = typ, "$e", "!r:hs"
	if evt.Sender == "" {
		evt.Sender = "@alice:hs"
	}
	_ = evt.Content.ParseRaw(typ) // an event whose content does not parse arrives unparsed
	return evt, true
}

// FuzzTimeline maps arbitrary timeline events of every type the bridge publishes (messages,
// stickers, edits, replies, media, reactions, poll responses, redactions) and some it does not:
// it never panics; an event it does not map has no payload; a mapped payload is the one its
// kind stands for, of the event's own room, ID and sender, and encodes to JSON.
func FuzzTimeline(f *testing.F) {
	seeds := []struct {
		typ   uint8
		flags uint8
		raw   string
	}{
		{0, 0, `{"content":{"msgtype":"m.text","body":"hi","format":"org.matrix.custom.html","formatted_body":"<b>hi</b>","m.mentions":{"user_ids":["@b:hs"],"room":true}}}`},
		{0, 1, `{"content":{"msgtype":"m.text","body":"* new","m.new_content":{"msgtype":"m.text","body":"new"},"m.relates_to":{"rel_type":"m.replace","event_id":"$old"}}}`},
		{0, 2, `{"content":{"msgtype":"m.text","body":"re","m.relates_to":{"rel_type":"m.thread","event_id":"$root","m.in_reply_to":{"event_id":"$r"},"is_falling_back":false}}}`},
		{0, 3, `{"content":{"msgtype":"m.image","body":"a.png","url":"mxc://hs/a","info":{"w":1,"h":2,"size":3,"mimetype":"image/png"}}}`},
		{0, 0, `{"content":{"msgtype":"m.file","body":"f","file":{"url":"mxc://hs/f","key":{"kty":"oct","alg":"A256CTR","k":"x","ext":true,"key_ops":["decrypt"]},"iv":"i","hashes":{"sha256":"h"},"v":"v2"}}}`},
		{0, 0, `{"content":{"msgtype":"m.location","body":"here","geo_uri":"geo:1,2"}}`},
		{1, 0, `{"content":{"body":"sticker","url":"mxc://hs/s","info":{"mimetype":"image/webp"}}}`},
		{2, 1, `{"content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍"}}}`},
		{2, 0, `{"content":{"m.relates_to":{"rel_type":"m.reference","event_id":"$e","key":"👍"}}}`},
		{3, 0, `{"content":{"m.relates_to":{"rel_type":"m.reference","event_id":"$poll"},"org.matrix.msc3381.poll.response":{"answers":["a","b"]}}}`},
		{3, 0, `{"content":{"m.relates_to":{"rel_type":"m.reference"},"org.matrix.msc3381.poll.response":{"answers":[]}}}`},
		{4, 0, `{"redacts":"$old","content":{"reason":"spam"}}`},
		{4, 0, `{"content":{"redacts":"$new"}}`},
		{5, 0, `{"state_key":"@b:hs","content":{"membership":"join"}}`},
		{6, 0, `{"content":{"org.matrix.msc3381.poll.start":{"question":{"body":"q"},"answers":[]}}}`},
	}
	for _, s := range seeds {
		f.Add(s.typ, s.flags, s.raw)
	}
	f.Fuzz(func(t *testing.T, typ, flags uint8, raw string) {
		evtType := timelineTypes[int(typ)%len(timelineTypes)]
		evt, ok := fuzzEvent(raw, evtType)
		if !ok {
			return
		}
		evt.Mautrix.WasEncrypted = flags&1 != 0
		evt.Mautrix.TrustState = trustStates[int(flags>>1)%len(trustStates)]
		verified := evt.Mautrix.TrustState >= id.TrustStateCrossSignedTOFU

		kind, payload, ok := Timeline(evt)
		if !ok {
			if kind != "" || payload != nil {
				t.Fatalf("not mapped, yet kind %q and payload %#v", kind, payload)
			}
			return
		}
		var room id.RoomID
		var eventID id.EventID
		var sender id.UserID
		switch p := payload.(type) {
		case *wire.Message:
			if kind != wire.KindMessage || (evtType != event.EventMessage && evtType != event.EventSticker) {
				t.Fatalf("a message of a %s event has kind %q", evtType.Type, kind)
			}
			if evtType == event.EventSticker && p.MsgType != event.EventSticker.Type {
				t.Fatalf("a sticker has msgtype %q", p.MsgType)
			}
			if p.Encrypted != evt.Mautrix.WasEncrypted || p.SenderVerified != verified {
				t.Fatalf("encrypted %v, verified %v for an event that was %v, trust %v", p.Encrypted, p.SenderVerified, evt.Mautrix.WasEncrypted, evt.Mautrix.TrustState)
			}
			room, eventID, sender = p.RoomID, p.EventID, p.Sender
		case *wire.Reaction:
			if kind != wire.KindReaction || evtType != event.EventReaction {
				t.Fatalf("a reaction of a %s event has kind %q", evtType.Type, kind)
			}
			if p.Encrypted != evt.Mautrix.WasEncrypted || p.SenderVerified != verified {
				t.Fatalf("encrypted %v, verified %v for an event that was %v, trust %v", p.Encrypted, p.SenderVerified, evt.Mautrix.WasEncrypted, evt.Mautrix.TrustState)
			}
			room, eventID, sender = p.RoomID, p.EventID, p.Sender
		case *wire.PollVote:
			// Not published on its own (no kind): it counts toward the tally of its poll.
			if kind != "" || evtType != event.EventUnstablePollResponse || p.Poll == "" {
				t.Fatalf("a poll vote of a %s event has kind %q and poll %q", evtType.Type, kind, p.Poll)
			}
			room, eventID, sender = p.RoomID, p.EventID, p.Sender
		case *wire.Redaction:
			if kind != wire.KindRedaction || evtType != event.EventRedaction {
				t.Fatalf("a redaction of a %s event has kind %q", evtType.Type, kind)
			}
			room, eventID, sender = p.RoomID, p.EventID, p.Sender
		default:
			t.Fatalf("a %s event mapped to kind %q and payload %T", evtType.Type, kind, payload)
		}
		if room != evt.RoomID || eventID != evt.ID || sender != evt.Sender {
			t.Fatalf("payload of room %q, event %q, sender %q; the event's are %q, %q, %q", room, eventID, sender, evt.RoomID, evt.ID, evt.Sender)
		}
		if _, err := json.Marshal(payload); err != nil {
			t.Fatalf("the payload does not encode: %v", err)
		}
	})
}

// memberEvent reads a member or power levels event of user (its state key) sent by sender, with
// content and, unless prev is empty, unsigned.prev_content, each parsed where it parses;
// parsedPrev parses the previous content beforehand, as a second look at the event finds it.
func memberEvent(typ event.Type, sender, user id.UserID, content, prev string, parsedPrev bool) (*event.Event, bool) {
	key := user.String()
	evt := &event.Event{Type: typ, ID: "$e", RoomID: "!r:hs", Sender: sender, StateKey: &key}
	if err := json.Unmarshal([]byte(content), &evt.Content); err != nil {
		return nil, false
	}
	_ = evt.Content.ParseRaw(typ)
	if prev != "" {
		evt.Unsigned.PrevContent = &event.Content{}
		if err := json.Unmarshal([]byte(prev), evt.Unsigned.PrevContent); err != nil {
			return nil, false
		}
		if parsedPrev {
			_ = evt.Unsigned.PrevContent.ParseRaw(typ)
		}
	}
	return evt, true
}

// FuzzMembership maps arbitrary membership events (with or without the content they replace):
// it never panics; a change of membership is told from a profile change exactly when the
// previous content says so; the change is named after the new membership, and a leave is a
// leave, a kick or an unban by who sent it and what it replaced.
func FuzzMembership(f *testing.F) {
	f.Add(`{"membership":"join","displayname":"Bob"}`, `{"membership":"invite"}`, false, false)
	f.Add(`{"membership":"join","displayname":"Bobby"}`, `{"membership":"join","displayname":"Bob"}`, true, true)
	f.Add(`{"membership":"leave","reason":"bye"}`, `{"membership":"join"}`, true, false)
	f.Add(`{"membership":"leave"}`, `{"membership":"ban"}`, false, true)
	f.Add(`{"membership":"ban","reason":"spam"}`, ``, false, false)
	f.Add(`{"membership":"knock"}`, `{"membership":7}`, true, false)
	f.Add(`{"membership":"invite"}`, `null`, false, false)
	f.Fuzz(func(t *testing.T, content, prev string, self, parsedPrev bool) {
		user, sender := id.UserID("@bob:hs"), id.UserID("@alice:hs")
		if self {
			sender = user
		}
		evt, ok := memberEvent(event.StateMember, sender, user, content, prev, parsedPrev)
		if !ok {
			return
		}
		now := evt.Content.AsMember().Membership
		before := PrevMembership(evt)
		changed := MembershipChanged(evt)
		if replaced, ok := PrevContent(evt).(*event.MemberEventContent); ok {
			if before != replaced.Membership || changed != (before != now) {
				t.Fatalf("previous membership %q (content %q), now %q: changed = %v", before, replaced.Membership, now, changed)
			}
		} else if before != event.MembershipLeave || !changed {
			t.Fatalf("without previous content: previous membership %q, changed = %v; want leave, true", before, changed)
		}
		change := MemberChange(evt.Sender, user, before, now)
		want := string(now)
		if now == event.MembershipLeave {
			switch {
			case before == event.MembershipBan:
				want = "unban"
			case !self:
				want = "kick"
			}
		}
		if change != want {
			t.Fatalf("%s → %s by %s: change %q, want %q", before, now, evt.Sender, change, want)
		}
		m := &wire.Membership{EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, User: user, Membership: now, Change: change}
		if _, err := json.Marshal(m); err != nil {
			t.Fatalf("the payload does not encode: %v", err)
		}
	})
}

// FuzzLevelChanges maps arbitrary power levels events (with or without the content they
// replace, parsed or not): it never panics, and lists each user whose level changed exactly
// once, with the levels before and after, and no one else.
func FuzzLevelChanges(f *testing.F) {
	f.Add(`{"users":{"@a:hs":100,"@b:hs":50},"users_default":0}`, `{"users":{"@a:hs":100,"@c:hs":20}}`, false)
	f.Add(`{"users":{"@a:hs":100},"users_default":10}`, `{"users":{"@a:hs":100,"@b:hs":10}}`, true)
	f.Add(`{"users":{"@a:hs":100}}`, ``, false)
	f.Add(`{"users":{"@a:hs":"100"}}`, `{"users":null}`, true)
	f.Add(`{"users":{"@a:hs":9007199254740991,"@b:hs":-9007199254740991}}`, `{"users_default":-1}`, false)
	f.Fuzz(func(t *testing.T, content, prev string, parsedPrev bool) {
		evt, ok := memberEvent(event.StatePowerLevels, "@a:hs", "", content, prev, parsedPrev)
		if !ok {
			return
		}
		changes := LevelChanges(evt)
		now := evt.Content.AsPowerLevels()
		before, ok := PrevContent(evt).(*event.PowerLevelsEventContent)
		if !ok {
			before = &event.PowerLevelsEventContent{}
		}
		var listed []id.UserID
		for _, c := range changes {
			if slices.Contains(listed, c.User) {
				t.Fatalf("%s is listed twice: %+v", c.User, changes)
			}
			listed = append(listed, c.User)
			if c.From == c.To || c.From != before.GetUserLevel(c.User) || c.To != now.GetUserLevel(c.User) {
				t.Fatalf("change %+v; the levels are %d before and %d after", c, before.GetUserLevel(c.User), now.GetUserLevel(c.User))
			}
		}
		for _, users := range []map[id.UserID]int{now.Users, before.Users} {
			for u := range users {
				if before.GetUserLevel(u) != now.GetUserLevel(u) && !slices.Contains(listed, u) {
					t.Fatalf("%s went from %d to %d but is not listed: %+v", u, before.GetUserLevel(u), now.GetUserLevel(u), changes)
				}
			}
		}
		if _, err := json.Marshal(changes); err != nil {
			t.Fatalf("the changes do not encode: %v", err)
		}
	})
}
