package matrix

import (
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix/mapping"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Event is one inbound event from another user, normalised. Payload is a *wire.Message,
// *wire.Reaction or *wire.Redaction, ready to be encoded as JSON, or a *wire.PollVote or
// *wire.PollEnd, which has no Kind: it is for the filters only.
type Event struct {
	Kind    wire.Kind
	RoomID  id.RoomID
	ID      id.EventID
	Payload any
}

// Batch is what one sync response produced.
type Batch struct {
	Events  []Event
	Notices []wire.Notice
	// Receipts are other users' public read receipts.
	Receipts []Receipt

	initial bool
	invites []*event.Event
	// tombstones are the m.room.tombstone events of joined rooms, followed after the hand-over.
	tombstones []*event.Event
	// roomsChanged is set when the joined rooms or their details changed.
	roomsChanged bool
	// undecrypted are the encrypted events of this sync that are still waiting for their keys.
	undecrypted map[id.EventID]*event.Event
}

// EventIDs returns the IDs of the batch's events, in timeline order.
func (b *Batch) EventIDs() []id.EventID {
	ids := make([]id.EventID, len(b.Events))
	for i, ev := range b.Events {
		ids[i] = ev.ID
	}
	return ids
}

// normalise maps a timeline event to an inbound Event; ok is false for events the bridge does not
// publish. Names are filled in by the caller.
func normalise(evt *event.Event) (Event, bool) {
	kind, payload, ok := mapping.Timeline(evt)
	return Event{Kind: kind, RoomID: evt.RoomID, ID: evt.ID, Payload: payload}, ok
}
