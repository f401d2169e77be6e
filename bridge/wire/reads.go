package wire

import "maunium.net/go/mautrix/id"

// KindRead carries a user's read of a message the bridge sent.
const KindRead Kind = "read"

// Read is the payload of `<base>/room/<key>/read`: user read the message event_id that the
// request request_id sent, as their public read receipt or a later message of theirs showed.
type Read struct {
	EventID   id.EventID `json:"event_id"`
	RoomID    id.RoomID  `json:"room_id"`
	RequestID string     `json:"request_id,omitempty"`
	User      id.UserID  `json:"user"`
	// Timestamp is when the read was seen: the receipt's time, or the time of the message.
	Timestamp int64 `json:"ts"`
}
