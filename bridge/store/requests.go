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
	for _, e := range entries {
		if e.RequestID == "" {
			continue
		}
		_, err := s.db.Exec(ctx, `INSERT INTO matrix2mqtt_requests (action, request_id, accepted_at) VALUES ($1, $2, $3)
			ON CONFLICT (action, request_id) DO NOTHING`, e.Action, e.RequestID, millis(e.CreatedAt))
		if err != nil {
			return fmt.Errorf("failed to remember request id: %w", err)
		}
	}
	return nil
}

// saveResponse records the response of a done entry that has an id, in the caller's transaction.
func (s *Store) saveResponse(ctx context.Context, e *Entry) error {
	if e.RequestID == "" || len(e.Response) == 0 {
		return nil
	}
	_, err := s.db.Exec(ctx, "UPDATE matrix2mqtt_requests SET response=$1 WHERE action=$2 AND request_id=$3", string(e.Response), e.Action, e.RequestID)
	if err != nil {
		return fmt.Errorf("failed to save the response of request %s: %w", e.RequestID, err)
	}
	return nil
}

func (s *Store) pruneRequests(ctx context.Context, before time.Time) error {
	if _, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_requests WHERE accepted_at < $1", before.UnixMilli()); err != nil {
		return fmt.Errorf("failed to prune request ids: %w", err)
	}
	return nil
}
