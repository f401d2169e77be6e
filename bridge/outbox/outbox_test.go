package outbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/actionstest"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopSharedPostgres()
	os.Exit(code)
}

// testOutbox is an outbox with a real store (SQLite in a temp dir, or PostgreSQL), a fake
// homeserver and clock, and the responses it published.
type testOutbox struct {
	*Outbox
	clock     *clock.Fake
	hs        *actionstest.Matrix
	responses actionstest.Responses
}

// eachDB runs fn with a fresh test outbox on SQLite and on PostgreSQL.
func eachDB(t *testing.T, fn func(t *testing.T, to *testOutbox)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, newTestOutbox(t, "", nil)) })
	t.Run("postgres", func(t *testing.T) { fn(t, newTestOutbox(t, testenv.PostgresDatabase(t), nil)) })
}

func newTestOutbox(t *testing.T, databaseURL string, registry *actions.Registry) *testOutbox {
	t.Helper()
	clk := clock.NewFake()
	ctx, cancel := context.WithCancel(zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background()))
	st, err := store.Open(ctx, t.TempDir(), databaseURL, clk)
	if err != nil {
		t.Fatal(err)
	}
	if registry == nil {
		registry = catalog.Default()
	}
	hs := &actionstest.Matrix{}
	ready := make(chan struct{})
	close(ready)
	to := &testOutbox{clock: clk, hs: hs, responses: actionstest.NewResponses()}
	to.Outbox = New(Deps{
		Store: st, Registry: registry, Env: actions.Env{Matrix: hs, Targets: targets.New(targets.Config{}), Options: st, Tags: st},
		Sync: hs, Responder: to.responses, Counters: stats.New(clk), Clock: clk, MaxAge: time.Hour, Ready: ready,
	})
	if err := to.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		to.Wait()
		st.Close()
	})
	return to
}

// enqueue commits a send request to the outbox, as the intake does, without starting it.
func (to *testOutbox) enqueue(t *testing.T, req *actions.Send) *Entry {
	t.Helper()
	if err := req.Validate(to.Env.Targets); err != nil {
		t.Fatal(err)
	}
	return to.add(t, Job{Action: "send", Request: req})
}

// add commits a job to the outbox, as the intake does, without starting it.
func (to *testOutbox) add(t *testing.T, j Job) *Entry {
	t.Helper()
	e, err := to.NewEntry(j)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := to.Add(context.Background(), []*Entry{e}); err != nil {
		t.Fatal(err)
	}
	return e
}

func send(id, to, text string) *actions.Send {
	s := &actions.Send{Text: text}
	s.ID, s.To.To = id, to
	return s
}

// run delivers e in the background; the returned channel closes when deliver returns.
func (to *testOutbox) run(e *Entry) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		to.deliver(to.work, e)
		close(done)
	}()
	return done
}

func (to *testOutbox) sleeps(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-to.clock.Asked:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("the outbox did not wait")
	}
	return 0
}

func (to *testOutbox) pending(t *testing.T) []*store.Entry {
	t.Helper()
	p, err := to.Store.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func httpError(status int, errcode string, extra map[string]any) error {
	resp := mautrix.RespError{ErrCode: errcode, Err: "server says no", StatusCode: status, ExtraData: extra}
	return fmt.Errorf("failed to send: %w", mautrix.HTTPError{Response: &http.Response{StatusCode: status}, RespError: &resp})
}

// errNetwork is a failure to connect: the request never left, so it is not in doubt.
var errNetwork = requestError(&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")})

// errBroken is a connection that broke after the request was sent: it is in doubt.
var errBroken = requestError(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")})

// requestError is err as mautrix returns a request that failed without an answer.
func requestError(err error) error {
	return fmt.Errorf("failed to send: %w", mautrix.HTTPError{WrappedError: &url.Error{Op: "Put", URL: "http://hs", Err: err}, Message: "request error"})
}

// TestDeliverRetriesWithBackoffAndKeepsTxnID: failures that did not reach the homeserver are
// retried after 100 ms (retryBase), doubling (a request in doubt waits for sync too: doubt_test.go).
func TestDeliverRetriesWithBackoffAndKeepsTxnID(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		to.hs.Errs = []error{errNetwork, httpError(429, "M_LIMIT_EXCEEDED", nil), errNetwork}
		e := to.enqueue(t, send("r1", "!room:hs", "hi"))
		done := to.run(e)
		var waits []time.Duration
		for range 3 {
			d := to.sleeps(t)
			waits = append(waits, d)
			to.clock.Advance(d)
		}
		r := to.responses.Next(t)
		<-done
		if r.Status != "ok" || r.ID != "r1" {
			t.Fatalf("response = %+v", r)
		}
		if to.hs.Calls != 4 || len(to.hs.Sent) != 1 || to.hs.Sent[0] != e.TxnID {
			t.Fatalf("calls = %d sent = %v, want the entry's txn %s", to.hs.Calls, to.hs.Sent, e.TxnID)
		}
		// Exponential with ±20% jitter from retryBase: about 100 ms, 200 ms, 400 ms.
		for i, d := range waits {
			base := retryBase << i
			if d < base*8/10 || d > base*12/10 {
				t.Errorf("wait %d = %s, want %s ±20%%", i, d, base)
			}
		}
		if len(to.pending(t)) != 0 {
			t.Fatal("entry still in the outbox")
		}
		if s := to.Stats(); s.Sent != 1 || s.OutboxPending != 0 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestDeliverHonoursRetryAfter(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		to.hs.Errs = []error{httpError(429, "M_LIMIT_EXCEEDED", map[string]any{"retry_after_ms": float64(7000)})}
		done := to.run(to.enqueue(t, send("", "!room:hs", "hi")))
		if d := to.sleeps(t); d < 7*time.Second {
			t.Fatalf("waited %s, want at least the server's 7s", d)
		}
		to.clock.Advance(8 * time.Second)
		if r := to.responses.Next(t); r.Status != "ok" {
			t.Fatalf("response = %+v", r)
		}
		<-done
	})
}

func TestDeliverPermanentErrorAnswersAtOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		to.hs.Errs = []error{httpError(403, "M_FORBIDDEN", nil)}
		done := to.run(to.enqueue(t, send("f", "!room:hs", "hi")))
		r := to.responses.Next(t)
		<-done
		if r.Status != "error" || r.Error.Code != wire.CodeMatrixError || r.Error.ErrCode != "M_FORBIDDEN" || r.ID != "f" {
			t.Fatalf("response = %+v %+v", r, r.Error)
		}
		if to.hs.Calls != 1 || len(to.pending(t)) != 0 {
			t.Fatalf("calls = %d pending = %d", to.hs.Calls, len(to.pending(t)))
		}
		if s := to.Stats(); s.Failed != 1 || !strings.Contains(s.LastError, "M_FORBIDDEN") {
			t.Fatalf("stats = %+v", s)
		}
	})
}

func TestDeliverExpiresInsteadOfDeliveringLate(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		to.hs.Errs = slices.Repeat([]error{errNetwork}, 8) // backoffs of 100 ms doubling: 25 s
		req := send("x", "!room:hs", "alarm")
		req.ExpireS = 5
		start := to.clock.Now()
		done := to.run(to.enqueue(t, req))
		for {
			d := to.sleeps(t)
			to.clock.Advance(d)
			select {
			case r := <-to.responses:
				<-done
				if r.Status != "error" || r.Error.Code != wire.CodeExpired {
					t.Fatalf("response = %+v", r)
				}
				if len(to.hs.Sent) != 0 {
					t.Fatal("delivered after all")
				}
				if elapsed := to.clock.Now().Sub(start); elapsed > 6*time.Second {
					t.Fatalf("expired only after %s, want about 5s", elapsed)
				}
				if s := to.Stats(); s.Expired != 1 {
					t.Fatalf("stats = %+v", s)
				}
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
}

func TestDeliverExpiry(t *testing.T) {
	tests := []struct {
		name    string
		expireS float64
		wait    time.Duration
	}{
		{"expire_s passed before the first attempt", 1, 2 * time.Second},
		{"older than OUTBOX_MAX_AGE", 0, 2 * time.Hour}, // 1h in the test outbox
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			req := send("", "!room:hs", "late")
			req.ExpireS = tc.expireS
			e := to.enqueue(t, req)
			to.clock.Advance(tc.wait) // e.g. the bridge was down
			<-to.run(e)
			if r := to.responses.Next(t); r.Error == nil || r.Error.Code != wire.CodeExpired {
				t.Fatalf("response = %+v", r)
			}
			if to.hs.Calls != 0 {
				t.Fatal("tried to deliver an expired message")
			}
		})
	}
}

func TestRedactAfterIsScheduledInTheOutbox(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		req := send("", "!room:hs", "temporary")
		req.RedactAfterS = 60
		done := to.run(to.enqueue(t, req))
		r := to.responses.Next(t)
		<-done
		eventID := r.Data.(map[string]any)["event_id"]
		pending := to.pending(t)
		if len(pending) != 1 || pending[0].Action != actions.ActionAutoRedact {
			t.Fatalf("pending = %v", pending)
		}
		if want := to.clock.Now().Add(time.Minute); !pending[0].NotBefore.Equal(want.Truncate(time.Millisecond)) {
			t.Fatalf("not_before = %s, want %s", pending[0].NotBefore, want)
		}
		if s := to.Stats(); s.ScheduledRedactions != 1 || s.OutboxPending != 0 {
			t.Fatalf("stats = %+v", s)
		}
		// The lane was started by finish; after a minute the message is redacted, with no response.
		if d := to.sleeps(t); d != time.Minute {
			t.Fatalf("scheduled wait = %s", d)
		}
		to.clock.Advance(time.Minute)
		actionstest.WaitFor(t, func() bool { return len(to.pending(t)) == 0 })
		if len(to.hs.Redacted) != 1 || string(to.hs.Redacted[0]) != eventID {
			t.Fatalf("redacted = %v, want %s", to.hs.Redacted, eventID)
		}
		select {
		case extra := <-to.responses:
			t.Fatalf("auto-redaction answered: %+v", extra)
		default:
		}
	})
}

func TestLanesKeepOrderPerTarget(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][]int{}
	release := make(chan struct{})
	l := newLanes(func(_ context.Context, e *Entry) {
		if e.Lane == "slow" {
			<-release
		}
		mu.Lock()
		seen[e.Lane] = append(seen[e.Lane], int(e.ID))
		mu.Unlock()
	}, func(context.Context, string, int) ([]*Entry, error) {
		t.Error("a lane of fewer than maxQueued entries read the store")
		return nil, nil
	}, func(*Entry) {})
	ctx := context.Background()
	for i := range 50 {
		e := &Entry{}
		e.ID, e.Lane = int64(i), []string{"slow", "a", "b"}[i%3]
		l.push(ctx, e)
	}
	// The slow lane blocks; the others finish without it.
	actionstest.WaitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen["a"])+len(seen["b"]) == 33
	})
	close(release)
	l.wait()
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

// laneStore is the outbox table for lanes: committed entries by ID, removed when run.
type laneStore struct {
	mu        sync.Mutex
	rows      map[int64]*Entry
	delivered []int64
	kept      int // pushes the lane kept in memory
}

func (s *laneStore) commit(from, to int64) []*Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Entry
	for id := from; id <= to; id++ {
		e := &Entry{}
		e.ID, e.Lane = id, "room"
		s.rows[id] = e
		out = append(out, e)
	}
	return out
}

func (s *laneStore) run(_ context.Context, e *Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delivered = append(s.delivered, e.ID)
	delete(s.rows, e.ID)
}

func (s *laneStore) load(_ context.Context, _ string, limit int) ([]*Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := slices.Sorted(maps.Keys(s.rows))
	var out []*Entry
	for _, id := range ids[:min(limit, len(ids))] {
		e := &Entry{}
		e.ID, e.Lane = id, "room"
		out = append(out, e)
	}
	return out, nil
}

func (s *laneStore) keep(*Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept++
}

func (s *laneStore) keptCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kept
}

func (s *laneStore) deliveredCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.delivered)
}

// TestLongLanesStayInTheStore: a lane keeps maxQueued entries in memory and reads the others
// from the store when it gets to them; an entry it read before its push came is not run twice;
// every entry is run once, in order.
func TestLongLanesStayInTheStore(t *testing.T) {
	st := &laneStore{rows: map[int64]*Entry{}}
	started, release := make(chan struct{}), make(chan struct{})
	first := true
	l := newLanes(func(ctx context.Context, e *Entry) {
		if first { // the lane's worker holds the first entry until released
			first = false
			close(started)
			<-release
		}
		st.run(ctx, e)
	}, st.load, st.keep)
	ctx := context.Background()
	push := func(entries []*Entry) int {
		before := st.keptCount()
		for _, e := range entries {
			l.push(ctx, e)
		}
		return st.keptCount() - before
	}
	steps := []struct {
		name     string
		do       func() int // returns how many pushes were kept in memory
		wantKept int
	}{
		{"a long queue keeps maxQueued besides the one being run", func() int {
			entries := st.commit(1, 300)
			kept := push(entries[:1])
			<-started
			return kept + push(entries[1:])
		}, maxQueued + 1},
		{"committed, pushed later", func() int {
			late := st.commit(301, 310)
			close(release)
			actionstest.WaitFor(t, func() bool { return st.deliveredCount() == 310 })
			return push(late)
		}, 0},
		{"caught up: pushes are kept again", func() int {
			kept := push(st.commit(311, 311))
			actionstest.WaitFor(t, func() bool { return st.deliveredCount() == 311 })
			return kept
		}, 1},
	}
	for _, step := range steps {
		if kept := step.do(); kept != step.wantKept {
			t.Fatalf("%s: %d pushes kept in memory, want %d", step.name, kept, step.wantKept)
		}
	}
	l.wait()
	for i, id := range st.delivered {
		if id != int64(i+1) {
			t.Fatalf("delivered out of order or twice at %d: %v", i, st.delivered)
		}
	}
}

// TestDrainIgnoresOnlyLanesThatSleep: a shutdown waits for lanes at work, not for lanes that
// wait to retry.
func TestDrainIgnoresOnlyLanesThatSleep(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	to.hs.Errs = []error{errNetwork}
	to.Start([]*Entry{to.enqueue(t, send("", "!room:hs", "retrying"))})
	to.sleeps(t) // the lane waits to retry
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if !to.Drain(ctx) {
		t.Fatal("drain waited for a lane that only sleeps")
	}
}

func TestRecoveredEntryAlreadySentIsNotSentAgain(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		e := to.enqueue(t, send("again", "!room:hs", "in flight at the crash"))
		e.inDoubt = to.hs.NextSync()
		to.hs.Echoes = map[string]id.EventID{e.TxnID: "$already"}
		<-to.run(e)
		r := to.responses.Next(t)
		if r.Status != "ok" || r.Data.(map[string]any)["event_id"] != "$already" {
			t.Fatalf("response = %+v", r)
		}
		if to.hs.Calls != 0 {
			t.Fatal("sent again")
		}
	})
}

// TestOpenResumesInDoubt: entries left by the last run are resumed after the resume delay, in
// doubt, and one that sync shows as sent is answered without sending.
func TestOpenResumesInDoubt(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	e := to.enqueue(t, send("left", "!room:hs", "left at the crash"))
	to.hs.Echoes = map[string]id.EventID{e.TxnID: "$before"}
	if err := to.Open(to.work); err != nil {
		t.Fatal(err)
	}
	if d := to.sleeps(t); d != resumeDelay {
		t.Fatalf("resumed after %s, want %s", d, resumeDelay)
	}
	to.clock.Advance(resumeDelay)
	if r := to.responses.Next(t); r.Status != "ok" || r.Data.(map[string]any)["event_id"] != "$before" || to.hs.Calls != 0 {
		t.Fatalf("response = %+v after %d sends", r, to.hs.Calls)
	}
}

// TestOpenSendsScheduledOnTime: an entry found at start that is due later was never tried: it
// is not in doubt and goes out at its time, without the resume delay or a wait for sync.
func TestOpenSendsScheduledOnTime(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	req := send("later", "!room:hs", "scheduled")
	if err := req.Validate(to.Env.Targets); err != nil {
		t.Fatal(err)
	}
	to.add(t, Job{Action: "send", Request: req, NotBefore: to.clock.Now().Add(10 * time.Second)})
	if err := to.Open(to.work); err != nil {
		t.Fatal(err)
	}
	if d := to.sleeps(t); d != 10*time.Second {
		t.Fatalf("waited %s, want the 10 s until it is due", d)
	}
	to.clock.Advance(10 * time.Second)
	if r := to.responses.Next(t); r.Status != "ok" || to.hs.Calls != 1 {
		t.Fatalf("response = %+v after %d sends", r, to.hs.Calls)
	}
}

// TestProgressKeepsFinishedSteps: a retry of an action made of several steps does not do a
// finished step again.
func TestProgressKeepsFinishedSteps(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		to.Registry = actions.NewRegistry([]actions.Spec{{Name: "two_steps", New: func() actions.Request { return &twoSteps{} }}})
		to.hs.Errs = []error{nil, errNetwork}
		e := to.add(t, Job{Action: "two_steps", Request: &twoSteps{}})
		done := to.run(e)
		to.sleeps(t) // the second step failed
		if p := to.pending(t); len(p) != 1 || !strings.Contains(string(p[0].Progress), "$"+e.TxnID) {
			t.Fatalf("stored progress = %+v", p)
		}
		to.clock.Advance(2 * time.Second)
		r := to.responses.Next(t)
		<-done
		want := []string{e.TxnID, e.TxnID + ".1"}
		if r.Status != "ok" || strings.Join(to.hs.Sent, ",") != strings.Join(want, ",") {
			t.Fatalf("response %+v, sent %v, want %v", r, to.hs.Sent, want)
		}
	})
}

// TestUndecodableEntryIsAnswered: a stored request that no longer decodes (written by another
// version, say) is answered invalid_request with its id and removed, not retried for ever.
func TestUndecodableEntryIsAnswered(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	e := &Entry{spec: actions.Spec{Name: "send"}}
	e.Action, e.Lane, e.TxnID, e.CreatedAt = "send", "!room:hs", "m2mbroken", to.clock.Now()
	e.Request = []byte(`{"id":"old","to":5}`)
	if _, err := to.Add(context.Background(), []*Entry{e}); err != nil {
		t.Fatal(err)
	}
	<-to.run(e)
	if r := to.responses.Next(t); r.ID != "old" || r.Error == nil || r.Error.Code != wire.CodeInvalidRequest {
		t.Fatalf("response = %+v", r)
	}
	if len(to.pending(t)) != 0 || to.hs.Calls != 0 {
		t.Fatal("the broken entry was kept or sent")
	}
}

// TestDrainWaitsForALaneRecordingItsOutcome: a lane that retries writing its outcome to a
// failing store is working, not sleeping: a shutdown waits for it.
func TestDrainWaitsForALaneRecordingItsOutcome(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	e := to.enqueue(t, send("", "!room:hs", "sent, outcome not recorded yet"))
	to.Store.Close() // every write fails from now on
	to.Start([]*Entry{e})
	if d := to.sleeps(t); d != time.Second {
		t.Fatalf("waited %s, want the store retry's second", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if to.Drain(ctx) {
		t.Fatal("drain ended while a lane was still recording its outcome")
	}
}

// TestUpgradedRoomSharesItsReplacementsLane: after a room upgrade, requests naming the old room
// ID queue in the lane of the new room, so neither overtakes the other.
func TestUpgradedRoomSharesItsReplacementsLane(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	to.Env.Targets.(*targets.Targets).Upgrade("!old:hs", "!new:hs")
	for _, target := range []string{"!old:hs", "!new:hs"} {
		req := send("", target, "hi")
		if werr := req.Validate(to.Env.Targets); werr != nil {
			t.Fatal(werr)
		}
		e, err := to.NewEntry(Job{Action: "send", Request: req})
		if err != nil {
			t.Fatal(err)
		}
		if e.Lane != "!new:hs" {
			t.Fatalf("a request to %s queues in lane %s, want !new:hs", target, e.Lane)
		}
	}
}

// TestResumeKeepsTheAge: resuming an entry at start does not renew its OUTBOX_MAX_AGE: its age
// counts from when the bridge received it, across restarts.
func TestResumeKeepsTheAge(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	e := to.enqueue(t, send("old", "!room:hs", "received long ago"))
	to.clock.Advance(59 * time.Minute)
	if err := to.Open(to.work); err != nil {
		t.Fatal(err)
	}
	to.sleeps(t)
	to.liveMu.Lock()
	resumed := to.live[e.ID]
	to.liveMu.Unlock()
	if resumed == nil {
		t.Fatal("the entry was not resumed")
	}
	if got, want := to.deadline(resumed), e.CreatedAt.Add(time.Hour); !got.Equal(want) {
		t.Fatalf("deadline %s after the resume, want %s (received + OUTBOX_MAX_AGE)", got, want)
	}
}
