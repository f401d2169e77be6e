package matrix

import (
	"context"
	"errors"
	"maps"
	"slices"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// membershipEvent maps a membership or power level change in a joined room's timeline to an
// inbound event on `<base>/room/<key>/membership`; ok is false for profile changes and other
// state.
func (c *Client) membershipEvent(ctx context.Context, evt *event.Event) (Event, bool) {
	m := &wire.Membership{
		EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Timestamp: evt.Timestamp,
		RoomName: c.rooms.name(evt.RoomID), SenderName: c.displayName(ctx, evt.RoomID, evt.Sender),
	}
	switch evt.Type {
	case event.StateMember:
		if !membershipChanged(evt) {
			return Event{}, false
		}
		content := evt.Content.AsMember()
		m.User, m.Membership, m.Reason = id.UserID(evt.GetStateKey()), content.Membership, content.Reason
		m.Change = memberChange(evt.Sender, m.User, prevMembership(evt), content.Membership)
	case event.StatePowerLevels:
		m.Change = "power_levels"
		m.Levels = levelChanges(evt)
	default:
		return Event{}, false
	}
	return Event{Kind: wire.KindMembership, RoomID: evt.RoomID, ID: evt.ID, Payload: m}, true
}

// memberChange names a membership change: join, invite, knock, ban, leave (by the user
// themself), kick (by someone else) or unban.
func memberChange(sender, user id.UserID, prev, now event.Membership) string {
	if now != event.MembershipLeave {
		return string(now)
	}
	switch {
	case prev == event.MembershipBan:
		return "unban"
	case sender != user:
		return "kick"
	}
	return "leave"
}

func prevMembership(evt *event.Event) event.Membership {
	if prev, ok := prevContent(evt).(*event.MemberEventContent); ok {
		return prev.Membership
	}
	return event.MembershipLeave
}

// prevContent returns the parsed content the state event replaced, or nil.
func prevContent(evt *event.Event) any {
	prev := evt.Unsigned.PrevContent
	if prev == nil {
		return nil
	}
	if err := prev.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
		return nil
	}
	return prev.Parsed
}

// levelChanges lists the users whose power level a power levels event changed, by user ID.
func levelChanges(evt *event.Event) []wire.LevelChange {
	now := evt.Content.AsPowerLevels()
	before, ok := prevContent(evt).(*event.PowerLevelsEventContent)
	if !ok {
		before = &event.PowerLevelsEventContent{}
	}
	users := slices.Sorted(maps.Keys(now.Users))
	for u := range before.Users {
		if _, ok := now.Users[u]; !ok {
			users = append(users, u)
		}
	}
	var out []wire.LevelChange
	for _, u := range users {
		if from, to := before.GetUserLevel(u), now.GetUserLevel(u); from != to {
			out = append(out, wire.LevelChange{User: u, From: from, To: to})
		}
	}
	return out
}
