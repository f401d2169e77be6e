package bridge

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// entry is one durable request in the outbox.
type entry struct {
	ID        int64
	Action    string
	Lane      string
	Request   json.RawMessage
	TxnID     string
	CreatedAt time.Time
	// ExpiresAt, when set, is when the request is answered `expired` instead of delivered.
	ExpiresAt time.Time
	// NotBefore, when set, is when a scheduled entry (an auto-redaction) becomes due.
	NotBefore time.Time
	// MQTTKey identifies the MQTT message the entry came from (see mqttKey).
	MQTTKey string
	// inDoubt is set when the entry may have reached the homeserver without the bridge
	// learning of it: found in the outbox at start, or after a failure that may have happened
	// after the homeserver took the request. It is closed once a sync that would echo the event
	// was handed over.
	inDoubt <-chan struct{}
}

// mqttKey identifies an MQTT message well enough to recognise its redelivery: the packet ID
// (the same on a redelivery) and a hash of topic and payload.
func mqttKey(packetID uint16, topic string, payload []byte) string {
	h := sha256.New()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(payload)
	return fmt.Sprintf("%d:%x", packetID, h.Sum(nil)[:12])
}

// seen reports whether the MQTT message with this key is in the outbox or was done lately.
func (o *outbox) seen(ctx context.Context, key string) (bool, error) {
	var found bool
	err := o.db.QueryRow(ctx, `SELECT EXISTS(SELECT 1 FROM matrix2mqtt_outbox WHERE mqtt_key=$1)
		OR EXISTS(SELECT 1 FROM matrix2mqtt_done WHERE mqtt_key=$1)`, key).Scan(&found)
	if err != nil {
		return false, fmt.Errorf("failed to look up redelivered message: %w", err)
	}
	return found, nil
}

// outbox is the table of requests that were acknowledged to the broker but not yet answered.
type outbox struct {
	db *dbutil.Database
	// writes serialises the outbox's write transactions on SQLite (nil on PostgreSQL). There a
	// transaction that finds the database locked sleeps in SQLite's busy handler (1 ms, 2 ms,
	// 5 ms…) instead of starting when the lock is free; lanes finishing at once wait on this
	// mutex instead, which hands over at once.
	writes *sync.Mutex
	// queue holds the entries waiting in finish for the next group commit (SQLite).
	queueMu sync.Mutex
	queue   []*finishing
}

func newOutbox(db *dbutil.Database, sqlite bool) *outbox {
	o := &outbox{db: db}
	if sqlite {
		o.writes = &sync.Mutex{}
	}
	return o
}

// lockWrites takes the write lock (on SQLite) and returns its unlock.
func (o *outbox) lockWrites() func() {
	if o.writes == nil {
		return func() {}
	}
	o.writes.Lock()
	return o.writes.Unlock
}

func newTxnID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "m2m" + hex.EncodeToString(b[:])
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// add stores entries in one transaction and sets their IDs.
func (o *outbox) add(ctx context.Context, entries []*entry) error {
	defer o.lockWrites()()
	return o.insert(ctx, entries)
}

// insert is add, in the caller's transaction if there is one.
func (o *outbox) insert(ctx context.Context, entries []*entry) error {
	err := o.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for start := 0; start < len(entries); start += insertChunk {
			if err := o.insertChunk(ctx, entries[start:min(start+insertChunk, len(entries))]); err != nil {
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

// insertChunk is the number of entries stored by one INSERT statement.
const insertChunk = 64

// insertChunk stores entries with one multi-row INSERT and sets their IDs, which it matches by
// transaction ID: the order of RETURNING rows is not defined.
func (o *outbox) insertChunk(ctx context.Context, entries []*entry) error {
	const columns = 8
	var query strings.Builder
	query.WriteString("INSERT INTO matrix2mqtt_outbox (action, lane, request, txn_id, created_at, expires_at, not_before, mqtt_key) VALUES ")
	args := make([]any, 0, len(entries)*columns)
	byTxn := make(map[string]*entry, len(entries))
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
		args = append(args, e.Action, e.Lane, string(e.Request), e.TxnID, millis(e.CreatedAt), millis(e.ExpiresAt), millis(e.NotBefore), e.MQTTKey)
		byTxn[e.TxnID] = e
	}
	query.WriteString(" RETURNING id, txn_id")
	rows, err := o.db.Query(ctx, query.String(), args...)
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

// doneRetention is how long the keys of done MQTT messages are remembered.
const doneRetention = 24 * time.Hour

// finish deletes a done entry, remembers its MQTT key, and adds its follow-ups (a scheduled
// redaction), in one transaction. On SQLite, where write transactions run one at a time anyway,
// lanes that finish while another's transaction runs are committed together in the next one
// (group commit): one transaction and two statements for all of them instead of per entry.
func (o *outbox) finish(ctx context.Context, e *entry, now time.Time, followUps []*entry) error {
	f := &finishing{e: e, now: now, followUps: followUps, done: make(chan error, 1)}
	if o.writes == nil {
		return o.finishTxn(ctx, []*finishing{f})
	}
	o.queueMu.Lock()
	o.queue = append(o.queue, f)
	o.queueMu.Unlock()
	o.writes.Lock()
	o.queueMu.Lock()
	batch := o.queue
	o.queue = nil
	o.queueMu.Unlock()
	if len(batch) > 0 { // else an earlier holder of the lock committed f already
		err := o.finishTxn(ctx, batch)
		for _, g := range batch {
			g.done <- err
		}
	}
	o.writes.Unlock()
	return <-f.done
}

// finishing is one entry waiting in finish.
type finishing struct {
	e         *entry
	now       time.Time
	followUps []*entry
	done      chan error
}

func (o *outbox) finishTxn(ctx context.Context, batch []*finishing) error {
	err := o.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for chunk := range slices.Chunk(batch, sqlChunk) {
			var ids, keys []any
			var idMarks, keyMarks []string
			for _, f := range chunk {
				ids = append(ids, f.e.ID)
				idMarks = append(idMarks, fmt.Sprintf("$%d", len(ids)))
				if f.e.MQTTKey != "" {
					keys = append(keys, f.e.MQTTKey, f.now.UnixMilli())
					keyMarks = append(keyMarks, fmt.Sprintf("($%d, $%d)", len(keys)-1, len(keys)))
				}
			}
			if _, err := o.db.Exec(ctx, "DELETE FROM matrix2mqtt_outbox WHERE id IN ("+strings.Join(idMarks, ",")+")", ids...); err != nil {
				return err
			}
			if len(keys) > 0 {
				if _, err := o.db.Exec(ctx, "INSERT INTO matrix2mqtt_done (mqtt_key, done_at) VALUES "+strings.Join(keyMarks, ", ")+" ON CONFLICT (mqtt_key) DO NOTHING", keys...); err != nil {
					return err
				}
			}
		}
		for _, f := range batch {
			if len(f.followUps) > 0 {
				if err := o.insert(ctx, f.followUps); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		if len(batch) == 1 {
			return fmt.Errorf("failed to finish outbox entry %d: %w", batch[0].e.ID, err)
		}
		return fmt.Errorf("failed to finish %d outbox entries: %w", len(batch), err)
	}
	return nil
}

// pending returns every entry, oldest first.
func (o *outbox) pending(ctx context.Context) ([]*entry, error) {
	rows, err := o.db.Query(ctx, `
		SELECT id, action, lane, request, txn_id, created_at, expires_at, not_before, mqtt_key
		FROM matrix2mqtt_outbox ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("failed to load the outbox: %w", err)
	}
	defer rows.Close()
	var out []*entry
	for rows.Next() {
		var e entry
		var request string
		var created, expires, notBefore int64
		if err := rows.Scan(&e.ID, &e.Action, &e.Lane, &request, &e.TxnID, &created, &expires, &notBefore, &e.MQTTKey); err != nil {
			return nil, fmt.Errorf("failed to load the outbox: %w", err)
		}
		e.Request = json.RawMessage(request)
		e.CreatedAt, e.ExpiresAt, e.NotBefore = fromMillis(created), fromMillis(expires), fromMillis(notBefore)
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to load the outbox: %w", err)
	}
	return out, nil
}

// inboundRetention is how long published inbound event IDs are remembered.
const inboundRetention = 24 * time.Hour

// unpublished returns the IDs among ids that were not published yet.
func (o *outbox) unpublished(ctx context.Context, ids []id.EventID) (map[id.EventID]bool, error) {
	out := make(map[id.EventID]bool, len(ids))
	for _, evtID := range ids {
		out[evtID] = true
	}
	// One query per chunk rather than per event: a sync response can carry hundreds.
	for chunk := range slices.Chunk(ids, sqlChunk) {
		args := make([]any, len(chunk))
		marks := make([]string, len(chunk))
		for i, evtID := range chunk {
			args[i], marks[i] = evtID, fmt.Sprintf("$%d", i+1)
		}
		rows, err := o.db.Query(ctx, "SELECT event_id FROM matrix2mqtt_inbound WHERE event_id IN ("+strings.Join(marks, ",")+")", args...)
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

// sqlChunk is how many rows one statement reads or writes at most.
const sqlChunk = 200

// markPublished remembers ids as published and forgets those older than inboundRetention.
func (o *outbox) markPublished(ctx context.Context, ids []id.EventID, now time.Time) error {
	defer o.lockWrites()()
	err := o.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for chunk := range slices.Chunk(ids, sqlChunk) {
			args := []any{now.UnixMilli()}
			values := make([]string, len(chunk))
			for i, evtID := range chunk {
				args = append(args, evtID)
				values[i] = fmt.Sprintf("($%d, $1)", i+2)
			}
			if _, err := o.db.Exec(ctx, "INSERT INTO matrix2mqtt_inbound (event_id, published_at) VALUES "+strings.Join(values, ", ")+" ON CONFLICT (event_id) DO NOTHING", args...); err != nil {
				return err
			}
		}
		if _, err := o.db.Exec(ctx, "DELETE FROM matrix2mqtt_inbound WHERE published_at < $1", now.Add(-inboundRetention).UnixMilli()); err != nil {
			return err
		}
		_, err := o.db.Exec(ctx, "DELETE FROM matrix2mqtt_done WHERE done_at < $1", now.Add(-doneRetention).UnixMilli())
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to remember published events: %w", err)
	}
	return nil
}
