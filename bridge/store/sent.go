package store

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"
)

// The matrix2mqtt_sent and matrix2mqtt_reads tables: the messages the bridge sent with the
// requests that sent them, and which users read them.

// ReadRetention is how long sent messages are watched for reads.
const ReadRetention = 7 * 24 * time.Hour

// SentMessage is a message the bridge sent.
type SentMessage struct {
	EventID   id.EventID
	RequestID string
	SentAt    time.Time
}

// Sent is a message a request sent, recorded when the request is finished (Entry.Sent).
type Sent struct {
	RoomID    id.RoomID
	EventID   id.EventID
	RequestID string
	SentAt    time.Time
	// Editable: a text message of send, which `"edit": "last"` may replace.
	Editable bool
}

// insertSent records sent messages, in the caller's transaction.
func (s *Store) insertSent(ctx context.Context, sent []Sent) error {
	err := s.insertRows(ctx, "matrix2mqtt_sent (event_id, room_id, request_id, sent_at, editable)", "ON CONFLICT (event_id) DO NOTHING", 5, len(sent),
		func(i int, args []any) []any {
			return append(args, sent[i].EventID, sent[i].RoomID, sent[i].RequestID, sent[i].SentAt.UnixMilli(), sent[i].Editable)
		})
	if err != nil {
		return fmt.Errorf("failed to record %d sent messages: %w", len(sent), err)
	}
	return nil
}

// RecordSent records messages of a request that is not finished yet (a broadcast's rooms, as
// each is done), so that their reads count at once; finishing the request records them again,
// which changes nothing.
func (s *Store) RecordSent(ctx context.Context, sent []Sent) error {
	defer s.lockWrites()()
	if err := s.insertSent(ctx, sent); err != nil {
		return err
	}
	s.reads.recorded(sent)
	return nil
}

// ReadUpTo records that user read roomID up to evtID (a receipt) or up to until (a receipt on an
// event the bridge did not send, or a message of theirs), and returns the bridge's messages that
// this read covers for the first time, oldest first.
//
// It only reads unless a message is covered, so the inbound path does not write for every
// message of every room. The inbound path calls it from one goroutine.
func (s *Store) ReadUpTo(ctx context.Context, roomID id.RoomID, user id.UserID, evtID id.EventID, until time.Time) ([]SentMessage, error) {
	gen := s.reads.generation(roomID)
	if s.reads.readAll(roomID, user, gen) {
		return nil, nil
	}
	out, bound, err := s.unread(ctx, roomID, user, evtID, until)
	if err != nil {
		return nil, err
	}
	if err := s.noteAllRead(ctx, roomID, user, bound, gen); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, nil
	}
	defer s.lockWrites()()
	now := s.clock.Now().UnixMilli()
	err = s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for _, m := range out {
			if _, err := s.db.Exec(ctx, "INSERT INTO matrix2mqtt_reads (event_id, user_id, read_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
				m.EventID, user, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to record a read: %w", err)
	}
	return out, nil
}

// noteAllRead remembers (for ReadUpTo) that user has read everything sent into roomID as of
// generation gen, when nothing was sent there after bound, the end of the read just recorded.
func (s *Store) noteAllRead(ctx context.Context, roomID id.RoomID, user id.UserID, bound int64, gen uint64) error {
	var later bool
	err := s.db.QueryRow(ctx, "SELECT EXISTS(SELECT 1 FROM matrix2mqtt_sent WHERE room_id=$1 AND sent_at > $2)", roomID, bound).Scan(&later)
	if err != nil {
		return fmt.Errorf("failed to look up reads: %w", err)
	}
	if !later {
		s.reads.markAllRead(roomID, user, gen)
	}
	return nil
}

// unread returns the messages that a read up to evtID (or until) covers and user has not read,
// and the end of that read (sent_at, Unix ms).
func (s *Store) unread(ctx context.Context, roomID id.RoomID, user id.UserID, evtID id.EventID, until time.Time) ([]SentMessage, int64, error) {
	bound := until.UnixMilli()
	if evtID != "" {
		var sentAt int64
		if err := s.db.QueryRow(ctx, "SELECT sent_at FROM matrix2mqtt_sent WHERE event_id=$1 AND room_id=$2", evtID, roomID).Scan(&sentAt); err == nil {
			bound = sentAt
		}
	}
	rows, err := s.db.Query(ctx, `SELECT event_id, request_id, sent_at FROM matrix2mqtt_sent
		WHERE room_id=$1 AND sent_at <= $2
		AND NOT EXISTS (SELECT 1 FROM matrix2mqtt_reads r WHERE r.event_id=matrix2mqtt_sent.event_id AND r.user_id=$3)
		ORDER BY sent_at`, roomID, bound, user)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to look up reads: %w", err)
	}
	defer rows.Close()
	var out []SentMessage
	for rows.Next() {
		var m SentMessage
		var sentAt int64
		if err := rows.Scan(&m.EventID, &m.RequestID, &sentAt); err != nil {
			return nil, 0, fmt.Errorf("failed to look up reads: %w", err)
		}
		m.SentAt = fromMillis(sentAt)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("failed to look up reads: %w", err)
	}
	return out, bound, nil
}

func (s *Store) pruneSent(ctx context.Context, before time.Time) error {
	if _, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_sent WHERE sent_at < $1", before.UnixMilli()); err != nil {
		return fmt.Errorf("failed to prune sent messages: %w", err)
	}
	if _, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_reads WHERE read_at < $1", before.UnixMilli()); err != nil {
		return fmt.Errorf("failed to prune reads: %w", err)
	}
	return nil
}
