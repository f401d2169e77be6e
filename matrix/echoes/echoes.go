// Package echoes remembers the transaction IDs of the bot's own events seen in sync, in memory
// and with the sync token in the database, so that a send in flight at a crash is still known as
// sent.
package echoes

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// maxEchoes bounds the transaction IDs kept in memory; older ones are looked up in the database.
const maxEchoes = 4096

// echoRetention is how long the transaction ID of an echo is kept in the database: longer than a
// request can wait in the outbox.
const echoRetention = 7 * 24 * time.Hour

// echoPruneEvery is how often echoes older than echoRetention are deleted.
const echoPruneEvery = time.Hour

// Echoes maps the transaction IDs of the bot's own events, seen in sync, to their event IDs. They
// are saved with the sync token that moves past them, so that after a crash a request that was in
// flight is still known as sent even when the sync that echoed it will not come again.
type Echoes struct {
	db *dbutil.Database

	mu       sync.Mutex
	ids      map[string]id.EventID
	order    []string
	unsaved  map[string]id.EventID
	prunedAt time.Time
}

// New keeps echoes in db, whose matrix2mqtt_echo table the matrix package's schema creates.
func New(db *dbutil.Database) *Echoes {
	return &Echoes{db: db, ids: map[string]id.EventID{}, unsaved: map[string]id.EventID{}}
}

// Add records that sync echoed txnID as evtID.
func (e *Echoes) Add(txnID string, evtID id.EventID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.ids[txnID]; ok {
		return
	}
	if len(e.order) == maxEchoes {
		delete(e.ids, e.order[0])
		e.order = e.order[1:]
	}
	e.ids[txnID] = evtID
	e.order = append(e.order, txnID)
	e.unsaved[txnID] = evtID
}

// Get returns the event sync echoed for txnID, in this run or an earlier one.
func (e *Echoes) Get(ctx context.Context, txnID string) (id.EventID, bool) {
	e.mu.Lock()
	evtID, ok := e.ids[txnID]
	e.mu.Unlock()
	if ok {
		return evtID, true
	}
	err := e.db.QueryRow(ctx, "SELECT event_id FROM matrix2mqtt_echo WHERE txn_id=$1", txnID).Scan(&evtID)
	return evtID, err == nil
}

// SaveWithToken stores the echoes not saved yet and the sync token (save) in one transaction.
func (e *Echoes) SaveWithToken(ctx context.Context, save func(context.Context) error) error {
	e.mu.Lock()
	batch := e.unsaved
	e.unsaved = map[string]id.EventID{}
	prune := time.Since(e.prunedAt) > echoPruneEvery
	e.mu.Unlock()
	if len(batch) == 0 && !prune {
		return save(ctx)
	}
	now := time.Now()
	err := e.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for txnID, evtID := range batch {
			if _, err := e.db.Exec(ctx, `
				INSERT INTO matrix2mqtt_echo (txn_id, event_id, seen_at) VALUES ($1, $2, $3)
				ON CONFLICT (txn_id) DO NOTHING`, txnID, evtID, now.UnixMilli()); err != nil {
				return fmt.Errorf("failed to save echo: %w", err)
			}
		}
		if prune {
			if _, err := e.db.Exec(ctx, "DELETE FROM matrix2mqtt_echo WHERE seen_at < $1", now.Add(-echoRetention).UnixMilli()); err != nil {
				return fmt.Errorf("failed to prune echoes: %w", err)
			}
		}
		return save(ctx)
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		for txnID, evtID := range batch { // keep them for the next attempt
			e.unsaved[txnID] = evtID
		}
		return err
	}
	if prune {
		e.prunedAt = now
	}
	return nil
}
