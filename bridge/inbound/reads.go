package inbound

import (
	"context"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// ReadStore records which of the bridge's messages each user read.
type ReadStore interface {
	ReadUpTo(ctx context.Context, roomID id.RoomID, user id.UserID, evtID id.EventID, until time.Time) ([]store.SentMessage, error)
}

// ReceiptFilter is a filter that also sees the read receipts of a batch.
type ReceiptFilter interface {
	Receipts(ctx context.Context, receipts []matrix.Receipt, keys Keys, out *Output)
}

// Reads is the filter that publishes `<base>/room/<key>/read` once per user and message the
// bridge sent, when the user's public read receipt or a later message of theirs covers it.
type Reads struct {
	store ReadStore
}

// NewReads prepares the read filter.
func NewReads(s ReadStore) *Reads { return &Reads{store: s} }

// Inbound treats a message as its sender's read of everything before it.
func (f *Reads) Inbound(ctx context.Context, ev matrix.Event, key string, out *Output) {
	msg, ok := ev.Payload.(*wire.Message)
	if !ok {
		return
	}
	f.read(ctx, ev.RoomID, msg.Sender, "", time.UnixMilli(msg.Timestamp), key, out)
}

// Receipts publishes the reads that receipts cover.
func (f *Reads) Receipts(ctx context.Context, receipts []matrix.Receipt, keys Keys, out *Output) {
	for _, r := range receipts {
		f.read(ctx, r.RoomID, r.User, r.EventID, r.Timestamp, keys.Key(r.RoomID), out)
	}
}

func (f *Reads) read(ctx context.Context, roomID id.RoomID, user id.UserID, evtID id.EventID, until time.Time, key string, out *Output) {
	read, err := f.store.ReadUpTo(ctx, roomID, user, evtID, until)
	if err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Stringer("room_id", roomID).Stringer("user", user).Msg("Failed to record a read")
		return
	}
	for _, m := range read {
		out.Publish(out.Topics().Room(key, wire.KindRead), &wire.Read{
			EventID: m.EventID, RoomID: roomID, RequestID: m.RequestID, User: user, Timestamp: until.UnixMilli(),
		})
	}
}
