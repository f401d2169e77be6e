package e2ee

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// waitingRetention is how long an event may wait for its keys across restarts before it is
// reported as undecryptable and forgotten.
const waitingRetention = 24 * time.Hour

// errKeysNeverCame is reported for an event still waiting for its keys after waitingRetention.
var errKeysNeverCame = errors.New("its room key did not arrive within a day")

// waiting remembers the encrypted events whose keys had not arrived when the sync that brought
// them was saved. Their keys may come later, while the crypto helper waits in the background; if
// the bridge stops first, the next start tries them again instead of losing them.
type waiting struct {
	db *dbutil.Database

	mu     sync.Mutex
	events map[id.EventID]waitingEvent // the rows in the database
}

// waitingEvent is an encrypted event waiting for its room key.
type waitingEvent struct {
	RoomID id.RoomID
	Sender id.UserID
	SeenAt time.Time // when it was saved
}

func newWaiting(db *dbutil.Database) *waiting {
	return &waiting{db: db, events: map[id.EventID]waitingEvent{}}
}

// load reads the events left waiting by an earlier run.
func (w *waiting) load(ctx context.Context) error {
	rows, err := w.db.Query(ctx, "SELECT event_id, room_id, sender, seen_at FROM matrix2mqtt_undecrypted")
	if err != nil {
		return fmt.Errorf("failed to load undecrypted events: %w", err)
	}
	defer rows.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	for rows.Next() {
		var evtID id.EventID
		var e waitingEvent
		var seenAt int64
		if err := rows.Scan(&evtID, &e.RoomID, &e.Sender, &seenAt); err != nil {
			return fmt.Errorf("failed to load undecrypted events: %w", err)
		}
		e.SeenAt = time.UnixMilli(seenAt)
		w.events[evtID] = e
	}
	return rows.Err()
}

// save stores events that a sync left undecrypted.
func (w *waiting) save(ctx context.Context, events iter.Seq[*event.Event]) error {
	now := time.Now()
	saved := map[id.EventID]waitingEvent{}
	for evt := range events {
		if _, err := w.db.Exec(ctx, `
			INSERT INTO matrix2mqtt_undecrypted (event_id, room_id, sender, seen_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (event_id) DO NOTHING`, evt.ID, evt.RoomID, evt.Sender, now.UnixMilli()); err != nil {
			return fmt.Errorf("failed to save undecrypted event: %w", err)
		}
		saved[evt.ID] = waitingEvent{RoomID: evt.RoomID, Sender: evt.Sender, SeenAt: now}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for evtID, e := range saved {
		if _, ok := w.events[evtID]; !ok {
			w.events[evtID] = e
		}
	}
	return nil
}

// done forgets the events among evtIDs that were waiting: they were published or reported.
func (w *waiting) done(ctx context.Context, evtIDs ...id.EventID) error {
	w.mu.Lock()
	var forget []id.EventID
	for _, evtID := range evtIDs {
		if _, ok := w.events[evtID]; ok {
			forget = append(forget, evtID)
			delete(w.events, evtID)
		}
	}
	w.mu.Unlock()
	for _, evtID := range forget {
		if _, err := w.db.Exec(ctx, "DELETE FROM matrix2mqtt_undecrypted WHERE event_id=$1", evtID); err != nil {
			return fmt.Errorf("failed to forget undecrypted event: %w", err)
		}
	}
	return nil
}

// list returns the events that wait for their keys.
func (w *waiting) list() map[id.EventID]waitingEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.events)
}

// SaveWaiting keeps encrypted events whose keys have not come yet, so that the next start tries
// them again. It belongs in the transaction that saves the sync token which moves past them.
func (c *Crypto) SaveWaiting(ctx context.Context, events iter.Seq[*event.Event]) error {
	return c.waiting.save(ctx, events)
}

// StopWaiting forgets the events among evtIDs that waited for their keys: they were decrypted
// and handed over.
func (c *Crypto) StopWaiting(ctx context.Context, evtIDs ...id.EventID) error {
	return c.waiting.done(ctx, evtIDs...)
}

// RetryWaiting tries the events an earlier run left waiting for keys again: the keys may be in
// the crypto store by now, or come with the next syncs (the crypto helper waits for them and asks
// for them, as for any new event). Events waiting for over waitingRetention are reported as
// undecryptable.
func (c *Crypto) RetryWaiting(ctx context.Context) {
	if err := c.waiting.load(ctx); err != nil {
		c.log.Error().Err(err).Msg("Failed to load events waiting for their keys")
		return
	}
	for evtID, w := range c.waiting.list() {
		if time.Since(w.SeenAt) > waitingRetention {
			c.decryptFailed(&event.Event{ID: evtID, RoomID: w.RoomID, Sender: w.Sender}, errKeysNeverCame)
			continue
		}
		evt, err := c.opts.Client.GetEvent(ctx, w.RoomID, evtID)
		if err != nil {
			c.log.Warn().Err(err).Stringer("event_id", evtID).Msg("Failed to fetch an event waiting for its keys")
			continue
		}
		evt.RoomID = w.RoomID
		evt.Mautrix.EventSource = event.SourceJoin | event.SourceTimeline
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			c.decryptFailed(evt, fmt.Errorf("failed to parse: %w", err))
			continue
		}
		c.log.Debug().Stringer("event_id", evtID).Msg("Trying again an event that was waiting for its keys")
		// As for events from sync, a shutdown does not end the wait with a failure report.
		c.helper.HandleEncrypted(context.WithoutCancel(ctx), evt)
	}
}

// decryptFailed reports an event that could not be decrypted (by the crypto helper at once, or
// after it waited and asked for its keys; or its keys never came), and forgets it.
func (c *Crypto) decryptFailed(evt *event.Event, err error) {
	c.log.Warn().Err(err).Stringer("event_id", evt.ID).Stringer("room_id", evt.RoomID).Msg("Could not decrypt event")
	ctx := context.Background()
	c.opts.Undecryptable(ctx, evt, err)
	if err := c.waiting.done(ctx, evt.ID); err != nil {
		c.log.Error().Err(err).Msg("Failed to forget an undecryptable event")
	}
}
