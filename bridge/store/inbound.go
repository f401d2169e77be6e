package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"
)

// The matrix2mqtt_inbound table: inbound events already handed to the broker, so a sync replayed
// after a crash is not published twice. Kept for InboundRetention.

// Unpublished returns the IDs among ids that were not published yet.
func (s *Store) Unpublished(ctx context.Context, ids []id.EventID) (map[id.EventID]bool, error) {
	out := make(map[id.EventID]bool, len(ids))
	for _, evtID := range ids {
		out[evtID] = true
	}
	// One query per chunk rather than per event: a sync response can carry hundreds.
	for chunk := range slices.Chunk(ids, sqlChunk) {
		args := make([]any, len(chunk))
		for i, evtID := range chunk {
			args[i] = evtID
		}
		rows, err := s.db.Query(ctx, "SELECT event_id FROM matrix2mqtt_inbound WHERE event_id IN ("+marks(1, len(chunk))+")", args...)
		if err != nil {
			return nil, fmt.Errorf("failed to check published events: %w", err)
		}
		for rows.Next() {
			var evtID id.EventID
			if err := rows.Scan(&evtID); err != nil {
				rows.Close()
				return nil, fmt.Errorf("failed to check published events: %w", err)
			}
			out[evtID] = false
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("failed to check published events: %w", err)
		}
	}
	return out, nil
}

// MarkPublished remembers ids as published.
func (s *Store) MarkPublished(ctx context.Context, ids []id.EventID) error {
	now := s.clock.Now()
	defer s.lockWrites()()
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for chunk := range slices.Chunk(ids, sqlChunk) {
			args := []any{now.UnixMilli()}
			values := make([]string, len(chunk))
			for i, evtID := range chunk {
				args = append(args, evtID)
				values[i] = fmt.Sprintf("($%d, $1)", i+2)
			}
			if _, err := s.db.Exec(ctx, "INSERT INTO matrix2mqtt_inbound (event_id, published_at) VALUES "+strings.Join(values, ", ")+" ON CONFLICT (event_id) DO NOTHING", args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to remember published events: %w", err)
	}
	return nil
}

func (s *Store) pruneInbound(ctx context.Context, before time.Time) error {
	if _, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_inbound WHERE published_at < $1", before.UnixMilli()); err != nil {
		return fmt.Errorf("failed to prune published events: %w", err)
	}
	return nil
}
