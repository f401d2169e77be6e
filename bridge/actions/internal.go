package actions

import (
	"context"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Names of the internal actions, queued by the bridge itself.
const (
	// ActionAutoRedact carries out `redact_after_s`.
	ActionAutoRedact = "auto_redact"
	// ActionCommandReact is the bot's ✅/⛔ reaction to a chat command.
	ActionCommandReact = "command_react"
	// ActionCloseOptions closes a single_use message once it was answered.
	ActionCloseOptions = "close_options"
)

// Internal are the actions the bridge queues itself; they have no request topic and no response.
var Internal = []Spec{
	{Name: ActionAutoRedact, Help: "redacts a message once its redact_after_s has passed",
		New: func() Request { return &AutoRedact{} }, Internal: true, Scheduled: true},
	{Name: ActionCommandReact, Help: "reacts to a chat command with ✅ or ⛔",
		New: func() Request { return &CommandReact{} }, Internal: true},
	{Name: ActionCloseOptions, Help: "redacts the bot's reactions to an answered single_use message and says who answered",
		New: func() Request { return &CloseOptions{} }, Internal: true},
}

// AutoRedact redacts an event the bridge sent.
type AutoRedact struct {
	RoomID  id.RoomID  `json:"room_id"`
	EventID id.EventID `json:"event_id"`
}

// RequestID is empty: nobody waits for the answer.
func (r *AutoRedact) RequestID() string { return "" }

// Validate accepts what the bridge built.
func (r *AutoRedact) Validate(Targets) *wire.Error { return nil }

// Lane keeps each redaction apart, so it does not hold back other requests while it waits.
func (r *AutoRedact) Lane() string { return "redact_after/" + r.EventID.String() }

// Deliver redacts the event.
func (r *AutoRedact) Deliver(ctx context.Context, d *Delivery) (any, error) {
	_, err := d.Matrix.Redact(ctx, r.RoomID, r.EventID, "redact_after_s", d.TxnID)
	return nil, err
}

// CommandReact reacts to a command. Its fields are those of a react request, as stored by
// earlier versions.
type CommandReact struct {
	To      string     `json:"to"`
	EventID id.EventID `json:"event_id"`
	Key     string     `json:"key"`
}

// RequestID is empty: nobody waits for the answer.
func (r *CommandReact) RequestID() string { return "" }

// Validate accepts what the bridge built.
func (r *CommandReact) Validate(Targets) *wire.Error { return nil }

// commandReactTTL is how long a command reaction may wait in the outbox: a late ✅ would only
// confuse.
const commandReactTTL = 10 * time.Minute

// ExpireAfter drops a reaction that could not be sent in time.
func (r *CommandReact) ExpireAfter() time.Duration { return commandReactTTL }

// Lane is the command's room, so reactions keep the commands' order.
func (r *CommandReact) Lane() string { return r.To }

// Deliver sends the reaction.
func (r *CommandReact) Deliver(ctx context.Context, d *Delivery) (any, error) {
	content := &event.ReactionEventContent{RelatesTo: *(&event.RelatesTo{}).SetAnnotation(r.EventID, r.Key)}
	_, err := d.Matrix.Send(ctx, id.RoomID(r.To), event.EventReaction, content, d.TxnID)
	return nil, err
}
