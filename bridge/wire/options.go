package wire

import "maunium.net/go/mautrix/id"

// KindCallback carries an allowed answer to a message sent with `options`.
const KindCallback Kind = "callback"

// Option is one answer offered by a message sent with `options`: the reaction key that picks it
// and its label.
type Option struct {
	Key   string `json:"key"`
	Label string `json:"label"`
}

// Callback is the payload of `<base>/room/<key>/callback`: an allowed user picked an option by
// reacting with its key.
type Callback struct {
	// EventID is the message that offered the options.
	EventID id.EventID `json:"event_id"`
	RoomID  id.RoomID  `json:"room_id"`
	// RequestID is the `id` of the send request that offered the options.
	RequestID      string     `json:"request_id,omitempty"`
	Option         string     `json:"option"`
	Label          string     `json:"label"`
	Sender         id.UserID  `json:"sender"`
	SenderName     string     `json:"sender_name"`
	SenderVerified bool       `json:"sender_verified"`
	ReactionID     id.EventID `json:"reaction_id"`
	Timestamp      int64      `json:"ts"`
}
