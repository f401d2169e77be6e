package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.mau.fi/util/dbutil"
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

// requestKey is a request's action and id.
type requestKey struct{ action, id string }

// claimRequestIDs remembers the request ids of entries, in the caller's transaction, and sorts
// out the repeats: fresh are the entries to store, in their order.
func (s *Store) claimRequestIDs(ctx context.Context, entries []*Entry) (fresh []*Entry, repeats []Repeat, err error) {
	first := map[requestKey]*Entry{}
	var claims []*Entry
	for _, e := range entries {
		if e.RequestID == "" {
			continue
		}
		key := requestKey{e.Action, e.RequestID}
		if first[key] == nil {
			first[key] = e
			claims = append(claims, e)
		}
	}
	claimed := make(map[requestKey]bool, len(claims))
	err = s.insertRowsReturning(ctx, "matrix2mqtt_requests (action, request_id, accepted_at)",
		"ON CONFLICT (action, request_id) DO NOTHING RETURNING action, request_id", 3, len(claims),
		func(i int, args []any) []any {
			return append(args, claims[i].Action, claims[i].RequestID, millis(claims[i].CreatedAt))
		},
		func(row dbutil.Scannable) error {
			var key requestKey
			err := row.Scan(&key.action, &key.id)
			claimed[key] = true
			return err
		})
	if err != nil {
		return nil, nil, fmt.Errorf("failed to remember request ids: %w", err)
	}
	known, err := s.keptResponses(ctx, claims, claimed)
	if err != nil {
		return nil, nil, err
	}
	fresh = make([]*Entry, 0, len(entries))
	for _, e := range entries {
		key := requestKey{e.Action, e.RequestID}
		if e.RequestID == "" || (first[key] == e && claimed[key]) {
			fresh = append(fresh, e)
			continue
		}
		repeats = append(repeats, Repeat{Entry: e, Response: known[key]})
	}
	return fresh, repeats, nil
}

// keptResponses reads the responses of the claims that were accepted before (not in claimed).
func (s *Store) keptResponses(ctx context.Context, claims []*Entry, claimed map[requestKey]bool) (map[requestKey]json.RawMessage, error) {
	byAction := map[string][]string{}
	for _, e := range claims {
		if !claimed[requestKey{e.Action, e.RequestID}] {
			byAction[e.Action] = append(byAction[e.Action], e.RequestID)
		}
	}
	known := map[requestKey]json.RawMessage{}
	for action, ids := range byAction {
		found, err := s.Accepted(ctx, action, ids)
		if err != nil {
			return nil, err
		}
		for id, response := range found {
			known[requestKey{action, id}] = response
		}
	}
	return known, nil
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

// Claim is the outcome of ClaimRequest.
type Claim struct {
	// Claimed: this request is the first with its action and id within RequestRetention.
	Claimed bool
	// Response is the first's response; empty while it runs (or if the bridge stopped while it
	// ran). AcceptedAt is when the first was accepted.
	Response   json.RawMessage
	AcceptedAt time.Time
}

// ClaimRequest remembers that a request of an action that runs once per id (an immediate one
// that changes Matrix, such as create_room) was accepted at at, unless one with the same action
// and id was accepted within RequestRetention: then it returns that one's response and time.
func (s *Store) ClaimRequest(ctx context.Context, action, id string, at time.Time) (Claim, error) {
	defer s.lockWrites()()
	res, err := s.db.Exec(ctx, `INSERT INTO matrix2mqtt_requests (action, request_id, accepted_at) VALUES ($1, $2, $3)
		ON CONFLICT (action, request_id) DO NOTHING`, action, id, millis(at))
	if err != nil {
		return Claim{}, fmt.Errorf("failed to remember a request id: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return Claim{}, fmt.Errorf("failed to remember a request id: %w", err)
	} else if n == 1 {
		return Claim{Claimed: true, AcceptedAt: at}, nil
	}
	var response string
	var acceptedAt int64
	err = s.db.QueryRow(ctx, "SELECT response, accepted_at FROM matrix2mqtt_requests WHERE action=$1 AND request_id=$2", action, id).
		Scan(&response, &acceptedAt)
	if err != nil {
		return Claim{}, fmt.Errorf("failed to read a request id: %w", err)
	}
	return Claim{Response: json.RawMessage(response), AcceptedAt: fromMillis(acceptedAt)}, nil
}

// ForgetRequest drops the claim of a request that never ran, so that a repeat runs.
func (s *Store) ForgetRequest(ctx context.Context, action, id string) error {
	defer s.lockWrites()()
	if _, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_requests WHERE action=$1 AND request_id=$2 AND response=''", action, id); err != nil {
		return fmt.Errorf("failed to forget a request id: %w", err)
	}
	return nil
}

// KeepResponse records the response (JSON) of a request claimed with ClaimRequest.
func (s *Store) KeepResponse(ctx context.Context, action, id string, response json.RawMessage) error {
	defer s.lockWrites()()
	if _, err := s.db.Exec(ctx, "UPDATE matrix2mqtt_requests SET response=$1 WHERE action=$2 AND request_id=$3",
		string(response), action, id); err != nil {
		return fmt.Errorf("failed to keep a response: %w", err)
	}
	return nil
}
