package bridge

import (
	"context"

	"github.com/matrix2mqtt/matrix2mqtt/discovery"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// The payloads of `<base>/room/<key>/event`, which feeds the Home Assistant event entity of a
// friendly-name room: the fields of the message, reaction or command, with its event_type.
type (
	messageEvent struct {
		EventType string `json:"event_type"`
		*matrix.Message
	}
	reactionEvent struct {
		EventType string `json:"event_type"`
		*matrix.Reaction
	}
	commandEvent struct {
		EventType string `json:"event_type"`
		*Command
	}
)

// entityEvent returns the event entity payload of an inbound event; a message that is an
// accepted command (cmd) is shown as the command. Redactions have none.
func entityEvent(ev matrix.Event, cmd *Command) any {
	if cmd != nil {
		return commandEvent{EventType: discovery.EventCommand, Command: cmd}
	}
	switch p := ev.Payload.(type) {
	case *matrix.Message:
		return messageEvent{EventType: discovery.EventMessage, Message: p}
	case *matrix.Reaction:
		return reactionEvent{EventType: discovery.EventReaction, Reaction: p}
	}
	return nil
}

// publishExtras publishes what an inbound event brings besides its own topic: an accepted
// command on `<base>/room/<key>/command` and `<base>/command/<name>`, and, in a friendly-name
// room, the event entity's event. It returns the outbox entry of the reaction to a command, if
// the bot reacts.
func (b *Bridge) publishExtras(ctx context.Context, ev matrix.Event, key string, publish func(topic string, v any)) *entry {
	cmd, v := b.commands.check(ctx, ev)
	b.logCommand(cmd, v)
	var shown *Command
	if v == accepted {
		shown = cmd
		publish(b.topics.roomCommand(key), cmd)
		publish(b.topics.command(cmd.Command), cmd)
	}
	if _, friendly := b.keys.name(ev.RoomID); friendly {
		if payload := entityEvent(ev, shown); payload != nil {
			publish(b.topics.roomEvent(key), payload)
		}
	}
	return b.commandReaction(cmd, v)
}
