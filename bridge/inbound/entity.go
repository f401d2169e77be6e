package inbound

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/discovery"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// The payloads of `<base>/room/<key>/event`, which feeds the Home Assistant event entity of a
// friendly-name room: the fields of the message, reaction or command, with its event_type.
type (
	messageEvent struct {
		EventType string `json:"event_type"`
		*wire.Message
	}
	reactionEvent struct {
		EventType string `json:"event_type"`
		*wire.Reaction
	}
	commandEvent struct {
		EventType string `json:"event_type"`
		*wire.Command
	}
	callbackEvent struct {
		EventType string `json:"event_type"`
		*wire.Callback
	}
)

// entityEvent returns the event entity payload of an inbound event; a message that is an
// accepted command (cmd) is shown as the command, a reaction that is an accepted answer (cb) as
// the callback. Redactions have none.
func entityEvent(ev matrix.Event, cmd *wire.Command, cb *wire.Callback) any {
	if cmd != nil {
		return commandEvent{EventType: discovery.EventCommand, Command: cmd}
	}
	if cb != nil {
		return callbackEvent{EventType: discovery.EventCallback, Callback: cb}
	}
	switch p := ev.Payload.(type) {
	case *wire.Message:
		return messageEvent{EventType: discovery.EventMessage, Message: p}
	case *wire.Reaction:
		return reactionEvent{EventType: discovery.EventReaction, Reaction: p}
	}
	return nil
}

// Names tells a room's friendly name.
type Names interface {
	Name(roomID id.RoomID) (string, bool)
}

// EntityEvents is the filter that feeds the event entity of each friendly-name room. It runs
// after Commands and Callbacks, so that an accepted command or answer is shown as such.
type EntityEvents struct {
	Names Names
}

// Inbound publishes the event entity's event.
func (f EntityEvents) Inbound(_ context.Context, ev matrix.Event, key string, out *Output) {
	if _, friendly := f.Names.Name(ev.RoomID); !friendly {
		return
	}
	if payload := entityEvent(ev, out.Command, out.Callback); payload != nil {
		out.Publish(out.Topics().Room(key, wire.KindEvent), payload)
	}
}
