package matrix

import (
	"context"
	"github.com/matrix2mqtt/matrix2mqtt/matrix/mapping"

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
		if !mapping.MembershipChanged(evt) {
			return Event{}, false
		}
		content := evt.Content.AsMember()
		m.User, m.Membership, m.Reason = id.UserID(evt.GetStateKey()), content.Membership, content.Reason
		m.Change = mapping.MemberChange(evt.Sender, m.User, mapping.PrevMembership(evt), content.Membership)
	case event.StatePowerLevels:
		m.Change = "power_levels"
		m.Levels = mapping.LevelChanges(evt)
	default:
		return Event{}, false
	}
	return Event{Kind: wire.KindMembership, RoomID: evt.RoomID, ID: evt.ID, Payload: m}, true
}
