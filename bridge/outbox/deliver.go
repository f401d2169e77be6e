package outbox

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// retryBase and retryLimit bound the backoff between delivery attempts. A request in doubt
// waits for sync as well (waitInDoubt), however short its backoff.
const (
	retryBase  = 100 * time.Millisecond
	retryLimit = 5 * time.Minute
)

// deliver works on one entry until it is answered or ctx ends (then it stays in the outbox for
// the next start): it waits for Matrix, for a scheduled time, retries what may pass with
// backoff, and answers expired requests. An entry left in flight by the last run, or whose
// attempt may have reached the homeserver, is sent again only once sync tells it was not
// delivered (waitInDoubt); when sync shows it was, it is answered with the echoed event.
func (o *Outbox) deliver(ctx context.Context, e *Entry) {
	select {
	case <-o.Ready:
	case <-ctx.Done():
		return
	}
	req, err := o.Registry.Stored(e.Action, e.Request)
	if err != nil {
		if e.state.begin() {
			o.finish(ctx, e, cmp.Or(e.RequestID, storedRequestID(e.Request)), nil, &wire.Error{Code: wire.CodeInvalidRequest, Message: err.Error()}, nil)
		}
		return
	}
	e.req = req
	var dbt *doubt
	if e.inDoubt != nil { // left by the last run, maybe in flight when it stopped
		if !e.state.begin() { // in doubt, it cannot be cancelled: it may have been delivered
			return
		}
		dbt = &doubt{txn: e.TxnID, since: e.resumedAt, restart: true, sampled: true}
		if !o.waitInDoubt(ctx, e, dbt) {
			return
		}
		if dbt = o.unsettled(ctx, dbt); dbt == nil {
			e.state.end()
		}
	}
	for attempt := 0; ; attempt++ {
		now := o.Clock.Now()
		notBefore := e.NotBefore
		if attempt == 0 && !e.resumedAt.IsZero() && e.resumedAt.Add(resumeDelay).After(notBefore) {
			notBefore = e.resumedAt.Add(resumeDelay)
		}
		if wait := notBefore.Sub(now); wait > 0 {
			if !o.sleepEntry(ctx, e, wait, false) {
				return
			}
			now = o.Clock.Now()
		}
		// From here until the answer, or the wait for a retry once nothing is in doubt, outbox_cancel
		// leaves it alone.
		if !e.state.begin() {
			return
		}
		if deadline := o.deadline(e); now.After(deadline) {
			o.finish(ctx, e, req.RequestID(), nil, wire.Errorf(wire.CodeExpired, "not delivered within %s of being received", deadline.Sub(e.CreatedAt).Round(time.Second)), nil)
			return
		}
		syncHealthy := o.Sync.Healthy()
		d := &actions.Delivery{Env: o.Env, Target: deliveryTarget(e.Lane), TxnID: e.TxnID, Now: now, Progress: &progress{o: o, e: e}}
		var failedTxn string
		d.Matrix = onceMatrix{Matrix: o.Env.Matrix, o: o, e: e, failed: &failedTxn}
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
		failedAt := o.Clock.Now()
		var next *doubt // only a send or redaction that failed can be in doubt itself
		if failedTxn != "" {
			next = newDoubt(err, failedTxn, now, failedAt, syncHealthy)
		}
		dbt = o.doubtAfter(e, dbt, err, next)
		wait := max(out.RetryWait, matrix.Backoff(attempt, retryBase, retryLimit))
		if until := o.deadline(e).Sub(failedAt); until < wait {
			wait = max(until, 0) + time.Millisecond
		}
		o.Counters.Failed(out.Err)
		o.Metrics.Retry(e.Action, out.Err.Code)
		o.log.Warn().Err(err).Int64("outbox_id", e.ID).Str("action", e.Action).Dur("retry_in", wait).Bool("in_doubt", dbt != nil).Msg("Delivery failed, will retry")
		if !o.pause(ctx, e, dbt, failedAt.Add(wait)) {
			return
		}
		dbt = o.unsettled(ctx, dbt)
	}
}

// unsettled is d while sync has not shown its send; once it has, the next attempt answers with
// the echoed event, and a failure after that is no longer this doubt's.
func (o *Outbox) unsettled(ctx context.Context, d *doubt) *doubt {
	if d == nil {
		return nil
	}
	if _, sent := o.Sync.SentWithTxn(ctx, d.txn); sent {
		return nil
	}
	return d
}

// doubtAfter is what is in doubt after an attempt failed with err: the attempt's failed send
// (next; nil when no send failed) when it may have reached the homeserver (see
// doubt.followedBy); the earlier attempt, now a possible restart, when the homeserver refused
// the connection (it is down, and may store that attempt only when it is back); otherwise the
// earlier one, if any.
func (o *Outbox) doubtAfter(e *Entry, prev *doubt, err error, next *doubt) *doubt {
	switch {
	case next != nil && mayHaveArrived(err):
		if prev != nil {
			next = prev.followedBy(next)
		}
		e.inDoubt = o.Sync.NextSync()
		return next
	case prev != nil && refused(err):
		prev.restart = true
		e.inDoubt = o.Sync.NextSync()
	}
	return prev
}

// pause waits before the next attempt: for an attempt in doubt, until sync tells whether it was
// delivered (no longer when it was: the next attempt answers with the echoed event), then until
// retryAt. It reports false when ctx ended or the entry was cancelled.
func (o *Outbox) pause(ctx context.Context, e *Entry, d *doubt, retryAt time.Time) bool {
	if d != nil { // outbox_cancel cannot take it yet: it may have been delivered
		if !o.waitInDoubt(ctx, e, d) {
			return false
		}
		if _, sent := o.Sync.SentWithTxn(ctx, d.txn); sent {
			return true
		}
	}
	e.state.end() // not delivered: outbox_cancel may take it while it waits
	wait := retryAt.Sub(o.Clock.Now())
	if wait <= 0 {
		return true
	}
	return o.sleepEntry(ctx, e, wait, true)
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
		// Not o.sleep: this is work a shutdown waits for, and the caller may be no lane at all
		// (outbox_cancel), which the drain must not count as a sleeping one.
		select {
		case <-o.Clock.After(time.Second):
		case <-ctx.Done():
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
	req := e.req
	if req == nil { // cancelled before its delivery decoded it
		var err error
		if req, err = o.Registry.Stored(e.Action, e.Request); err != nil {
			return
		}
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
// sync already echoed is not sent again, and its event ID is the answer. It notes the
// transaction ID of a send or redaction that failed, and when the homeserver last answered one.
type onceMatrix struct {
	actions.Matrix
	o      *Outbox
	e      *Entry
	failed *string
}

func (m onceMatrix) sentBefore(ctx context.Context, txnID string) (id.EventID, bool) {
	if m.e.inDoubt == nil {
		return "", false
	}
	evtID, ok := m.o.Sync.SentWithTxn(ctx, txnID)
	if ok {
		m.o.log.Info().Int64("outbox_id", m.e.ID).Stringer("event_id", evtID).Msg("Sync shows the request was delivered; not sending it again")
	}
	return evtID, ok
}

func (m onceMatrix) Send(ctx context.Context, roomID id.RoomID, evtType event.Type, content any, txnID string) (id.EventID, error) {
	if evtID, ok := m.sentBefore(ctx, txnID); ok {
		return evtID, nil
	}
	sent := m.o.Clock.Now()
	evtID, err := m.Matrix.Send(ctx, roomID, evtType, content, txnID)
	m.note(txnID, sent, err)
	return evtID, err
}

func (m onceMatrix) Redact(ctx context.Context, roomID id.RoomID, eventID id.EventID, reason, txnID string) (id.EventID, error) {
	if evtID, ok := m.sentBefore(ctx, txnID); ok {
		return evtID, nil
	}
	sent := m.o.Clock.Now()
	evtID, err := m.Matrix.Redact(ctx, roomID, eventID, reason, txnID)
	m.note(txnID, sent, err)
	return evtID, err
}

// note records the outcome of a send made at sent: the homeserver was up then, or the send of
// txnID failed.
func (m onceMatrix) note(txnID string, sent time.Time, err error) {
	if err != nil {
		*m.failed = txnID
	} else {
		m.o.noteAnswered(sent)
	}
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
