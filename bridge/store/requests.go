package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// The matrix2mqtt_requests table: the ids of requests taken into the outbox lately, with their
// response once they are done. A request that arrives again with the same action and id is not
// run again: a broker may hand a message over again as a new one (with a new packet ID), and an
// automation may repeat itself.

// RequestRetention is how long the ids of accepted requests, and their responses, are kept.
const RequestRetention = 24 * time.Hour

// Accepted returns the requests of action among ids that were accepted within
// RequestRetention, with their response (JSON), which is empty while the request is pending.
func (s *Store) Accepted(ctx context.Context, action string, ids []string) (map[string]json.RawMessage, error) {
	found := map[string]json.RawMessage{}
	for chunk := range slices.Chunk(ids, sqlChunk) {
		args := make([]any, 0, len(chunk)+1)
		args = append(args, action)
		for _, id := range chunk {
			args = append(args, id)
		}
		rows, err := s.db.Query(ctx, "SELECT request_id, response FROM matrix2mqtt_requests WHERE action=$1 AND request_id IN ("+marks(2, len(chunk))+")", args...)
		if err != nil {
			return nil, fmt.Errorf("failed to look up request ids: %w", err)
		}
		for rows.Next() {
			var id, response string
			if err := rows.Scan(&id, &response); err != nil {
				rows.Close()
				return nil, fmt.Errorf("failed to look up request ids: %w", err)
			}
			found[id] = json.RawMessage(response)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("failed to look up request ids: %w", err)
		}
	}
	return found, nil
}

// insertRequestIDs remembers the ids of entries that have one, in the caller's transaction.
func (s *Store) insertRequestIDs(ctx context.Context, entries []*Entry) error {
	withID := make([]*Entry, 0, len(entries))
	for _, e := range entries {
		if e.RequestID != "" {
			withID = append(withID, e)
		}
	}
	err := s.insertRows(ctx, "matrix2mqtt_requests (action, request_id, accepted_at)", "ON CONFLICT (action, request_id) DO NOTHING", 3, len(withID),
		func(i int, args []any) []any {
			return append(args, withID[i].Action, withID[i].RequestID, millis(withID[i].CreatedAt))
		})
	if err != nil {
		return fmt.Errorf("failed to remember request ids: %w", err)
	}
	return nil
}

// saveResponses records the responses of done entries that have an id, in the caller's
// transaction.
func (s *Store) saveResponses(ctx context.Context, batch []*finishing) error {
	answered := make([]*Entry, 0, len(batch))
	for _, f := range batch {
		if f.e.RequestID != "" && len(f.e.Response) > 0 {
			answered = append(answered, f.e)
		}
	}
	err := s.insertRows(ctx, "matrix2mqtt_requests (action, request_id, accepted_at, response)",
		"ON CONFLICT (action, request_id) DO UPDATE SET response=excluded.response", 4, len(answered),
		func(i int, args []any) []any {
			e := answered[i]
			return append(args, e.Action, e.RequestID, millis(e.CreatedAt), string(e.Response))
		})
	if err != nil {
		return fmt.Errorf("failed to save the responses of %d requests: %w", len(answered), err)
	}
	return nil
}

func (s *Store) pruneRequests(ctx context.Context, before time.Time) error {
	if _, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_requests WHERE accepted_at < $1", before.UnixMilli()); err != nil {
		return fmt.Errorf("failed to prune request ids: %w", err)
	}
	return nil
}
