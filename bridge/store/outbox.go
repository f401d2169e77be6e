package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"
)

// The matrix2mqtt_outbox table: requests acknowledged to the broker and not yet answered.

// Entry is one row of the outbox.
type Entry struct {
	ID        int64
	Action    string
	Lane      string
	Request   json.RawMessage
	TxnID     string
	CreatedAt time.Time
	// ExpiresAt, when set, is when the request is answered `expired` instead of delivered.
	ExpiresAt time.Time
	// NotBefore, when set, is when the entry becomes due.
	NotBefore time.Time
	// MQTTKey identifies the MQTT message the entry came from, to recognise its redelivery.
	MQTTKey string
	// Progress is what the request's steps have done so far (JSON), empty before the first.
	Progress json.RawMessage
	// RequestID is the request's `id`: Add remembers it (matrix2mqtt_requests) and keeps it
	// with the entry, for outbox_cancel.
	RequestID string
	// Response is the response (JSON) Finish keeps for RequestID, so a repeat gets it.
	Response json.RawMessage
	// Sent are the messages the request sent, which Finish records (matrix2mqtt_sent).
	Sent []Sent
}

// insertChunk is the number of entries stored by one INSERT statement.
const insertChunk = 64

// Repeat is an entry Add did not store: a request with the same action and id was accepted
// within RequestRetention, or comes earlier in the same call.
type Repeat struct {
	Entry *Entry
	// Response is the first request's kept response, empty while it is pending.
	Response json.RawMessage
}

// Add stores entries in one transaction and sets their IDs, remembering their request ids; it
// returns the repeats, which it does not store.
func (s *Store) Add(ctx context.Context, entries []*Entry) ([]Repeat, error) {
	defer s.lockWrites()()
	var repeats []Repeat
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		fresh, r, err := s.claimRequestIDs(ctx, entries)
		if err != nil {
			return err
		}
		repeats = r
		return s.insert(ctx, fresh)
	})
	if err != nil {
		return nil, err
	}
	return repeats, nil
}

// insert is Add, in the caller's transaction if there is one.
func (s *Store) insert(ctx context.Context, entries []*Entry) error {
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for chunk := range slices.Chunk(entries, insertChunk) {
			if err := s.insertChunk(ctx, chunk); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to add %d requests to the outbox: %w", len(entries), err)
	}
	return nil
}

// insertChunk stores entries with one multi-row INSERT and sets their IDs, which it matches by
// transaction ID: the order of RETURNING rows is not defined.
func (s *Store) insertChunk(ctx context.Context, entries []*Entry) error {
	const columns = 10
	var query strings.Builder
	query.WriteString("INSERT INTO matrix2mqtt_outbox (action, lane, request, txn_id, created_at, expires_at, not_before, mqtt_key, progress, request_id) VALUES ")
	args := make([]any, 0, len(entries)*columns)
	byTxn := make(map[string]*Entry, len(entries))
	for i, e := range entries {
		if i > 0 {
			query.WriteString(", ")
		}
		query.WriteByte('(')
		for c := range columns {
			if c > 0 {
				query.WriteString(", ")
			}
			query.WriteByte('$')
			query.WriteString(strconv.Itoa(i*columns + c + 1))
		}
		query.WriteByte(')')
		args = append(args, e.Action, e.Lane, string(e.Request), e.TxnID, millis(e.CreatedAt), millis(e.ExpiresAt),
			millis(e.NotBefore), e.MQTTKey, string(e.Progress), e.RequestID)
		byTxn[e.TxnID] = e
	}
	query.WriteString(" RETURNING id, txn_id")
	rows, err := s.db.Query(ctx, query.String(), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var rowID int64
		var txnID string
		if err := rows.Scan(&rowID, &txnID); err != nil {
			return err
		}
		if e := byTxn[txnID]; e != nil {
			e.ID = rowID
			delete(byTxn, txnID)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(byTxn) > 0 {
		return fmt.Errorf("%d inserted requests came back without an ID", len(byTxn))
	}
	return nil
}

// SaveProgress records what entry id's steps have done so far.
func (s *Store) SaveProgress(ctx context.Context, id int64, progress json.RawMessage) error {
	defer s.lockWrites()()
	if _, err := s.db.Exec(ctx, "UPDATE matrix2mqtt_outbox SET progress=$1 WHERE id=$2", string(progress), id); err != nil {
		return fmt.Errorf("failed to save the progress of outbox entry %d: %w", id, err)
	}
	return nil
}

// Finish deletes a done entry, remembers its MQTT key, its response and the messages it sent,
// and adds its follow-ups (a scheduled redaction), in one transaction. On SQLite, where write transactions run one at a time anyway,
// entries that finish while another's transaction runs are committed together in the next one
// (group commit): one transaction and two statements for all of them instead of per entry.
func (s *Store) Finish(ctx context.Context, e *Entry, followUps []*Entry) error {
	f := &finishing{e: e, now: s.clock.Now(), followUps: followUps, done: make(chan error, 1)}
	if s.writes == nil {
		return s.finishTxn(ctx, []*finishing{f})
	}
	s.finishMu.Lock()
	s.finishing = append(s.finishing, f)
	s.finishMu.Unlock()
	s.writes.Lock()
	s.finishMu.Lock()
	batch := s.finishing
	s.finishing = nil
	s.finishMu.Unlock()
	if len(batch) > 0 { // else an earlier holder of the lock committed f already
		err := s.finishTxn(ctx, batch)
		for _, g := range batch {
			g.done <- err
		}
	}
	s.writes.Unlock()
	return <-f.done
}

// finishing is one entry waiting in Finish.
type finishing struct {
	e         *Entry
	now       time.Time
	followUps []*Entry
	done      chan error
}

func (s *Store) finishTxn(ctx context.Context, batch []*finishing) error {
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for chunk := range slices.Chunk(batch, sqlChunk) {
			ids := make([]any, len(chunk))
			var keys []string
			for i, f := range chunk {
				ids[i] = f.e.ID
				if f.e.MQTTKey != "" {
					keys = append(keys, f.e.MQTTKey)
				}
			}
			if _, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_outbox WHERE id IN ("+marks(1, len(ids))+")", ids...); err != nil {
				return err
			}
			if err := s.insertDone(ctx, keys, chunk[0].now); err != nil {
				return err
			}
		}
		if err := s.saveResponses(ctx, batch); err != nil {
			return err
		}
		var sent []Sent
		var followUps []*Entry
		for _, f := range batch {
			sent = append(sent, f.e.Sent...)
			followUps = append(followUps, f.followUps...)
		}
		if err := s.insertSent(ctx, sent); err != nil {
			return err
		}
		if len(followUps) > 0 {
			return s.insert(ctx, followUps)
		}
		return nil
	})
	if err != nil {
		if len(batch) == 1 {
			return fmt.Errorf("failed to finish outbox entry %d: %w", batch[0].e.ID, err)
		}
		return fmt.Errorf("failed to finish %d outbox entries: %w", len(batch), err)
	}
	for _, f := range batch {
		s.reads.recorded(f.e.Sent)
	}
	return nil
}

// entryColumns are the columns scanned into an Entry, in scanEntries' order.
const entryColumns = "id, action, lane, request, txn_id, created_at, expires_at, not_before, mqtt_key, progress, request_id"

// Pending returns every entry, oldest first.
func (s *Store) Pending(ctx context.Context) ([]*Entry, error) {
	var out []*Entry
	err := s.EachPending(ctx, func(e *Entry) { out = append(out, e) })
	return out, err
}

// EachPending hands every entry to fn, oldest first, one row at a time: an outbox of many
// entries is not read into memory at once.
func (s *Store) EachPending(ctx context.Context, fn func(*Entry)) error {
	rows, err := s.db.Query(ctx, "SELECT "+entryColumns+" FROM matrix2mqtt_outbox ORDER BY id")
	if err != nil {
		return fmt.Errorf("failed to load the outbox: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return err
		}
		fn(e)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("failed to load the outbox: %w", err)
	}
	return nil
}

// Lane returns up to limit entries of lane, oldest first.
func (s *Store) Lane(ctx context.Context, lane string, limit int) ([]*Entry, error) {
	rows, err := s.db.Query(ctx, "SELECT "+entryColumns+" FROM matrix2mqtt_outbox WHERE lane=$1 ORDER BY id LIMIT $2", lane, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to load the outbox: %w", err)
	}
	return scanEntries(rows)
}

// Waiting returns the entries of requests with this id, oldest first.
func (s *Store) Waiting(ctx context.Context, requestID string) ([]*Entry, error) {
	rows, err := s.db.Query(ctx, "SELECT "+entryColumns+" FROM matrix2mqtt_outbox WHERE request_id=$1 ORDER BY id", requestID)
	if err != nil {
		return nil, fmt.Errorf("failed to load the outbox: %w", err)
	}
	return scanEntries(rows)
}

// scanEntries reads outbox rows of entryColumns and closes them.
func scanEntries(rows dbutil.Rows) ([]*Entry, error) {
	defer rows.Close()
	var out []*Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to load the outbox: %w", err)
	}
	return out, nil
}

// scanEntry reads one outbox row of entryColumns.
func scanEntry(row dbutil.Scannable) (*Entry, error) {
	var e Entry
	var request, progress string
	var created, expires, notBefore int64
	if err := row.Scan(&e.ID, &e.Action, &e.Lane, &request, &e.TxnID, &created, &expires, &notBefore, &e.MQTTKey, &progress, &e.RequestID); err != nil {
		return nil, fmt.Errorf("failed to load the outbox: %w", err)
	}
	e.Request = json.RawMessage(request)
	if progress != "" {
		e.Progress = json.RawMessage(progress)
	}
	e.CreatedAt, e.ExpiresAt, e.NotBefore = fromMillis(created), fromMillis(expires), fromMillis(notBefore)
	return &e, nil
}
