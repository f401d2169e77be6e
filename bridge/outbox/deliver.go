package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// retryBase and retryLimit bound the backoff between delivery attempts.
const (
	retryBase  = time.Second
	retryLimit = 5 * time.Minute
)

// inDoubtWait bounds the wait for a sync before a request in doubt is sent again, and
// inDoubtMaxWait that wait while sync is down.
const (
	inDoubtWait    = 30 * time.Second
	inDoubtMaxWait = 2 * time.Minute
)

// inDoubtGrace is how long after sync works again a request in doubt waits for its echo.
const inDoubtGrace = 5 * time.Second

// deliver works on one entry until it is answered or ctx ends (then it stays in the outbox for
// the next start): it waits for Matrix, for a scheduled time, retries what may pass with
// backoff, and answers expired requests.
func (o *Outbox) deliver(ctx context.Context, e *Entry) {
	select {
	case <-o.Ready:
	case <-ctx.Done():
		return
	}
	req, err := o.Registry.Stored(e.Action, e.Request)
	if err != nil {
		if e.state.begin() {
			o.finish(ctx, e, storedRequestID(e.Request), nil, &wire.Error{Code: wire.CodeInvalidRequest, Message: err.Error()}, nil)
		}
		return
	}
	for attempt := 0; ; attempt++ {
		if e.inDoubt != nil && !o.waitInDoubt(ctx, e) {
			return
		}
		now := o.Clock.Now()
		if wait := e.NotBefore.Sub(now); wait > 0 {
			if !o.sleepEntry(ctx, e, wait, false) {
				return
			}
			now = o.Clock.Now()
		}
		// From here until the answer or the wait for a retry, outbox_cancel leaves it alone.
		if !e.state.begin() {
			return
		}
		if deadline := o.deadline(e); now.After(deadline) {
			o.finish(ctx, e, req.RequestID(), nil, wire.Errorf(wire.CodeExpired, "not delivered within %s of being received", deadline.Sub(e.CreatedAt).Round(time.Second)), nil)
			return
		}
		d := &actions.Delivery{Env: o.Env, Target: deliveryTarget(e.Lane), TxnID: e.TxnID, Now: now, Progress: &progress{o: o, e: e}}
		d.Matrix = onceMatrix{Matrix: o.Env.Matrix, o: o, e: e}
		data, err := req.Deliver(ctx, d)
		if err == nil {
			e.Sent = d.Sent()
			o.finish(ctx, e, req.RequestID(), data, nil, d.FollowUps())
			return
		}
		if ctx.Err() != nil {
			return
		}
		out := actions.Classify(err)
		if !out.Retry {
			o.finish(ctx, e, req.RequestID(), nil, out.Err, nil)
			return
		}
		if mayHaveArrived(err) {
			e.inDoubt = o.Sync.NextSync()
		}
		wait := max(out.RetryWait, matrix.Backoff(attempt, retryBase, retryLimit))
		if until := o.deadline(e).Sub(o.Clock.Now()); until < wait {
			wait = max(until, 0) + time.Millisecond
		}
		o.Counters.Failed(out.Err)
		o.Metrics.Retry(e.Action, out.Err.Code)
		o.log.Warn().Err(err).Int64("outbox_id", e.ID).Str("action", e.Action).Dur("retry_in", wait).Msg("Delivery failed, will retry")
		e.state.end()
		if !o.sleepEntry(ctx, e, wait, true) {
			return
		}
	}
}

// waitInDoubt waits until sync can tell whether an entry in doubt was sent: a homeserver that
// forgot the transaction ID (Dendrite after a restart, or after an interrupted request) would
// take the retry for a new message. It waits for the next sync, and, when sync had failed, for
// inDoubtGrace after it works again, watching each sync for the entry's echo: a homeserver that
// was stopped in the middle of the request may store it only when it is back (Dendrite replays
// its input queue). The wait is bounded by inDoubtWait, counted again while sync is down (a
// retry then would fail or be unconfirmed) up to inDoubtMaxWait. It reports false when ctx ended.
func (o *Outbox) waitInDoubt(ctx context.Context, e *Entry) bool {
	var bound <-chan time.Time // inDoubtWait from the first wait on
	var started time.Time
	arm := func() {
		if bound == nil {
			started = o.Clock.Now()
			bound = o.Clock.After(inDoubtWait)
		}
	}
	// expired reports whether the bound fired for good; while sync is down it re-arms it.
	expired := func() bool {
		if o.Sync.Healthy() || o.Clock.Now().Sub(started) >= inDoubtMaxWait {
			return true
		}
		bound = o.Clock.After(inDoubtWait)
		return false
	}
	for {
		select {
		case <-e.inDoubt:
		default:
			arm()
			select {
			case <-e.inDoubt:
			case <-bound:
				if expired() {
					return true
				}
				continue
			case <-ctx.Done():
				return false
			}
		}
		if _, sent := o.Sync.SentWithTxn(ctx, e.TxnID); sent {
			return true
		}
		grace := o.Sync.HealthySince().Add(inDoubtGrace).Sub(o.Clock.Now())
		if grace <= 0 {
			return true
		}
		arm()
		e.inDoubt = o.Sync.NextSync()
		select {
		case <-e.inDoubt:
		case <-o.Clock.After(grace):
			return true
		case <-bound:
			if expired() {
				return true
			}
		case <-ctx.Done():
			return false
		}
	}
}

// mayHaveArrived tells a failure after which the homeserver may have taken the request (the
// connection broke, a gateway or server error) from one it answered without acting on it.
func mayHaveArrived(err error) bool {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		return httpErr.Response.StatusCode >= 500
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" { // no connection, so no request
		return false
	}
	return actions.Classify(err).Err.Code != wire.CodeUnknownTarget
}

// deadline is when the entry expires: its own expiry, or OUTBOX_MAX_AGE after it was received
// (or became due).
func (o *Outbox) deadline(e *Entry) time.Time {
	limit := e.CreatedAt.Add(o.MaxAge)
	if e.NotBefore.After(e.CreatedAt) {
		limit = e.NotBefore.Add(o.MaxAge)
	}
	if !e.ExpiresAt.IsZero() && e.ExpiresAt.Before(limit) {
		return e.ExpiresAt
	}
	return limit
}

// sleep makes a lane wait for d, or until Flush when flushable; it reports false when ctx
// ended. Only lanes sleep here: the shutdown's drain counts the sleepers as idle.
func (o *Outbox) sleep(ctx context.Context, d time.Duration, flushable bool) bool {
	var flush chan struct{}
	if flushable {
		o.flushMu.Lock()
		flush = o.flushCh
		o.flushMu.Unlock()
	}
	o.asleep.Add(1)
	defer o.asleep.Add(-1)
	select {
	case <-o.Clock.After(d):
	case <-flush:
	case <-ctx.Done():
		return false
	}
	return true
}

// sleepEntry is sleep for a lane's entry, which outbox_cancel ends: it reports false then too.
func (o *Outbox) sleepEntry(ctx context.Context, e *Entry, d time.Duration, flushable bool) bool {
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-e.state.cancelledCh():
			stop()
		case <-cctx.Done():
		}
	}()
	return o.sleep(cctx, d, flushable) && ctx.Err() == nil
}

// finish answers the entry, then removes it from the outbox with its follow-ups. Answering
// first means a crash in between answers again, with the same event ID, rather than never.
func (o *Outbox) finish(ctx context.Context, e *Entry, requestID string, data any, err *wire.Error, followUps []actions.FollowUp) {
	var rerr error
	if !e.spec.Internal {
		code := ""
		if err != nil {
			code = err.Code
		}
		o.Metrics.Request(e.Action, code, o.Clock.Now().Sub(e.CreatedAt))
		o.Responder.Respond(ctx, e.Action, requestID, data, err)
		if requestID != "" {
			// Kept with the request's id, for a repeat of it (store.Accepted).
			e.RequestID = requestID
			if e.Response, rerr = json.Marshal(wire.NewResponse(requestID, data, err)); rerr != nil {
				o.log.Warn().Err(rerr).Msg("Failed to encode the response to keep")
			}
		}
	}
	if err != nil {
		o.log.Warn().Int64("outbox_id", e.ID).Str("action", e.Action).Str("code", err.Code).Str("reason", err.Message).Msg("Request failed")
	}
	next := make([]*Entry, 0, len(followUps))
	rows := make([]*store.Entry, 0, len(followUps))
	for _, f := range followUps {
		n, nerr := o.NewEntry(Job{Action: f.Action, Request: f.Request, NotBefore: f.NotBefore})
		if nerr != nil {
			o.log.Error().Err(nerr).Str("action", f.Action).Msg("Failed to schedule a follow-up")
			continue
		}
		n.Lane = f.Lane
		next = append(next, n)
		rows = append(rows, &n.Entry)
	}
	for {
		ferr := o.Store.Finish(ctx, &e.Entry, rows)
		if ferr == nil {
			break
		}
		o.log.Error().Err(ferr).Msg("Failed to update the outbox; retrying")
		if !o.sleep(ctx, time.Second, false) {
			return
		}
	}
	o.finished(ctx, e)
	o.Counters.Done(e.ID, err)
	o.liveMu.Lock()
	delete(o.live, e.ID)
	o.liveMu.Unlock()
	o.Metrics.Delivered(e.Action, deliveryResult(err))
	o.cleanUp(e)
	o.Start(next)
}

// cleanUp lets a request that keeps something outside its row (a spooled file) clean up.
func (o *Outbox) cleanUp(e *Entry) {
	if e.spec.New == nil {
		return
	}
	if _, ok := e.spec.New().(actions.Finisher); !ok {
		return
	}
	req, err := o.Registry.Stored(e.Action, e.Request)
	if err != nil {
		return
	}
	if err := req.(actions.Finisher).Finished(&o.Env); err != nil {
		o.log.Warn().Err(err).Int64("outbox_id", e.ID).Msg("Failed to clean up after a request")
	}
}

// storedRequestID reads the "id" of a stored request that does not decode as its action's.
func storedRequestID(raw json.RawMessage) string {
	var probe struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(raw, &probe)
	return probe.ID
}

// onceMatrix is the Matrix of a delivery: for an entry in doubt, a send whose transaction ID
// sync already echoed is not sent again, and its event ID is the answer.
type onceMatrix struct {
	actions.Matrix
	o *Outbox
	e *Entry
}

func (m onceMatrix) sentBefore(ctx context.Context, txnID string) (id.EventID, bool) {
	if m.e.inDoubt == nil {
		return "", false
	}
	evtID, ok := m.o.Sync.SentWithTxn(ctx, txnID)
	if ok {
		m.o.log.Info().Int64("outbox_id", m.e.ID).Stringer("event_id", evtID).Msg("Request was sent before the restart; not sending it again")
	}
	return evtID, ok
}

func (m onceMatrix) Send(ctx context.Context, roomID id.RoomID, evtType event.Type, content any, txnID string) (id.EventID, error) {
	if evtID, ok := m.sentBefore(ctx, txnID); ok {
		return evtID, nil
	}
	return m.Matrix.Send(ctx, roomID, evtType, content, txnID)
}

func (m onceMatrix) Redact(ctx context.Context, roomID id.RoomID, eventID id.EventID, reason, txnID string) (id.EventID, error) {
	if evtID, ok := m.sentBefore(ctx, txnID); ok {
		return evtID, nil
	}
	return m.Matrix.Redact(ctx, roomID, eventID, reason, txnID)
}

// progress keeps an entry's progress in its outbox row.
type progress struct {
	o *Outbox
	e *Entry
}

func (p *progress) Load(v any) (bool, error) {
	if len(p.e.Progress) == 0 {
		return false, nil
	}
	if err := json.Unmarshal(p.e.Progress, v); err != nil {
		return false, fmt.Errorf("failed to decode the progress of outbox entry %d: %w", p.e.ID, err)
	}
	return true, nil
}

func (p *progress) Save(ctx context.Context, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("failed to encode the progress of outbox entry %d: %w", p.e.ID, err)
	}
	if err := p.o.Store.SaveProgress(ctx, p.e.ID, raw); err != nil {
		return err
	}
	p.e.Progress = raw
	return nil
}

// deliveryResult is the result label of a finished entry in the metrics.
func deliveryResult(err *wire.Error) string {
	switch {
	case err == nil:
		return "sent"
	case err.Code == wire.CodeExpired:
		return "expired"
	default:
		return "failed"
	}
}
