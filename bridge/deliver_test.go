package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// fakeClock is a Clock whose time moves only when the test advances it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	asked   chan time.Duration // every After call, so a test can wait for the bridge to sleep
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), asked: make(chan time.Duration, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	c.mu.Unlock()
	c.asked <- d
	return ch
}

// Advance moves time forward and wakes the sleepers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// fakeSender plays the homeserver: each call takes the next scripted error (nil = success).
type fakeSender struct {
	mu       sync.Mutex
	errs     []error
	sent     []string // txn IDs of successful sends, in order
	redacted []id.EventID
	calls    int
	echoes   map[string]id.EventID // what sync echoed before a restart
	// sync, when set, is what NextSync returns (a test closes it to hand over a sync);
	// otherwise the next sync has always come already.
	sync         chan struct{}
	healthySince time.Time
	unhealthy    bool // sync is down
}

func (f *fakeSender) next() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if len(f.errs) == 0 {
		return nil
	}
	err := f.errs[0]
	f.errs = f.errs[1:]
	return err
}

func (f *fakeSender) NextSync() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sync != nil {
		return f.sync
	}
	c := make(chan struct{})
	close(c)
	return c
}

func (f *fakeSender) Healthy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.unhealthy
}

func (f *fakeSender) HealthySince() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.healthySince
}

func (f *fakeSender) SentWithTxn(_ context.Context, txnID string) (id.EventID, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	evtID, ok := f.echoes[txnID]
	return evtID, ok
}

func (f *fakeSender) Resolve(_ context.Context, target string) (id.RoomID, error) {
	return id.RoomID(target), nil
}

func (f *fakeSender) Send(_ context.Context, _ id.RoomID, _ event.Type, _ any, txnID string) (id.EventID, error) {
	if err := f.next(); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, txnID)
	return id.EventID("$" + txnID), nil
}

func (f *fakeSender) Redact(_ context.Context, _ id.RoomID, eventID id.EventID, _, _ string) (id.EventID, error) {
	if err := f.next(); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.redacted = append(f.redacted, eventID)
	return "$redaction", nil
}

type publishFunc func(ctx context.Context, topic string, retained bool, payload []byte) error

func (f publishFunc) Publish(ctx context.Context, topic string, retained bool, payload []byte) error {
	return f(ctx, topic, retained, payload)
}

func (f publishFunc) PublishOrdered(ctx context.Context, topic string, retained bool, payload []byte) func(context.Context) error {
	err := f(ctx, topic, retained, payload)
	return func(context.Context) error { return err }
}

// testBridge is a Bridge with a real outbox (SQLite in a temp dir), a fake homeserver and clock,
// and the responses it published.
type testBridge struct {
	*Bridge
	clock     *fakeClock
	sender    *fakeSender
	responses chan Response
}

// eachDB runs fn with a fresh test bridge on SQLite and on PostgreSQL.
func eachDB(t *testing.T, fn func(t *testing.T, tb *testBridge)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, newTestBridge(t, "")) })
	t.Run("postgres", func(t *testing.T) { fn(t, newTestBridge(t, postgresDatabase(t))) })
}

func newTestBridge(t *testing.T, databaseURL string) *testBridge {
	t.Helper()
	clock := newFakeClock()
	cfg := Config{OutboxMaxAge: time.Hour, DataDir: t.TempDir(), DatabaseURL: databaseURL}
	b := New(cfg, Options{Clock: clock})
	b.log = zerolog.New(zerolog.NewTestWriter(t))
	if err := b.openDatabase(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.db.Close() })
	tb := &testBridge{Bridge: b, clock: clock, sender: &fakeSender{}, responses: make(chan Response, 10)}
	b.out = tb.sender
	b.pub = publishFunc(func(_ context.Context, topic string, _ bool, payload []byte) error {
		if strings.Contains(topic, "/response/") {
			var r Response
			if err := json.Unmarshal(payload, &r); err != nil {
				t.Errorf("bad response: %s", payload)
			}
			tb.responses <- r
		}
		return nil
	})
	close(b.ready)
	return tb
}

// enqueue commits a send request to the outbox, as intake does.
func (tb *testBridge) enqueue(t *testing.T, req SendRequest) *entry {
	t.Helper()
	raw, _ := json.Marshal(req)
	now := tb.clock.Now()
	e := &entry{Action: ActionSend, Lane: req.To, Request: raw, TxnID: newTxnID(), CreatedAt: now}
	if req.ExpireS > 0 {
		e.ExpiresAt = now.Add(seconds(req.ExpireS))
	}
	if err := tb.outbox.add(context.Background(), []*entry{e}); err != nil {
		t.Fatal(err)
	}
	return e
}

// run delivers e in the background; the returned channel closes when deliver returns.
func (tb *testBridge) run(e *entry) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		tb.deliver(context.Background(), e)
		close(done)
	}()
	return done
}

func (tb *testBridge) response(t *testing.T) Response {
	t.Helper()
	select {
	case r := <-tb.responses:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no response")
	}
	return Response{}
}

func (tb *testBridge) sleeps(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-tb.clock.asked:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("the bridge did not wait")
	}
	return 0
}

func (tb *testBridge) pending(t *testing.T) int {
	t.Helper()
	p, err := tb.outbox.pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(p)
}

var errNetwork = errors.New("dial tcp 127.0.0.1:8008: connect: connection refused")

func TestDeliverRetriesWithBackoffAndKeepsTxnID(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		tb.sender.errs = []error{errNetwork, httpError(502, "M_UNKNOWN", nil), errNetwork}
		e := tb.enqueue(t, SendRequest{ID: "r1", To: "!room:hs", Text: "hi"})
		done := tb.run(e)
		var waits []time.Duration
		for range 3 {
			d := tb.sleeps(t)
			waits = append(waits, d)
			tb.clock.Advance(d)
		}
		r := tb.response(t)
		<-done
		if r.Status != "ok" || r.ID != "r1" {
			t.Fatalf("response = %+v", r)
		}
		if tb.sender.calls != 4 || len(tb.sender.sent) != 1 || tb.sender.sent[0] != e.TxnID {
			t.Fatalf("calls = %d sent = %v, want the entry's txn %s", tb.sender.calls, tb.sender.sent, e.TxnID)
		}
		// Exponential with ±20% jitter: about 1s, 2s, 4s.
		for i, d := range waits {
			base := retryBase << i
			if d < base*8/10 || d > base*12/10 {
				t.Errorf("wait %d = %s, want %s ±20%%", i, d, base)
			}
		}
		if tb.pending(t) != 0 {
			t.Fatal("entry still in the outbox")
		}
		if s := tb.stats.snapshot(); s.Sent != 1 || s.OutboxPending != 0 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestDeliverHonoursRetryAfter(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		tb.sender.errs = []error{httpError(429, "M_LIMIT_EXCEEDED", map[string]any{"retry_after_ms": float64(7000)})}
		done := tb.run(tb.enqueue(t, SendRequest{To: "!room:hs", Text: "hi"}))
		if d := tb.sleeps(t); d < 7*time.Second {
			t.Fatalf("waited %s, want at least the server's 7s", d)
		}
		tb.clock.Advance(8 * time.Second)
		if r := tb.response(t); r.Status != "ok" {
			t.Fatalf("response = %+v", r)
		}
		<-done
	})
}

func TestDeliverPermanentErrorAnswersAtOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		tb.sender.errs = []error{httpError(403, "M_FORBIDDEN", nil)}
		done := tb.run(tb.enqueue(t, SendRequest{ID: "f", To: "!room:hs", Text: "hi"}))
		r := tb.response(t)
		<-done
		if r.Status != "error" || r.Error.Code != CodeMatrixError || r.Error.ErrCode != "M_FORBIDDEN" || r.ID != "f" {
			t.Fatalf("response = %+v %+v", r, r.Error)
		}
		if tb.sender.calls != 1 || tb.pending(t) != 0 {
			t.Fatalf("calls = %d pending = %d", tb.sender.calls, tb.pending(t))
		}
		if s := tb.stats.snapshot(); s.Failed != 1 || !strings.Contains(s.LastError, "M_FORBIDDEN") {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestDeliverExpiresInsteadOfDeliveringLate(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		tb.sender.errs = []error{errNetwork, errNetwork, errNetwork, errNetwork, errNetwork}
		done := tb.run(tb.enqueue(t, SendRequest{ID: "x", To: "!room:hs", Text: "alarm", ExpireS: 5}))
		for {
			d := tb.sleeps(t)
			tb.clock.Advance(d)
			select {
			case r := <-tb.responses:
				<-done
				if r.Status != "error" || r.Error.Code != CodeExpired {
					t.Fatalf("response = %+v", r)
				}
				if len(tb.sender.sent) != 0 {
					t.Fatal("delivered after all")
				}
				if elapsed := tb.clock.Now().Sub(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)); elapsed > 6*time.Second {
					t.Fatalf("expired only after %s, want about 5s", elapsed)
				}
				if s := tb.stats.snapshot(); s.Expired != 1 {
					t.Fatalf("stats = %+v", s)
				}
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
}

func TestDeliverExpiredBeforeFirstAttempt(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		e := tb.enqueue(t, SendRequest{To: "!room:hs", Text: "late", ExpireS: 1})
		tb.clock.Advance(2 * time.Second) // e.g. the bridge was down
		<-tb.run(e)
		if r := tb.response(t); r.Error == nil || r.Error.Code != CodeExpired {
			t.Fatalf("response = %+v", r)
		}
		if tb.sender.calls != 0 {
			t.Fatal("tried to deliver an expired message")
		}
	})
}

func TestDeliverMaxAge(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		tb.sender.errs = []error{errNetwork}
		e := tb.enqueue(t, SendRequest{To: "!room:hs", Text: "old"})
		tb.clock.Advance(2 * time.Hour) // OUTBOX_MAX_AGE is 1h in the test bridge
		<-tb.run(e)
		if r := tb.response(t); r.Error == nil || r.Error.Code != CodeExpired {
			t.Fatalf("response = %+v", r)
		}
	})
}

func TestRedactAfterIsScheduledInTheOutbox(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		done := tb.run(tb.enqueue(t, SendRequest{To: "!room:hs", Text: "temporary", RedactAfterS: 60}))
		r := tb.response(t)
		<-done
		data, _ := json.Marshal(r.Data)
		var sent SendResult
		_ = json.Unmarshal(data, &sent)
		pending, err := tb.outbox.pending(context.Background())
		if err != nil || len(pending) != 1 || pending[0].Action != actionAutoRedact {
			t.Fatalf("pending = %v %v", pending, err)
		}
		if want := tb.clock.Now().Add(time.Minute); !pending[0].NotBefore.Equal(want.Truncate(time.Millisecond)) {
			t.Fatalf("not_before = %s, want %s", pending[0].NotBefore, want)
		}
		// The lane was started by finish; after a minute the message is redacted, with no response.
		if d := tb.sleeps(t); d != time.Minute {
			t.Fatalf("scheduled wait = %s", d)
		}
		tb.clock.Advance(time.Minute)
		tb.lanes.wait(context.Background())
		if len(tb.sender.redacted) != 1 || tb.sender.redacted[0] != sent.EventID {
			t.Fatalf("redacted = %v, want %s", tb.sender.redacted, sent.EventID)
		}
		if tb.pending(t) != 0 {
			t.Fatal("auto-redaction still pending")
		}
		select {
		case extra := <-tb.responses:
			t.Fatalf("auto-redaction answered: %+v", extra)
		default:
		}
	})
}

func TestLanesKeepOrderPerTarget(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][]int{}
	release := make(chan struct{})
	l := newLanes(func(_ context.Context, e *entry) {
		if e.Lane == "slow" {
			<-release
		}
		mu.Lock()
		seen[e.Lane] = append(seen[e.Lane], int(e.ID))
		mu.Unlock()
	})
	ctx := context.Background()
	for i := range 50 {
		l.push(ctx, &entry{ID: int64(i), Lane: []string{"slow", "a", "b"}[i%3]})
	}
	// The slow lane blocks; the others finish without it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(seen["a"]) + len(seen["b"])
		mu.Unlock()
		if n == 33 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("other lanes waited for the slow one: %v", seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	l.wait(ctx)
	for lane, ids := range seen {
		for i := 1; i < len(ids); i++ {
			if ids[i] < ids[i-1] {
				t.Fatalf("lane %s out of order: %v", lane, ids)
			}
		}
	}
	if len(seen["slow"]) != 17 {
		t.Fatalf("slow lane = %v", seen["slow"])
	}
}

func TestRecoveredEntryAlreadySentIsNotSentAgain(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		e := tb.enqueue(t, SendRequest{ID: "again", To: "!room:hs", Text: "in flight at the crash"})
		e.inDoubt = tb.sender.NextSync()
		tb.sender.echoes = map[string]id.EventID{e.TxnID: "$already"}
		<-tb.run(e)
		r := tb.response(t)
		if r.Status != "ok" || r.Data.(map[string]any)["event_id"] != "$already" {
			t.Fatalf("response = %+v", r)
		}
		if tb.sender.calls != 0 {
			t.Fatal("sent again")
		}
	})
}

// echoInNextSync lets the fake sync that closes syncs carry the echo of e as evtID.
func (tb *testBridge) echoInNextSync(e *entry, evtID id.EventID, syncs chan struct{}) {
	tb.sender.mu.Lock()
	tb.sender.echoes = map[string]id.EventID{e.TxnID: evtID}
	tb.sender.mu.Unlock()
	close(syncs)
}

// expectAnswered waits for deliver to return and checks its ok response (with wantEvent, when
// set) and the number of sends it made.
func (tb *testBridge) expectAnswered(t *testing.T, done <-chan struct{}, wantEvent id.EventID, wantCalls int) {
	t.Helper()
	<-done
	r := tb.response(t)
	if r.Status != "ok" || (wantEvent != "" && r.Data.(map[string]any)["event_id"] != string(wantEvent)) {
		t.Fatalf("response = %+v", r)
	}
	if tb.sender.calls != wantCalls {
		t.Fatalf("%d sends, want %d", tb.sender.calls, wantCalls)
	}
}

// TestInDoubtWaitsForLateEcho: after an outage the homeserver may store a request it was
// interrupted in only once it is back, so an entry in doubt watches the syncs of the grace
// period for its echo before sending again.
func TestInDoubtWaitsForLateEcho(t *testing.T) {
	tests := []struct {
		name      string
		echoLate  bool
		wantCalls int
	}{
		{"echo in a later sync", true, 0},
		{"no echo within the grace", false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestBridge(t, "")
			e := tb.enqueue(t, SendRequest{ID: "late", To: "!room:hs", Text: "cut by the outage"})
			tb.sender.healthySince = tb.clock.Now() // sync just came back
			e.inDoubt = tb.sender.NextSync()        // and handed over its first sync
			syncs := make(chan struct{})
			tb.sender.sync = syncs
			done := tb.run(e)
			if d := tb.sleeps(t); d != inDoubtWait {
				t.Fatalf("first wait %s, want the bound %s", d, inDoubtWait)
			}
			if d := tb.sleeps(t); d != inDoubtGrace {
				t.Fatalf("second wait %s, want the grace %s", d, inDoubtGrace)
			}
			var wantEvent id.EventID
			if tt.echoLate {
				wantEvent = "$late"
				tb.echoInNextSync(e, wantEvent, syncs)
			} else {
				tb.clock.Advance(inDoubtGrace)
			}
			tb.expectAnswered(t, done, wantEvent, tt.wantCalls)
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
		{"sync comes back with the echo", true, 0},
		{"sync stays down past the longest wait", false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestBridge(t, "")
			e := tb.enqueue(t, SendRequest{ID: "down", To: "!room:hs", Text: "cut by the outage"})
			syncs := make(chan struct{})
			tb.sender.sync, tb.sender.unhealthy = syncs, true
			e.inDoubt = syncs
			done := tb.run(e)
			if d := tb.sleeps(t); d != inDoubtWait {
				t.Fatalf("first wait %s, want %s", d, inDoubtWait)
			}
			tb.clock.Advance(inDoubtWait)
			if d := tb.sleeps(t); d != inDoubtWait {
				t.Fatalf("after the bound, with sync down: wait %s, want another %s", d, inDoubtWait)
			}
			var wantEvent id.EventID
			if tt.recovers {
				wantEvent = "$kept"
				tb.sender.mu.Lock()
				tb.sender.unhealthy, tb.sender.healthySince = false, tb.clock.Now()
				tb.sender.mu.Unlock()
				tb.echoInNextSync(e, wantEvent, syncs)
			} else {
				for waited := 2 * inDoubtWait; waited < inDoubtMaxWait; waited += inDoubtWait {
					tb.clock.Advance(inDoubtWait)
					tb.sleeps(t)
				}
				tb.clock.Advance(inDoubtWait)
			}
			tb.expectAnswered(t, done, wantEvent, tt.wantCalls)
		})
	}
}

func TestMayHaveArrived(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	read := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	status := func(code int) error {
		return mautrix.HTTPError{Response: &http.Response{StatusCode: code}, Message: "failed"}
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no connection", mautrix.HTTPError{WrappedError: &url.Error{Op: "Put", URL: "http://hs", Err: dial}, Message: "request error"}, false},
		{"connection broke", mautrix.HTTPError{WrappedError: &url.Error{Op: "Put", URL: "http://hs", Err: read}, Message: "request error"}, true},
		{"server error", status(500), true},
		{"bad gateway", status(502), true},
		{"refused request", status(403), false},
		{"unknown target", fmt.Errorf("failed: %w", matrix.ErrUnknownTarget), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mayHaveArrived(tt.err); got != tt.want {
				t.Fatalf("mayHaveArrived(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
