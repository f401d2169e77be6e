package actions

import (
	"context"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
)

// The stores and results that more than one family of actions uses.

// KeyStore remembers the friendly names create_room gives, across restarts.
type KeyStore interface {
	SaveRoomKey(ctx context.Context, key string, roomID id.RoomID) error
}

// PollStore remembers the polls the bridge started and their votes.
type PollStore interface {
	SavePoll(ctx context.Context, p store.Poll) error
	Poll(ctx context.Context, evtID id.EventID) (store.Poll, bool, error)
	Votes(ctx context.Context, pollID id.EventID) (map[id.UserID][]string, error)
	EndPoll(ctx context.Context, pollID id.EventID, at time.Time) (bool, error)
}

// RoomResult is the data of the room actions and of resolve.
type RoomResult struct {
	RoomID  id.RoomID `json:"room_id"`
	Key     string    `json:"key,omitempty"`
	Created *bool     `json:"created,omitempty"`
	// Changed tells, for ensure_encrypted, whether encryption was off.
	Changed *bool `json:"changed,omitempty"`
}
