package matrix

import (
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Receipt is another user's public read receipt: user read roomID up to EventID at Timestamp.
// Private receipts (m.read.private) reach only their owner, so the bridge never sees them.
type Receipt struct {
	RoomID    id.RoomID
	EventID   id.EventID
	User      id.UserID
	Timestamp time.Time
}

// receipts are the public m.read receipts of an m.receipt event, but the bot's own.
func (c *Client) receipts(evt *event.Event) []Receipt {
	content, ok := evt.Content.Parsed.(*event.ReceiptEventContent)
	if !ok {
		return nil
	}
	var out []Receipt
	for evtID, types := range *content {
		for user, r := range types[event.ReceiptTypeRead] {
			if user != c.cli.UserID {
				out = append(out, Receipt{RoomID: evt.RoomID, EventID: evtID, User: user, Timestamp: r.Timestamp})
			}
		}
	}
	return out
}
