package matrix

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// undecryptedRetention is how long an event may wait for its keys across restarts before it is
// reported as undecryptable and forgotten.
const undecryptedRetention = 24 * time.Hour

// errKeysNeverCame is reported for an event still waiting for its keys after undecryptedRetention.
var errKeysNeverCame = errors.New("its room key did not arrive within a day")

// undecrypted remembers the encrypted events whose keys had not arrived when the sync that
// brought them was saved. Their keys may come later, while the bridge waits in the background;
// if the bridge stops first, the next start tries them again instead of losing them.
type undecrypted struct {
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

func newUndecrypted(db *dbutil.Database) *undecrypted {
	return &undecrypted{db: db, events: map[id.EventID]waitingEvent{}}
}

// load reads the events left waiting by an earlier run.
func (u *undecrypted) load(ctx context.Context) error {
	rows, err := u.db.Query(ctx, "SELECT event_id, room_id, sender, seen_at FROM matrix2mqtt_undecrypted")
	if err != nil {
		return fmt.Errorf("failed to load undecrypted events: %w", err)
	}
	defer rows.Close()
	u.mu.Lock()
	defer u.mu.Unlock()
	for rows.Next() {
		var evtID id.EventID
		var w waitingEvent
		var seenAt int64
		if err := rows.Scan(&evtID, &w.RoomID, &w.Sender, &seenAt); err != nil {
			return fmt.Errorf("failed to load undecrypted events: %w", err)
		}
		w.SeenAt = time.UnixMilli(seenAt)
		u.events[evtID] = w
	}
	return rows.Err()
}

// save stores events that a sync left undecrypted; it runs with the sync token's save.
func (u *undecrypted) save(ctx context.Context, events map[id.EventID]waitingEvent) error {
	now := time.Now()
	for evtID, w := range events {
		if _, err := u.db.Exec(ctx, `
			INSERT INTO matrix2mqtt_undecrypted (event_id, room_id, sender, seen_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (event_id) DO NOTHING`, evtID, w.RoomID, w.Sender, now.UnixMilli()); err != nil {
			return fmt.Errorf("failed to save undecrypted event: %w", err)
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for evtID, w := range events {
		if _, ok := u.events[evtID]; !ok {
			w.SeenAt = now
			u.events[evtID] = w
		}
	}
	return nil
}

// done forgets the events among evtIDs that were waiting: they were published or reported.
func (u *undecrypted) done(ctx context.Context, evtIDs ...id.EventID) error {
	u.mu.Lock()
	var waiting []id.EventID
	for _, evtID := range evtIDs {
		if _, ok := u.events[evtID]; ok {
			waiting = append(waiting, evtID)
			delete(u.events, evtID)
		}
	}
	u.mu.Unlock()
	for _, evtID := range waiting {
		if _, err := u.db.Exec(ctx, "DELETE FROM matrix2mqtt_undecrypted WHERE event_id=$1", evtID); err != nil {
			return fmt.Errorf("failed to forget undecrypted event: %w", err)
		}
	}
	return nil
}

// waiting returns the events that wait for their keys.
func (u *undecrypted) waiting() map[id.EventID]waitingEvent {
	u.mu.Lock()
	defer u.mu.Unlock()
	return maps.Clone(u.events)
}

// retryUndecrypted tries the events an earlier run left waiting for keys again: the keys may be
// in the crypto store by now, or come with the next syncs (the crypto helper waits for them and
// asks for them, as for any new event). Events waiting for over undecryptedRetention are
// reported as undecryptable.
func (c *Client) retryUndecrypted(ctx context.Context) {
	if err := c.undecrypted.load(ctx); err != nil {
		c.log.Error().Err(err).Msg("Failed to load events waiting for their keys")
		return
	}
	for evtID, w := range c.undecrypted.waiting() {
		if time.Since(w.SeenAt) > undecryptedRetention {
			c.decryptFailed(&event.Event{ID: evtID, RoomID: w.RoomID, Sender: w.Sender}, errKeysNeverCame)
			continue
		}
		evt, err := c.cli.GetEvent(ctx, w.RoomID, evtID)
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
		c.e2ee.helper.HandleEncrypted(context.WithoutCancel(ctx), evt)
	}
}
