package outbox

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"maunium.net/go/mautrix"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// A request is in doubt when it may have reached the homeserver without the bridge learning of
// it. Sending it again with its transaction ID is safe only once the homeserver finished the
// first attempt, or never got it: Dendrite (v0.15.2, clientapi/routing/sendevent.go) answers a
// repeated transaction ID from an in-memory cache that it fills when a send has succeeded, and
// looks there before it waits for the room's send lock. So a repeat while the first is still in
// flight, or after the client went away in the middle of it (a gateway timed out, the connection
// broke: the first then fails inside Dendrite, but its event is queued already and is stored a
// moment later), becomes a second message, and so does any repeat after a restart, which
// empties the cache. The faults scenario of the benchmark measures this
// (cmd/matrix2mqtt-bench/txnprobe.go).
//
// So the outbox answers a request in doubt with the echoed event as soon as a sync shows it,
// and otherwise sends it again only when the kind of failure rules a second message out:
//   - a gateway's 502 or 503: the gateway got no answer from the homeserver, which therefore
//     did not take the request, unless it went down with it; sent again after the backoff
//     (100 ms, then 200 ms…), sooner than a homeserver restarts, so that the attempt fails the
//     same way while it is down. gatewaysDown such answers in a row while sync broke, begun
//     while it worked, are taken for the homeserver gone down with the first;
//   - a connection that broke after the request was sent, a gateway's 504, a timeout, the
//     homeserver's own 500: the homeserver may have been interrupted in the middle of it and
//     store it a moment later; sent again after inDoubtSettle and a sync since the failure, and
//     since sync last came back, without its echo;
//   - a possible restart (doubt.restarting): sent again once sync has worked for inDoubtGrace.

// inDoubtWait bounds the wait for a sync before a request in doubt is sent again, and
// inDoubtMaxWait that wait while sync is down.
const (
	inDoubtWait    = 30 * time.Second
	inDoubtMaxWait = 2 * time.Minute
)

// inDoubtSettle is how long a request that the homeserver may have been interrupted in waits at
// least, watching the syncs for its echo, before it is sent again: longer than the homeserver
// takes to store such a request (Dendrite stored them within 0.3 s on a loaded 2-CPU machine).
const inDoubtSettle = time.Second

// inDoubtGrace is how long after sync works again a request in doubt watches the syncs for its
// echo when the homeserver may have stopped with the request in it: a Dendrite that was stopped
// in the middle of a request may store it only when it is back (it replays its input queue).
const inDoubtGrace = 5 * time.Second

// restartWindow is shorter than any homeserver takes to restart (a Dendrite takes 0.7 s on the
// test machine to start alone): one that answers a request sent within it after a failure did
// not go down with the request, and a sync that breaks within it broke with the request.
const restartWindow = 250 * time.Millisecond

// gatewaysDown is how many gateway answers in a row for one send, while sync broke, are taken
// for the homeserver down (with the backoff in between, unreachable for at least 0.3 s).
const gatewaysDown = 3

// doubt is an attempt that may have reached the homeserver without the bridge learning of it.
type doubt struct {
	// txn is the transaction ID of the send that failed, whose echo tells it was delivered.
	txn string
	// since is when the attempt failed (for an entry left by the last run: when it resumed).
	since time.Time
	// sentAt is when the attempt began, if sync worked then; zero otherwise. firstSent is that
	// of the first attempt of a row of gateway answers.
	sentAt, firstSent time.Time
	// gateways counts the gateway answers (502, 503) in a row for this send: the gateway got
	// no answer from the homeserver, which did not take the request if it stayed up.
	gateways int
	// restart is set when the homeserver may have stopped with the request in it, whatever
	// sample finds: the bridge restarted (the entry was left by the last run), an earlier
	// attempt of the same send was a possible restart, or the homeserver refused a later
	// connection.
	restart bool
	// down is set by sample when the homeserver may have gone down with the request: sync broke
	// between the attempt and restartWindow after its failure (or did not work when it was sent);
	// for a gateway's answer, only after gatewaysDown of them in a row, the first sent while
	// sync worked, and sync broke since.
	down bool
	// upAfter is set by sample when the homeserver answered a request sent within
	// restartWindow after the failure: it did not go down then.
	upAfter bool
	// sampled is set once sample looked.
	sampled bool
}

// newDoubt is the doubt of an attempt begun at sentAt (with sync healthy then, or not) whose
// send of txn failed with err at now.
func newDoubt(err error, txn string, sentAt, now time.Time, syncHealthy bool) *doubt {
	d := &doubt{txn: txn, since: now}
	if status := httpStatus(err); status == http.StatusBadGateway || status == http.StatusServiceUnavailable {
		d.gateways = 1
	}
	if syncHealthy {
		d.sentAt, d.firstSent = sentAt, sentAt
	}
	return d
}

// gateway tells a gateway's answer that it got none from the homeserver.
func (d *doubt) gateway() bool { return d.gateways > 0 }

// restarting tells whether the homeserver may have stopped with the request in it, so that it
// may store it only when it is back.
func (d *doubt) restarting() bool { return d.restart || d.down && !d.upAfter }

// followedBy is the doubt of the next attempt of the same send, which failed too: a possible
// restart still if this was one, and counting the gateway answers in a row.
func (d *doubt) followedBy(next *doubt) *doubt {
	if d.txn != next.txn {
		return next
	}
	if next.gateway() && d.gateway() {
		next.gateways, next.firstSent = d.gateways+1, d.firstSent
	}
	next.restart = d.restarting()
	return next
}

// mayHaveArrived tells a failure after which the homeserver may have taken the request (the
// connection broke, a gateway or server error) from one it answered without acting on it.
func mayHaveArrived(err error) bool {
	if status := httpStatus(err); status != 0 {
		return status >= 500
	}
	if refused(err) {
		return false
	}
	return actions.Classify(err).Err.Code != wire.CodeUnknownTarget
}

// httpStatus is the status of the answer that err carries; 0 when there was none.
func httpStatus(err error) int {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		return httpErr.Response.StatusCode
	}
	return 0
}

// refused tells a failure to connect: no request was sent, and the homeserver may be down.
func refused(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// needsSync tells whether d may be sent again only after a sync since the failure, and since sync
// last came back, showed no echo.
func (d *doubt) needsSync() bool { return !d.gateway() || d.restarting() }

// sample looks, restartWindow after the failure, at whether sync broke with the attempt (see
// down) and whether the homeserver answered a request sent since the failure.
func (d *doubt) sample(o *Outbox) {
	d.sampled = true
	s := o.Sync
	brokeSince := func(t time.Time) bool { return !s.Healthy() || s.HealthySince().After(t) }
	if d.gateway() {
		d.down = d.gateways >= gatewaysDown && !d.firstSent.IsZero() && brokeSince(d.firstSent)
	} else {
		d.down = d.sentAt.IsZero() || brokeSince(d.sentAt)
	}
	d.upAfter = o.answeredWithin(d.since, d.since.Add(restartWindow))
}

// noteAnswered records that the homeserver answered a request sent at sent.
func (o *Outbox) noteAnswered(sent time.Time) {
	for {
		latest := o.answered.Load()
		if sent.UnixNano() <= latest || o.answered.CompareAndSwap(latest, sent.UnixNano()) {
			return
		}
	}
}

// answeredWithin tells whether the latest request that the homeserver answered was sent
// between from and to.
func (o *Outbox) answeredWithin(from, to time.Time) bool {
	sent := o.answered.Load()
	return sent >= from.UnixNano() && sent <= to.UnixNano()
}

// settledAt is when d may be sent again (after a fresh sync, if it needs one); zero while it must
// wait for sync to work again.
func (d *doubt) settledAt(s Syncer) time.Time {
	restarting := d.restarting()
	switch {
	case !restarting && d.gateway() && d.gateways < gatewaysDown:
		return d.since
	case !restarting && d.gateway(): // after sample
		return d.since.Add(restartWindow)
	case !restarting:
		return d.since.Add(inDoubtSettle)
	case !s.Healthy():
		return time.Time{}
	}
	at := d.since.Add(inDoubtSettle)
	if grace := s.HealthySince().Add(inDoubtGrace); grace.After(at) {
		return grace
	}
	return at
}

// doubtWait is one wait of waitInDoubt: the syncs watched, the timer and what they told.
type doubtWait struct {
	o *Outbox
	d *doubt
	// syncs is closed by the next sync; nil until the next timer when the Syncer had a sync
	// ready at once (it then tells nothing new until time passes).
	syncs <-chan struct{}
	// lastSync is when the latest sync since the failure was handed over; zero before one.
	lastSync time.Time
	// timer fires at timerAt (zero: none).
	timer   <-chan time.Time
	timerAt time.Time
	// bound is armed once nothing but a sync is waited for.
	bound bound
}

// waitInDoubt waits until sync tells whether the attempt in doubt was delivered: it returns at
// once when a sync shows its echo (the next attempt then answers with that event instead of
// sending), or when it may be sent again (settledAt) with no echo in any sync since the
// failure, and, unless it was a gateway's answer, after a fresh sync. The wait for a sync is
// bounded by inDoubtWait, counted again while sync is down (a retry then would fail or be
// unconfirmed) up to inDoubtMaxWait. It reports false when ctx ended.
func (o *Outbox) waitInDoubt(ctx context.Context, e *Entry, d *doubt) bool {
	if _, sent := o.Sync.SentWithTxn(ctx, d.txn); sent {
		return true
	}
	o.asleep.Add(1) // waiting, not working: a shutdown need not wait for it
	defer o.asleep.Add(-1)
	w := &doubtWait{o: o, d: d, syncs: e.inDoubt}
	for {
		if _, sent := o.Sync.SentWithTxn(ctx, d.txn); sent || w.settled() {
			return true
		}
		select {
		case <-w.syncs:
			w.lastSync = o.Clock.Now()
			w.nextSync()
		case <-w.timer:
			w.timer, w.timerAt = nil, time.Time{}
			w.resumeSyncs()
		case <-w.bound.c:
			if w.bound.expired(o) {
				return true
			}
			w.resumeSyncs()
		case <-ctx.Done():
			return false
		}
	}
}

// settled tells whether the wait is over. Otherwise it sets the timer for the next time it
// waits for (the sample restartWindow after the failure, then settledAt), or arms the bound
// when it waits for a sync alone.
func (w *doubtWait) settled() bool {
	now := w.o.Clock.Now()
	d := w.d
	sampleAt := d.since.Add(restartWindow)
	toSample := !d.sampled
	if toSample && !now.Before(sampleAt) {
		d.sample(w.o)
		toSample = false
	}
	at := d.settledAt(w.o.Sync)
	if (!d.needsSync() || w.fresh()) && !at.IsZero() && !now.Before(at) {
		return true
	}
	if toSample && (at.IsZero() || sampleAt.Before(at)) {
		at = sampleAt
	}
	switch {
	case !at.IsZero() && now.Before(at):
		if !at.Equal(w.timerAt) {
			w.timer, w.timerAt = w.o.Clock.After(at.Sub(now)), at
		}
	case w.bound.c == nil:
		w.bound = w.o.newBound()
	}
	return false
}

// fresh tells whether a sync was handed over since the failure and since sync last came back:
// every event stored before it came back is in what sync showed.
func (w *doubtWait) fresh() bool {
	s := w.o.Sync
	return !w.lastSync.IsZero() && s.Healthy() && !s.HealthySince().After(w.lastSync)
}

// nextSync watches for the sync after the one just handed over.
func (w *doubtWait) nextSync() {
	w.syncs = w.o.Sync.NextSync()
	select {
	case <-w.syncs:
		w.syncs = nil // ready at once: nothing new until time passes
	default:
	}
}

// resumeSyncs watches syncs again after a timer, if nextSync stopped.
func (w *doubtWait) resumeSyncs() {
	if w.syncs == nil {
		w.syncs = w.o.Sync.NextSync()
	}
}

// bound is inDoubtWait from when a wait began to depend on sync alone, counted again while sync
// is down, up to inDoubtMaxWait.
type bound struct {
	c       <-chan time.Time
	started time.Time
}

func (o *Outbox) newBound() bound {
	started := o.Clock.Now()
	return bound{started: started, c: o.Clock.After(inDoubtWait)}
}

// expired reports whether the bound fired for good; while sync is down it arms it again.
func (b *bound) expired(o *Outbox) bool {
	if o.Sync.Healthy() || o.Clock.Now().Sub(b.started) >= inDoubtMaxWait {
		return true
	}
	b.c = o.Clock.After(inDoubtWait)
	return false
}
