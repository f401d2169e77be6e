package outbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/actionstest"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

func TestMayHaveArrived(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	read := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	status := func(code int) error {
		return mautrix.HTTPError{Response: &http.Response{StatusCode: code}, Message: "failed"}
	}
	tests := []struct {
		name    string
		err     error
		want    bool
		gateway bool // a gateway's answer that it got none from the homeserver
		refused bool
	}{
		{"no connection", mautrix.HTTPError{WrappedError: &url.Error{Op: "Put", URL: "http://hs", Err: dial}, Message: "request error"}, false, false, true},
		{"connection broke", mautrix.HTTPError{WrappedError: &url.Error{Op: "Put", URL: "http://hs", Err: read}, Message: "request error"}, true, false, false},
		{"own timeout", fmt.Errorf("failed: %w", context.DeadlineExceeded), true, false, false},
		{"server error", status(500), true, false, false},
		{"bad gateway", status(502), true, true, false},
		{"unavailable", status(503), true, true, false},
		{"gateway timeout", status(504), true, false, false},
		{"rate limited", status(429), false, false, false},
		{"refused request", status(403), false, false, false},
		{"unknown target", fmt.Errorf("failed: %w", matrix.ErrUnknownTarget), false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mayHaveArrived(tt.err); got != tt.want {
				t.Errorf("mayHaveArrived(%v) = %v, want %v", tt.err, got, tt.want)
			}
			d := newDoubt(tt.err, "txn", time.Time{}, time.Time{}, true)
			if tt.want && d.gateway() != tt.gateway {
				t.Errorf("doubt of %v: gateway %v, want %v", tt.err, d.gateway(), tt.gateway)
			}
			if got := refused(tt.err); got != tt.refused {
				t.Errorf("refused(%v) = %v, want %v", tt.err, got, tt.refused)
			}
		})
	}
}

// fakeSync is a Syncer's health for the table tests.
type fakeSync struct {
	actionstest.Matrix
	down  bool
	since time.Time
}

func (f *fakeSync) Healthy() bool           { return !f.down }
func (f *fakeSync) HealthySince() time.Time { return f.since }

// TestRestarting: whether the homeserver may have stopped with a request in it.
func TestRestarting(t *testing.T) {
	tests := []struct {
		name string
		d    doubt
		want bool
	}{
		{"nothing tells", doubt{}, false},
		{"known", doubt{restart: true}, true},
		{"known, the homeserver answered right after", doubt{restart: true, upAfter: true}, true},
		{"sync broke with the attempt", doubt{down: true}, true},
		{"sync broke, the homeserver answered right after", doubt{down: true, upAfter: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.restarting(); got != tt.want {
				t.Fatalf("restarting = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSample: what sync and the answers tell restartWindow after a failure.
func TestSample(t *testing.T) {
	failed := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	sent := failed.Add(-50 * time.Millisecond)
	tests := []struct {
		name        string
		err         error
		gateways    int           // in a row, the first sent at the same time as this one
		syncHealthy bool          // when the attempt was sent
		down        bool          // sync now
		since       time.Duration // sync healthy since, from the failure
		answered    time.Duration // when the latest answered request was sent, from the failure (0: none)
		wantDown    bool
		wantUp      bool
	}{
		{"sync kept working", errBroken, 0, true, false, -time.Minute, 0, false, false},
		{"sync is down", errBroken, 0, true, true, -time.Minute, 0, true, false},
		{"sync broke and came back", errBroken, 0, true, false, 100 * time.Millisecond, 0, true, false},
		{"sent while sync was down", errBroken, 0, false, false, 100 * time.Millisecond, 0, true, false},
		{"a gateway's answer", httpError(502, "", nil), 1, true, true, -time.Minute, 0, false, false},
		{"gateway answers in a row, sync broke", httpError(502, "", nil), gatewaysDown, true, true, -time.Minute, 0, true, false},
		{"gateway answers in a row, sync kept working", httpError(502, "", nil), gatewaysDown, true, false, -time.Minute, 0, false, false},
		{"gateway answers in a row, the first sent while sync was down", httpError(502, "", nil), gatewaysDown, false, false, 100 * time.Millisecond, 0, false, false},
		{"answered a request sent after the failure", errBroken, 0, true, true, -time.Minute, 100 * time.Millisecond, true, true},
		{"answered a request sent before the failure", errBroken, 0, true, true, -time.Minute, -10 * time.Millisecond, true, false},
		{"answered a request sent too late to tell", errBroken, 0, true, true, -time.Minute, restartWindow + time.Millisecond, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			to.setSync(tt.down, failed.Add(tt.since))
			if tt.answered != 0 {
				to.noteAnswered(failed.Add(tt.answered))
			}
			d := newDoubt(tt.err, "txn", sent, failed, tt.syncHealthy)
			if tt.gateways > 0 {
				d.gateways = tt.gateways
			}
			d.sample(to.Outbox)
			if d.down != tt.wantDown || d.upAfter != tt.wantUp {
				t.Fatalf("down %v, up after %v; want %v, %v", d.down, d.upAfter, tt.wantDown, tt.wantUp)
			}
		})
	}
}

// TestSettledAt: when a request in doubt may be sent again, and whether a sync since the failure
// must have shown no echo first.
func TestSettledAt(t *testing.T) {
	failed := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		d        doubt
		down     bool
		since    time.Duration // sync healthy since, from the failure
		want     time.Duration // from the failure; -1: not while sync is down
		needSync bool
	}{
		{"gateway", doubt{gateways: 1}, false, -time.Minute, 0, false},
		{"gateway, sync down", doubt{gateways: 1}, true, -time.Minute, 0, false},
		{"interrupted", doubt{}, false, -time.Minute, inDoubtSettle, true},
		{"interrupted, sync down", doubt{}, true, -time.Minute, inDoubtSettle, true},
		{"gateway answers in a row", doubt{gateways: gatewaysDown}, false, -time.Minute, restartWindow, false},
		{"gateway answers in a row, sync broke, back 2 s after", doubt{gateways: gatewaysDown, down: true}, false, 2 * time.Second, 2*time.Second + inDoubtGrace, true},
		{"went down with sync, back at once", doubt{down: true}, false, 0, inDoubtGrace, true},
		{"went down with sync, sync down", doubt{down: true}, true, -time.Minute, -1, true},
		{"left by the last run, sync long fine", doubt{restart: true}, false, -time.Minute, inDoubtSettle, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.d
			d.txn, d.since = "txn", failed
			s := &fakeSync{down: tt.down, since: failed.Add(tt.since)}
			if d.needsSync() != tt.needSync {
				t.Errorf("needs a sync: %v, want %v", d.needsSync(), tt.needSync)
			}
			got := d.settledAt(s)
			switch {
			case tt.want < 0 && !got.IsZero():
				t.Fatalf("settled at %s, want not while sync is down", got.Sub(failed))
			case tt.want >= 0 && !got.Equal(failed.Add(tt.want)):
				t.Fatalf("settled at %s after the failure, want %s", got.Sub(failed), tt.want)
			}
		})
	}
}

// TestFreshSync: a sync counts for a request in doubt only if it came while sync still works,
// after it last came back.
func TestFreshSync(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		lastSync time.Time
		down     bool
		since    time.Time // sync healthy since
		want     bool
	}{
		{"no sync yet", time.Time{}, false, t0.Add(-time.Minute), false},
		{"a sync, sync works", t0, false, t0.Add(-time.Minute), true},
		{"a sync, then sync broke", t0, true, t0.Add(-time.Minute), false},
		{"a sync, then sync broke and came back", t0, false, t0.Add(time.Second), false},
		{"a sync after sync came back", t0.Add(2 * time.Second), false, t0.Add(time.Second), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			to.setSync(tt.down, tt.since)
			w := &doubtWait{o: to.Outbox, lastSync: tt.lastSync}
			if got := w.fresh(); got != tt.want {
				t.Fatalf("fresh = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDoubtAfter: what a failed attempt leaves in doubt.
func TestDoubtAfter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	gw := httpError(502, "", nil)
	tests := []struct {
		name           string
		prev           *doubt
		err            error
		wantNext       bool // the failed attempt is in doubt
		wantPrev       bool // the earlier doubt stays
		wantRestarting bool
	}{
		{"first failure in doubt", nil, errBroken, true, false, false},
		{"first gateway answer", nil, gw, true, false, false},
		{"first failure not in doubt", nil, errNetwork, false, false, false},
		{"a second gateway answer", &doubt{gateways: 1}, gw, true, false, false},
		{"a third gateway answer in a row (restarting if sample finds sync broke)", &doubt{gateways: gatewaysDown - 1}, gw, true, false, false},
		{"a gateway answer after a broken connection", &doubt{}, gw, true, false, false},
		{"in doubt again after a possible restart", &doubt{down: true}, errBroken, true, false, true},
		{"in doubt again after a disproved restart", &doubt{down: true, upAfter: true}, errBroken, true, false, false},
		{"then the homeserver refused a connection", &doubt{gateways: 1}, errNetwork, false, true, true},
		{"then the homeserver refused the request", &doubt{gateways: 1}, httpError(429, "M_LIMIT_EXCEEDED", nil), false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			e := &Entry{}
			if tt.prev != nil {
				tt.prev.txn = "txn"
			}
			next := newDoubt(tt.err, "txn", t0, t0.Add(100*time.Millisecond), true)
			got := to.doubtAfter(e, tt.prev, tt.err, next)
			switch {
			case tt.wantNext && got != next, tt.wantPrev && got != tt.prev, !tt.wantNext && !tt.wantPrev && got != nil:
				t.Fatalf("doubt = %+v", got)
			}
			if got != nil && got.restarting() != tt.wantRestarting {
				t.Fatalf("restarting = %v, want %v", got.restarting(), tt.wantRestarting)
			}
			if (e.inDoubt != nil) != (tt.wantNext || tt.wantRestarting) {
				t.Fatalf("waits for a sync: %v", e.inDoubt != nil)
			}
		})
	}
}

// handOverSync plays a sync that carries echoes (transaction ID → event): the channel that
// NextSync returned is closed and a new one takes its place.
func (to *testOutbox) handOverSync(echoes map[string]id.EventID) {
	to.hs.Mu.Lock()
	old := to.hs.Sync
	to.hs.Sync = make(chan struct{})
	if to.hs.Echoes == nil {
		to.hs.Echoes = map[string]id.EventID{}
	}
	for txn, evt := range echoes {
		to.hs.Echoes[txn] = evt
	}
	to.hs.Mu.Unlock()
	close(old)
}

// setSync sets the fake sync's health.
func (to *testOutbox) setSync(down bool, since time.Time) {
	to.hs.Mu.Lock()
	to.hs.Unhealthy, to.hs.HealthyFrom = down, since
	to.hs.Mu.Unlock()
}

// expectAnswered waits for deliver to return and checks its ok response (with wantEvent, when
// set) and the number of sends it made.
func (to *testOutbox) expectAnswered(t *testing.T, done <-chan struct{}, wantEvent id.EventID, wantCalls int) {
	t.Helper()
	<-done
	r := to.responses.Next(t)
	if r.Status != "ok" || (wantEvent != "" && r.Data.(map[string]any)["event_id"] != string(wantEvent)) {
		t.Fatalf("response = %+v", r)
	}
	if to.hs.Calls != wantCalls {
		t.Fatalf("%d sends, want %d", to.hs.Calls, wantCalls)
	}
}

// expectWaits reads the next waits the outbox asked the clock for.
func (to *testOutbox) expectWaits(t *testing.T, want ...time.Duration) {
	t.Helper()
	for _, w := range want {
		if d := to.sleeps(t); d != w {
			t.Fatalf("waits %s, want %s", d, w)
		}
	}
}

// TestInDoubtEchoAnswersAtOnce: when sync shows the echo of an attempt that failed after the
// homeserver took it (a 504, a connection cut after the answer), the request is answered with
// that event at once: no second send, no backoff.
func TestInDoubtEchoAnswersAtOnce(t *testing.T) {
	for _, err := range []error{httpError(504, "", nil), errBroken} {
		t.Run(err.Error(), func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			to.hs.Errs = []error{err}
			to.hs.Sync = make(chan struct{})
			e := to.enqueue(t, send("cut", "!room:hs", "answer lost"))
			done := to.run(e)
			to.expectWaits(t, restartWindow)
			to.handOverSync(map[string]id.EventID{e.TxnID: "$took"})
			to.expectAnswered(t, done, "$took", 1)
		})
	}
}

// TestInDoubtSentAgainWithoutEcho: with no echo, an attempt that a gateway answered for (502)
// is sent again after the backoff; one that the homeserver may have been interrupted in only
// once inDoubtSettle passed and a sync since the failure showed no echo. Either goes again with
// its transaction ID, and its lane counts as asleep meanwhile.
func TestInDoubtSentAgainWithoutEcho(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		waits []time.Duration // the clock is moved by each (0: by the backoff); then a sync, if needed
		sync  bool
	}{
		{"bad gateway", httpError(502, "", nil), []time.Duration{0}, false},
		{"connection broke", errBroken, []time.Duration{restartWindow, inDoubtSettle - restartWindow}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			to.hs.Errs = []error{tt.err}
			to.hs.Sync = make(chan struct{})
			e := to.enqueue(t, send("again", "!room:hs", "no echo"))
			to.Start([]*Entry{e})
			for _, want := range tt.waits {
				d := to.sleeps(t)
				if want != 0 && d != want {
					t.Fatalf("waits %s, want %s", d, want)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if !to.Drain(ctx) {
					t.Fatal("drain waited for a lane in doubt")
				}
				cancel()
				to.clock.Advance(d)
			}
			if tt.sync {
				to.expectWaits(t, inDoubtWait) // now it waits for a sync alone
				if to.hs.Calls != 1 {
					t.Fatalf("sent again before a sync: %d sends", to.hs.Calls)
				}
				to.handOverSync(nil)
			}
			if r := to.answer(t); r.Status != "ok" || to.hs.Calls != 2 || to.hs.Sent[0] != e.TxnID {
				t.Fatalf("response %+v after %d sends %v", r, to.hs.Calls, to.hs.Sent)
			}
		})
	}
}

// advanceUntilSends moves the clock by what the outbox waits for (the rest of a backoff) until
// it made n sends, and returns the wait it asks for then.
func (to *testOutbox) advanceUntilSends(t *testing.T, n int) time.Duration {
	t.Helper()
	for {
		d := to.sleeps(t)
		to.hs.Mu.Lock()
		calls := to.hs.Calls
		to.hs.Mu.Unlock()
		if calls >= n {
			return d
		}
		to.clock.Advance(d)
	}
}

// answer moves the clock by whatever the outbox waits for (the rest of a backoff) until it
// answers.
func (to *testOutbox) answer(t *testing.T) wire.Response {
	t.Helper()
	for {
		select {
		case r := <-to.responses:
			return r
		case d := <-to.clock.Asked:
			to.clock.Advance(d)
		case <-time.After(5 * time.Second):
			t.Fatal("no response")
		}
	}
}

// TestGatewayErrorsInARow: gatewaysDown gateway answers in a row while sync broke make the
// request a possible restart (the homeserver may be down with the first attempt in it), which
// waits for sync to work for inDoubtGrace; fewer, or with sync working, are sent again after the
// backoff (after the sample restartWindow after the last, for gatewaysDown).
func TestGatewayErrorsInARow(t *testing.T) {
	tests := []struct {
		n         int
		syncBroke bool
		wantWait  bool
	}{
		{gatewaysDown - 1, true, false},
		{gatewaysDown, false, false},
		{gatewaysDown, true, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d, sync broke %v", tt.n, tt.syncBroke), func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			for range tt.n {
				to.hs.Errs = append(to.hs.Errs, httpError(502, "", nil))
			}
			to.hs.Sync = make(chan struct{})
			e := to.enqueue(t, send("row", "!room:hs", "gateway errors"))
			done := to.run(e)
			d := to.advanceUntilSends(t, tt.n) // the backoffs between the gateway answers
			to.setSync(tt.syncBroke, time.Time{})
			switch {
			case tt.wantWait:
				to.clock.Advance(restartWindow) // the sample
				to.expectWaits(t, inDoubtWait)  // for sync to come back
				to.setSync(false, to.clock.Now())
				to.handOverSync(nil)
				to.expectWaits(t, inDoubtGrace)
				if to.hs.Calls != tt.n {
					t.Fatalf("sent again before the grace: %d sends", to.hs.Calls)
				}
				to.clock.Advance(inDoubtGrace)
			case tt.n == gatewaysDown:
				if d != restartWindow {
					t.Fatalf("waits %s after %d gateway answers, want the sample after %s", d, tt.n, restartWindow)
				}
				to.clock.Advance(d)
			default:
				to.clock.Advance(d)
			}
			if r := to.answer(t); r.Status != "ok" || to.hs.Calls != tt.n+1 {
				t.Fatalf("response %+v after %d sends", r, to.hs.Calls)
			}
			<-done
		})
	}
}

// TestInDoubtWaitsForLateEcho: a homeserver that answered 500 may have been stopped in the
// middle of the request and store it only once it is back, so the request watches the syncs of
// the grace period after sync works again before it is sent again.
func TestInDoubtWaitsForLateEcho(t *testing.T) {
	tests := []struct {
		name      string
		echoLate  bool
		wantCalls int
	}{
		{"echo in a later sync", true, 1},
		{"no echo within the grace", false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			to.hs.Errs = []error{httpError(500, "M_UNKNOWN", nil)}
			to.hs.Sync = make(chan struct{})
			to.setSync(false, to.clock.Now().Add(-time.Hour))
			e := to.enqueue(t, send("late", "!room:hs", "cut by the stop"))
			done := to.run(e)
			to.expectWaits(t, restartWindow)
			to.setSync(true, time.Time{}) // the homeserver is gone, and sync with it
			to.clock.Advance(restartWindow)
			to.expectWaits(t, inDoubtWait)
			to.setSync(false, to.clock.Now()) // and back
			to.handOverSync(nil)
			to.expectWaits(t, inDoubtGrace)
			var wantEvent id.EventID
			if tt.echoLate {
				wantEvent = "$late"
				to.handOverSync(map[string]id.EventID{e.TxnID: wantEvent})
			} else {
				to.clock.Advance(inDoubtGrace)
			}
			to.expectAnswered(t, done, wantEvent, tt.wantCalls)
		})
	}
}

// TestInDoubtWaitsWhileSyncIsDown: the wait for the echo is not used up by an outage of sync
// (a retry then could not be checked), up to inDoubtMaxWait.
func TestInDoubtWaitsWhileSyncIsDown(t *testing.T) {
	tests := []struct {
		name      string
		recovers  bool // sync comes back, with the echo, after the first bound
		wantCalls int
	}{
		{"sync comes back with the echo", true, 1},
		{"sync stays down past the longest wait", false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			to.hs.Errs = []error{errBroken}
			to.hs.Sync = make(chan struct{})
			to.setSync(true, time.Time{})
			e := to.enqueue(t, send("down", "!room:hs", "cut by the outage"))
			done := to.run(e)
			to.expectWaits(t, restartWindow)
			to.clock.Advance(restartWindow)
			to.expectWaits(t, inDoubtWait) // sent while sync was down: for sync to come back
			to.clock.Advance(inDoubtWait)
			to.expectWaits(t, inDoubtWait) // counted again while sync is down
			var wantEvent id.EventID
			if tt.recovers {
				wantEvent = "$kept"
				to.setSync(false, to.clock.Now())
				to.handOverSync(map[string]id.EventID{e.TxnID: wantEvent})
			} else {
				for waited := 2 * inDoubtWait; waited < inDoubtMaxWait; waited += inDoubtWait {
					to.clock.Advance(inDoubtWait)
					to.sleeps(t)
				}
				to.clock.Advance(inDoubtWait)
			}
			to.expectAnswered(t, done, wantEvent, tt.wantCalls)
		})
	}
}

// twoSteps is a durable action of two events, like a send with options: a message with the
// entry's own transaction ID, kept as progress, then a reaction as step 1 (whose doubt the
// message's echo must not settle).
type twoSteps struct {
	actions.Common
}

func (r *twoSteps) Validate(actions.Targets) *wire.Error { return nil }
func (r *twoSteps) Lane() string                         { return "!room:hs" }

func (r *twoSteps) Deliver(ctx context.Context, d *actions.Delivery) (any, error) {
	var done struct {
		Message id.EventID `json:"message"`
	}
	if ok, err := d.Progress.Load(&done); err != nil {
		return nil, err
	} else if !ok {
		evt, err := d.Matrix.Send(ctx, "!room:hs", event.EventMessage, "message", d.StepTxnID(0))
		if err != nil {
			return nil, err
		}
		done.Message = evt
		if err := d.Progress.Save(ctx, &done); err != nil {
			return nil, err
		}
	}
	return d.Matrix.Send(ctx, "!room:hs", event.EventReaction, "reaction", d.StepTxnID(1))
}

// TestInDoubtWatchesTheFailedStep: the echo that settles a doubt is the failed step's, not the
// entry's first.
func TestInDoubtWatchesTheFailedStep(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	to.Registry = actions.NewRegistry([]actions.Spec{{Name: "two_steps", New: func() actions.Request { return &twoSteps{} }}})
	to.hs.Errs = []error{nil, errBroken}
	to.hs.Sync = make(chan struct{})
	e := to.add(t, Job{Action: "two_steps", Request: &twoSteps{}})
	to.hs.Echoes = map[string]id.EventID{e.TxnID: "$message"} // sync showed the first step
	done := to.run(e)
	to.expectWaits(t, restartWindow)
	if to.hs.Calls != 2 {
		t.Fatalf("%d sends: the reaction was sent again on the strength of the message's echo", to.hs.Calls)
	}
	to.handOverSync(map[string]id.EventID{e.TxnID + ".1": "$reaction"})
	to.expectAnswered(t, done, "", 2)
}

// sendThenFail sends its message, then fails in a step that sends nothing (an upload, say).
type sendThenFail struct {
	actions.Common
}

func (r *sendThenFail) Validate(actions.Targets) *wire.Error { return nil }
func (r *sendThenFail) Lane() string                         { return "!room:hs" }

func (r *sendThenFail) Deliver(ctx context.Context, d *actions.Delivery) (any, error) {
	if _, err := d.Matrix.Send(ctx, "!room:hs", event.EventMessage, "message", d.TxnID); err != nil {
		return nil, err
	}
	return nil, errBroken
}

// TestFailureAfterASettledDoubtBacksOff: once sync showed an entry's send, a failure in a later
// step that sends nothing is not in doubt: the entry waits its backoff instead of trying again
// at once, over and over.
func TestFailureAfterASettledDoubtBacksOff(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	to.Registry = actions.NewRegistry([]actions.Spec{{Name: "send_then_fail", New: func() actions.Request { return &sendThenFail{} }}})
	e := to.add(t, Job{Action: "send_then_fail", Request: &sendThenFail{}})
	to.hs.Echoes = map[string]id.EventID{e.TxnID: "$message"} // the last run's send was delivered
	if err := to.Open(to.work); err != nil {
		t.Fatal(err)
	}
	if d := to.sleeps(t); d != resumeDelay {
		t.Fatalf("resumed after %s, want %s", d, resumeDelay)
	}
	to.clock.Advance(resumeDelay)
	for range 3 {
		d := to.sleeps(t)
		if d < retryBase/2 || d > time.Second {
			t.Fatalf("waited %s after a failure, want a backoff from %s", d, retryBase)
		}
		to.clock.Advance(d)
	}
}
