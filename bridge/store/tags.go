package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"
)

// The matrix2mqtt_tags table: the message of each tag in each room. The empty tag stands for
// the bridge's last message in the room, from matrix2mqtt_sent.

// Tagged is a message the bridge sent with a tag.
type Tagged struct {
	EventID id.EventID
	SentAt  time.Time
}

// Tag returns the message of tag in roomID; ok is false when there is none.
func (s *Store) Tag(ctx context.Context, roomID id.RoomID, tag string) (t Tagged, ok bool, err error) {
	var sentAt int64
	query := "SELECT event_id, sent_at FROM matrix2mqtt_tags WHERE room_id=$1 AND tag=$2"
	if tag == "" {
		query = "SELECT event_id, sent_at FROM matrix2mqtt_sent WHERE room_id=$1 AND editable AND $2='' ORDER BY sent_at DESC LIMIT 1"
	}
	err = s.db.QueryRow(ctx, query, roomID, tag).Scan(&t.EventID, &sentAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Tagged{}, false, nil
	}
	if err != nil {
		return Tagged{}, false, fmt.Errorf("failed to look up tag: %w", err)
	}
	t.SentAt = fromMillis(sentAt)
	return t, true, nil
}

// SetTag makes evtID, sent at sentAt, the message of tag in roomID.
func (s *Store) SetTag(ctx context.Context, roomID id.RoomID, tag string, evtID id.EventID, sentAt time.Time) error {
	defer s.lockWrites()()
	_, err := s.db.Exec(ctx, `INSERT INTO matrix2mqtt_tags (room_id, tag, event_id, sent_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (room_id, tag) DO UPDATE SET event_id=excluded.event_id, sent_at=excluded.sent_at`,
		roomID, tag, evtID, sentAt.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to save tag: %w", err)
	}
	return nil
}

// ForgetTag forgets the message of tag in roomID, if it is still evtID.
func (s *Store) ForgetTag(ctx context.Context, roomID id.RoomID, tag string, evtID id.EventID) error {
	defer s.lockWrites()()
	_, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_tags WHERE room_id=$1 AND tag=$2 AND event_id=$3", roomID, tag, evtID)
	if err != nil {
		return fmt.Errorf("failed to forget tag: %w", err)
	}
	return nil
}
