// Package outbox delivers durable requests: committed before they are acknowledged, run in
// order per lane, retried with backoff while failures may pass, never sent twice after a crash
// that left them in doubt, answered `expired` when too late, and answered before they are
// removed.
package outbox

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/metrics"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

// resumeDelay holds back the requests found in the outbox at start that were due. The head of
// each lane may have been in flight when the bridge stopped; a homeserver that is still working
// on it would not recognise the retry's transaction ID yet (Dendrite, for one, records it only
// when the first request finishes) and would deliver the message twice.
const resumeDelay = 3 * time.Second

// Syncer tells what the Matrix sync has seen of the bridge's own sends.
type Syncer interface {
	// NextSync is closed once the next sync was handed over.
	NextSync() <-chan struct{}
	// SentWithTxn tells from the echoes seen in sync whether a transaction ID was sent already.
	SentWithTxn(ctx context.Context, txnID string) (id.EventID, bool)
	// Healthy tells whether sync works now, and HealthySince when it last started working.
	Healthy() bool
	HealthySince() time.Time
}

// Responder answers requests on MQTT.
type Responder interface {
	Respond(ctx context.Context, action, requestID string, data any, err *wire.Error)
}

// Deps are what the outbox works with.
type Deps struct {
	Store    *store.Store
	Registry *actions.Registry
	// Env is what requests are delivered against; its Outbox is set to the outbox.
	Env       actions.Env
	Sync      Syncer
	Responder Responder
	Counters  *stats.Stats
	Clock     clock.Clock
	// MaxAge is OUTBOX_MAX_AGE: how long a request may wait at most.
	MaxAge time.Duration
	// Ready is closed once Matrix is logged in; nothing is delivered before.
	Ready <-chan struct{}
	// Metrics counts answers, deliveries and retries (nil counts nothing).
	Metrics *metrics.Metrics
}

// Outbox delivers the durable requests.
type Outbox struct {
	Deps
	lanes *lanes
	// work is the context of every lane, set by Open.
	work context.Context
	log  zerolog.Logger
	// asleep counts lanes that wait for a retry or a scheduled time, which a shutdown need not
	// wait for.
	asleep atomic.Int64
	// answered is when the latest request that the homeserver answered was sent (Unix ns):
	// evidence that it did not go down then (doubt.go).
	answered atomic.Int64

	flushMu sync.Mutex
	flushCh chan struct{} // closed and replaced by Flush

	// live are the entries started and not finished, for outbox_cancel; those a lane did not
	// keep in memory are only in the store until it reads them (loadLane).
	liveMu sync.Mutex
	live   map[int64]*Entry
	// loadMu keeps outbox_cancel and the lanes' reads of the store apart: an entry is either
	// read by its lane or cancelled in the store, never both.
	loadMu sync.Mutex

	watchMu sync.Mutex
	watch   func(ctx context.Context, action, requestID string, response json.RawMessage)
}

// Watch sets fn to be called with the kept response of each request with an id, once it is
// recorded as done: for the repeats of a request that were taken while it was pending.
func (o *Outbox) Watch(fn func(ctx context.Context, action, requestID string, response json.RawMessage)) {
	o.watchMu.Lock()
	defer o.watchMu.Unlock()
	o.watch = fn
}

// finished tells the watcher that e is done.
func (o *Outbox) finished(ctx context.Context, e *Entry) {
	if e.RequestID == "" || len(e.Response) == 0 {
		return
	}
	o.watchMu.Lock()
	fn := o.watch
	o.watchMu.Unlock()
	if fn != nil {
		fn(ctx, e.Action, e.RequestID, e.Response)
	}
}

// Entry is one outbox entry being delivered.
type Entry struct {
	store.Entry
	spec actions.Spec
	// inDoubt is set when the entry may have reached the homeserver without the bridge
	// learning of it: found in the outbox at start, or after a failure that may have happened
	// after the homeserver took the request. It is closed once a sync that would echo the event
	// was handed over.
	inDoubt <-chan struct{}
	// state tells an attempt under way from a cancelled entry.
	state entryState
	// req is the stored request, once deliver decoded it.
	req actions.Request
	// resumedAt is when Open found the entry due, left by the last run: its first attempt waits
	// resumeDelay from then, and its doubt dates from then.
	resumedAt time.Time
}

// New prepares the outbox; Open starts it.
func New(d Deps) *Outbox {
	o := &Outbox{Deps: d, flushCh: make(chan struct{}), live: map[int64]*Entry{}}
	o.Env.Outbox = o
	o.lanes = newLanes(o.deliver, o.loadLane, o.track)
	return o
}

// Open resumes the entries left in the outbox by the last run; ctx is the context of all
// delivery work from now on. It must be called before Add.
func (o *Outbox) Open(ctx context.Context) error {
	o.work = ctx
	o.log = zerolog.Ctx(ctx).With().Str("component", "outbox").Logger()
	now := o.Clock.Now()
	count := 0
	err := o.Store.EachPending(ctx, func(row *store.Entry) {
		e := &Entry{Entry: *row}
		e.spec, _ = o.Registry.Spec(e.Action)
		// An entry due later than now was never tried by the last run, which stopped before now:
		// it goes out on time. Any other may have been in flight.
		if !e.NotBefore.After(now) {
			e.resumedAt, e.inDoubt = now, o.Sync.NextSync()
		}
		o.Start([]*Entry{e}) // a long lane keeps the first ones and reads the rest later
		count++
	})
	if err != nil {
		return err
	}
	if count > 0 {
		o.log.Info().Int("count", count).Msg("Resuming requests from the outbox")
	}
	return nil
}

// Job is a durable request to add to the outbox.
type Job struct {
	Action  string
	Request actions.Durable
	// TxnID is the transaction ID of its event; empty means a new random one.
	TxnID string
	// NotBefore, when set, is when the request becomes due.
	NotBefore time.Time
	// ExpiresAt, when set, overrides the request's own expire_s.
	ExpiresAt time.Time
	// MQTTKey identifies the MQTT message it came from (see MQTTKey).
	MQTTKey string
}

// NewEntry makes the outbox entry of a job, received now.
func (o *Outbox) NewEntry(j Job) (*Entry, error) {
	raw, err := json.Marshal(j.Request)
	if err != nil {
		return nil, fmt.Errorf("failed to encode %s request: %w", j.Action, err)
	}
	spec, ok := o.Registry.Spec(j.Action)
	if !ok {
		return nil, fmt.Errorf("failed to queue a request: unknown action %q", j.Action)
	}
	now := o.Clock.Now()
	lane := j.Request.Lane()
	if strings.HasPrefix(lane, "!") && o.Env.Targets != nil {
		// An upgraded room's requests queue behind those for its replacement, and vice versa.
		lane = o.Env.Targets.Follow(id.RoomID(lane)).String()
	}
	e := &Entry{spec: spec, Entry: store.Entry{
		Action: j.Action, Lane: lane, Request: raw, TxnID: j.TxnID, CreatedAt: now,
		NotBefore: j.NotBefore, ExpiresAt: j.ExpiresAt, MQTTKey: j.MQTTKey,
	}}
	if e.TxnID == "" {
		e.TxnID = newTxnID()
	}
	due := now
	if timed, ok := j.Request.(actions.Timed); ok && j.NotBefore.IsZero() {
		at, werr := timed.Due(now)
		if werr != nil {
			return nil, errors.New(werr.Message)
		}
		if at.After(now) {
			due, e.NotBefore, e.Lane = at, at, timedLane(e.TxnID, e.Lane)
		}
	}
	if !spec.Internal {
		e.RequestID = j.Request.RequestID()
	}
	if exp, ok := j.Request.(actions.Expiring); ok && e.ExpiresAt.IsZero() {
		if after := exp.ExpireAfter(); after > 0 {
			e.ExpiresAt = due.Add(after)
		}
	}
	return e, nil
}

// Repeat is an entry Add did not commit: a request with its action and id was accepted within
// store.RequestRetention, or comes earlier in the same call.
type Repeat struct {
	Entry *Entry
	// Response is the first request's kept response, empty while it is pending.
	Response json.RawMessage
}

// Add commits entries to the outbox in one transaction, but for the repeats it returns; Start
// then delivers the others.
func (o *Outbox) Add(ctx context.Context, entries []*Entry) ([]Repeat, error) {
	rows := make([]*store.Entry, len(entries))
	byRow := make(map[*store.Entry]*Entry, len(entries))
	for i, e := range entries {
		rows[i] = &e.Entry
		byRow[rows[i]] = e
	}
	stored, err := o.Store.Add(ctx, rows)
	if err != nil {
		return nil, err
	}
	repeats := make([]Repeat, len(stored))
	for i, r := range stored {
		repeats[i] = Repeat{Entry: byRow[r.Entry], Response: r.Response}
	}
	return repeats, nil
}

// Start hands committed entries to their lanes. A lane keeps maxQueued entries in memory; it
// reads the others from the store when it gets to them (loadLane).
func (o *Outbox) Start(entries []*Entry) {
	for _, e := range entries {
		if isTimed(e.Lane) {
			o.Counters.EnqueuedTimed(e.ID)
		} else {
			o.Counters.Enqueued(e.ID, e.CreatedAt, e.spec.Scheduled)
		}
		o.lanes.push(o.work, e)
	}
}

// track records an entry its lane holds in memory, for outbox_cancel.
func (o *Outbox) track(e *Entry) {
	o.liveMu.Lock()
	defer o.liveMu.Unlock()
	o.live[e.ID] = e
}

// loadLane reads the next entries of a lane from the store, for a lane that did not keep them.
func (o *Outbox) loadLane(ctx context.Context, lane string, limit int) ([]*Entry, error) {
	o.loadMu.Lock()
	defer o.loadMu.Unlock()
	rows, err := o.Store.Lane(ctx, lane, limit)
	if err != nil {
		o.log.Error().Err(err).Str("lane", lane).Msg("Failed to read the outbox; retrying")
		return nil, err
	}
	entries := make([]*Entry, len(rows))
	for i, row := range rows {
		e := &Entry{Entry: *row}
		e.spec, _ = o.Registry.Spec(e.Action)
		entries[i] = e
		o.track(e)
	}
	return entries, nil
}

// Enqueue makes entries of jobs, commits and starts them.
func (o *Outbox) Enqueue(ctx context.Context, jobs ...Job) error {
	entries := make([]*Entry, 0, len(jobs))
	for _, j := range jobs {
		e, err := o.NewEntry(j)
		if err != nil {
			return err
		}
		entries = append(entries, e)
	}
	repeats, err := o.Add(ctx, entries)
	if err != nil {
		return err
	}
	o.Start(WithoutRepeats(entries, repeats))
	return nil
}

// WithoutRepeats returns entries without the repeats Add returned for them.
func WithoutRepeats(entries []*Entry, repeats []Repeat) []*Entry {
	if len(repeats) == 0 {
		return entries
	}
	skip := make(map[*Entry]bool, len(repeats))
	for _, r := range repeats {
		skip[r.Entry] = true
	}
	fresh := make([]*Entry, 0, len(entries)-len(repeats))
	for _, e := range entries {
		if !skip[e] {
			fresh = append(fresh, e)
		}
	}
	return fresh
}

// Flush makes every lane that waits to retry try again now.
func (o *Outbox) Flush() {
	o.flushMu.Lock()
	close(o.flushCh)
	o.flushCh = make(chan struct{})
	o.flushMu.Unlock()
}

// Stats returns the delivery figures.
func (o *Outbox) Stats() wire.Stats { return o.Counters.Snapshot() }

// Drain blocks until no lane does work (each is idle, or only waits for a retry or a scheduled
// time) or ctx ends; it reports whether that happened.
func (o *Outbox) Drain(ctx context.Context) bool { return o.lanes.drain(ctx, &o.asleep) }

// Wait blocks until every lane stopped; call it after the work context ended.
func (o *Outbox) Wait() { o.lanes.wait() }

// Seen reports whether the MQTT message with this key was taken already.
func (o *Outbox) Seen(ctx context.Context, mqttKey string) (bool, error) {
	return o.Store.Seen(ctx, mqttKey)
}

// Accepted returns the requests of action among ids taken lately, with their response (JSON),
// empty while pending: see store.Accepted.
func (o *Outbox) Accepted(ctx context.Context, action string, ids []string) (map[string]json.RawMessage, error) {
	return o.Store.Accepted(ctx, action, ids)
}

func newTxnID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "m2m" + hex.EncodeToString(b[:])
}

// MQTTKey identifies an MQTT message well enough to recognise its redelivery: the packet ID
// (the same on a redelivery) and a hash of topic and payload.
func MQTTKey(packetID uint16, topic string, payload []byte) string {
	h := sha256.New()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(payload)
	return fmt.Sprintf("%d:%x", packetID, h.Sum(nil)[:12])
}
