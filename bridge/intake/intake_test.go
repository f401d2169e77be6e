package intake

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/actionstest"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/outbox"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// fakeQueue is the outbox; it logs its calls (and the acks) in order.
type fakeQueue struct {
	mu        sync.Mutex
	log       []string
	committed map[string]bool // MQTT keys
	// refuse is an action whose NewEntry fails.
	refuse string
	// accepted are the kept responses by action and request id ("" while pending).
	accepted   map[string]map[string]json.RawMessage
	acceptedAt map[string]time.Time // of Once requests, by action and id
}

func (q *fakeQueue) add(s string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.log = append(q.log, s)
}

func (q *fakeQueue) calls() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return strings.Join(q.log, "\n")
}

func (q *fakeQueue) Seen(_ context.Context, key string) (bool, error) { return q.committed[key], nil }

func (q *fakeQueue) Accepted(_ context.Context, action string, ids []string) (map[string]json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	found := map[string]json.RawMessage{}
	for _, id := range ids {
		if r, ok := q.accepted[action][id]; ok {
			found[id] = r
		}
	}
	return found, nil
}

func (q *fakeQueue) Watch(func(context.Context, string, string, json.RawMessage)) {}

// ClaimRequest, KeepResponse and ForgetRequest keep the ids of Once requests in accepted, as
// the store does; acceptedAt is when each was claimed.
func (q *fakeQueue) ClaimRequest(_ context.Context, action, id string, at time.Time) (store.Claim, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if response, ok := q.accepted[action][id]; ok {
		return store.Claim{Response: response, AcceptedAt: q.acceptedAt[action+" "+id]}, nil
	}
	if q.accepted == nil {
		q.accepted = map[string]map[string]json.RawMessage{}
	}
	if q.accepted[action] == nil {
		q.accepted[action] = map[string]json.RawMessage{}
	}
	if q.acceptedAt == nil {
		q.acceptedAt = map[string]time.Time{}
	}
	q.accepted[action][id], q.acceptedAt[action+" "+id] = json.RawMessage{}, at
	return store.Claim{Claimed: true, AcceptedAt: at}, nil
}

func (q *fakeQueue) ForgetRequest(_ context.Context, action, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.accepted[action][id]) == 0 {
		delete(q.accepted[action], id)
	}
	return nil
}

func (q *fakeQueue) KeepResponse(_ context.Context, action, id string, response json.RawMessage) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.accepted[action][id] = response
	return nil
}

func (q *fakeQueue) NewEntry(j outbox.Job) (*outbox.Entry, error) {
	if j.Action == q.refuse {
		return nil, fmt.Errorf("failed to queue a request: %s refused", j.Action)
	}
	e := &outbox.Entry{}
	e.Action, e.Lane, e.MQTTKey, e.RequestID = j.Action, j.Request.Lane(), j.MQTTKey, j.Request.RequestID()
	return e, nil
}

func (q *fakeQueue) Add(_ context.Context, entries []*outbox.Entry) ([]outbox.Repeat, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var repeats []outbox.Repeat
	for _, e := range entries {
		if e.RequestID != "" && q.accepted != nil { // as the store remembers it, pending
			if response, ok := q.accepted[e.Action][e.RequestID]; ok {
				repeats = append(repeats, outbox.Repeat{Entry: e, Response: response})
				continue
			}
			if q.accepted[e.Action] == nil {
				q.accepted[e.Action] = map[string]json.RawMessage{}
			}
			q.accepted[e.Action][e.RequestID] = json.RawMessage{}
		}
		q.log = append(q.log, "add "+e.Action+" "+e.Lane)
	}
	return repeats, nil
}

func (q *fakeQueue) Start(entries []*outbox.Entry) {
	for _, e := range entries {
		q.add("start " + e.Action)
	}
}

type testIntake struct {
	*Intake
	queue     *fakeQueue
	hs        *actionstest.Matrix
	clock     *clock.Fake
	responses actionstest.Responses
	ready     chan struct{}
}

func newTestIntake(t *testing.T) *testIntake {
	t.Helper()
	return newTestIntakeWith(t, nil)
}

// newTestIntakeWith is newTestIntake with changes to its Deps.
func newTestIntakeWith(t *testing.T, change func(*Deps)) *testIntake {
	t.Helper()
	ti := &testIntake{queue: &fakeQueue{committed: map[string]bool{}}, hs: &actionstest.Matrix{}, clock: clock.NewFake(),
		responses: actionstest.NewResponses(), ready: make(chan struct{})}
	tg := targets.New(targets.Config{Names: targets.Names{"kitchen": "!k:hs"}})
	deps := Deps{
		Topics: wire.Topics{Base: "m2m", Shortcuts: []string{"send"}}, Registry: catalog.Default(), Queue: ti.queue,
		Env:       actions.Env{Matrix: ti.hs, Targets: tg, Outbox: fakeOutbox{}},
		Responder: ti.responses, Stats: stats.New(ti.clock), Clock: ti.clock, Ready: ti.ready,
		MaxPayloadBytes: 1024, RequestTimeout: 2 * time.Second, Requests: ti.queue,
	}
	if change != nil {
		change(&deps)
	}
	ti.Intake = New(deps)
	ctx, cancel := context.WithCancel(zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background()))
	done := make(chan struct{})
	go func() {
		ti.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		ti.Close()
		ti.Wait()
		cancel()
		<-done
	})
	return ti
}

type fakeOutbox struct{}

func (fakeOutbox) Flush()                                      {}
func (fakeOutbox) Stats() wire.Stats                           { return wire.Stats{Sent: 7} }
func (fakeOutbox) Cancel(context.Context, string) (int, error) { return 0, nil }

// offer hands over a message whose ack is logged with the queue's calls.
func (ti *testIntake) offer(topic, payload string) {
	ti.Offer(mqtt.NewMessage(topic, []byte(payload), func() { ti.queue.add("ack " + topic) }))
}

func TestBadRequestsAreAnsweredAndAcknowledged(t *testing.T) {
	tests := []struct {
		name, topic, payload, id, code string
	}{
		{"unknown action", "m2m/bridge/request/sned", `{"id":"a"}`, "a", wire.CodeUnknownAction},
		{"bad JSON", "m2m/bridge/request/send", `{"id":"b","to":`, "", wire.CodeInvalidRequest},
		{"unknown target", "m2m/bridge/request/send", `{"id":"c","to":"garage","text":"x"}`, "c", wire.CodeUnknownTarget},
		{"too large", "m2m/bridge/request/send", `{"id":"d","text":"` + strings.Repeat("x", 2000) + `"}`, "d", wire.CodeTooLarge},
		{"bad shortcut target", "m2m/send/a+b", "x", "", wire.CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ti := newTestIntake(t)
			ti.offer(tc.topic, tc.payload)
			r := ti.responses.Next(t)
			if r.Status != "error" || r.ID != tc.id || r.Error.Code != tc.code {
				t.Fatalf("response = %+v %+v", r, r.Error)
			}
			actionstest.WaitFor(t, func() bool { return ti.queue.calls() == "ack "+tc.topic })
		})
	}
}

func TestRetainedRequestIsNotRun(t *testing.T) {
	ti := newTestIntake(t)
	m := mqtt.NewMessage("m2m/bridge/request/send", []byte(`{"id":"r","to":"kitchen","text":"x"}`), func() { ti.queue.add("ack") })
	m.Retained = true
	ti.Offer(m)
	if r := ti.responses.Next(t); r.ID != "r" || r.Error == nil || !strings.Contains(r.Error.Message, "retained") {
		t.Fatalf("response = %+v", r)
	}
	actionstest.WaitFor(t, func() bool { return ti.queue.calls() == "ack" })
}

// TestDurableIsCommittedBeforeItIsAcknowledged: PUBACK only after the commit, then delivery.
func TestDurableIsCommittedBeforeItIsAcknowledged(t *testing.T) {
	ti := newTestIntake(t)
	ti.offer("m2m/bridge/request/send", `{"id":"1","to":"kitchen","text":"hi"}`)
	ti.offer("m2m/send/kitchen", "plain")
	actionstest.WaitFor(t, func() bool { return strings.Count(ti.queue.calls(), "start send") == 2 })
	// The two may share a batch or not; in each batch: add, then ack, then start.
	adds, acks := 0, 0
	for _, call := range strings.Split(ti.queue.calls(), "\n") {
		switch {
		case strings.HasPrefix(call, "add"):
			adds++
		case strings.HasPrefix(call, "ack"):
			if acks++; acks > adds {
				t.Fatalf("acknowledged before the commit:\n%s", ti.queue.calls())
			}
		case strings.HasPrefix(call, "start") && acks < adds:
			t.Fatalf("started before the acknowledgement:\n%s", ti.queue.calls())
		}
	}
}

func TestRedeliveryOfACommittedRequestIsNotAddedAgain(t *testing.T) {
	ti := newTestIntake(t)
	payload := []byte(`{"id":"1","to":"kitchen","text":"hi"}`)
	ti.queue.committed[outbox.MQTTKey(7, "m2m/bridge/request/send", payload)] = true
	m := mqtt.NewMessage("m2m/bridge/request/send", payload, func() { ti.queue.add("ack") })
	m.Duplicate, m.PacketID = true, 7
	ti.Offer(m)
	actionstest.WaitFor(t, func() bool { return ti.queue.calls() == "ack" })
}

func TestImmediateWaitsForLogin(t *testing.T) {
	ti := newTestIntake(t)
	ti.offer("m2m/bridge/request/typing", `{"id":"t","to":"kitchen"}`)
	ti.offer("m2m/bridge/request/outbox_stats", `{"id":"s"}`)
	// outbox_stats needs no login: it is answered while typing waits.
	if r := ti.responses.Next(t); r.ID != "s" || r.Status != "ok" {
		t.Fatalf("response = %+v", r)
	}
	close(ti.ready)
	if r := ti.responses.Next(t); r.ID != "t" || r.Status != "ok" || len(ti.hs.Typings) != 1 {
		t.Fatalf("response = %+v after %d typing calls", r, len(ti.hs.Typings))
	}
}

func TestImmediateTimesOut(t *testing.T) {
	ti := newTestIntake(t) // never logged in
	ti.offer("m2m/bridge/request/typing", `{"id":"t","to":"kitchen"}`)
	if r := ti.responses.Next(t); r.Error == nil || r.Error.Code != wire.CodeTimeout {
		t.Fatalf("response = %+v", r)
	}
}

// TestImmediateRateLimited: an immediate action waits as the homeserver says, on the clock, and
// tries again.
func TestImmediateRateLimited(t *testing.T) {
	ti := newTestIntake(t)
	close(ti.ready)
	limit := mautrix.RespError{ErrCode: "M_LIMIT_EXCEEDED", Err: "slow down", StatusCode: 429, ExtraData: map[string]any{"retry_after_ms": float64(1500)}}
	ti.hs.Errs = []error{fmt.Errorf("failed: %w", mautrix.HTTPError{Response: &http.Response{StatusCode: 429}, RespError: &limit})}
	ti.offer("m2m/bridge/request/typing", `{"id":"t","to":"kitchen"}`)
	if d := <-ti.clock.Asked; d < 1500*time.Millisecond {
		t.Fatalf("waited %s, want the server's 1.5s", d)
	}
	ti.clock.Advance(2 * time.Second)
	if r := ti.responses.Next(t); r.Status != "ok" || ti.hs.Calls != 2 {
		t.Fatalf("response = %+v after %d calls", r, ti.hs.Calls)
	}
}

// TestRepeatedRequestIDIsNotRunAgain: a durable request whose action and id were accepted
// already is acknowledged and not added again; the repeat of a done one is answered with its
// kept response, the repeat of a pending one (or of a copy earlier in the same batch) when the
// first is done.
func TestRepeatedRequestIDIsNotRunAgain(t *testing.T) {
	ti := newTestIntake(t)
	ti.queue.accepted = map[string]map[string]json.RawMessage{"send": {
		"done":    json.RawMessage(`{"id":"done","status":"ok","data":{"event_id":"$kept"}}`),
		"failed":  json.RawMessage(`{"id":"failed","status":"error","error":{"code":"matrix_error","message":"no"}}`),
		"pending": json.RawMessage(``),
	}}
	for _, id := range []string{"done", "failed", "pending", "new", "new"} {
		ti.offer("m2m/bridge/request/send", `{"id":"`+id+`","to":"kitchen","text":"hi"}`)
	}
	ti.offer("m2m/bridge/request/send_location", `{"id":"done","to":"kitchen","lat":1,"lon":2}`) // another action
	actionstest.WaitFor(t, func() bool { return strings.Count(ti.queue.calls(), "ack ") == 6 })
	for _, want := range []struct{ id, status string }{{"done", "ok"}, {"failed", "error"}} {
		r := ti.responses.Next(t)
		if r.ID != want.id || r.Status != want.status {
			t.Fatalf("response = %+v, want %s %s", r, want.id, want.status)
		}
		if want.status == "ok" && !strings.Contains(fmt.Sprint(r.Data), "$kept") {
			t.Fatalf("kept response data = %v", r.Data)
		}
	}
	calls := ti.queue.calls()
	if got := strings.Count(calls, "add send "); got != 1 {
		t.Fatalf("%d sends added, want only the new one once:\n%s", got, calls)
	}
	if !strings.Contains(calls, "add send_location") {
		t.Fatalf("the same id of another action was not added:\n%s", calls)
	}
	// The repeats of pending requests (one stored, one earlier in the batch) are answered when
	// the first is done, with its response.
	for _, id := range []string{"pending", "new"} {
		ti.finished(context.Background(), "send", id, json.RawMessage(`{"id":"`+id+`","status":"ok","data":{"event_id":"$first"}}`))
		if r := ti.responses.Next(t); r.ID != id || r.Status != "ok" || !strings.Contains(fmt.Sprint(r.Data), "$first") {
			t.Fatalf("answer to the repeat of %s = %+v", id, r)
		}
	}
	ti.finished(context.Background(), "send", "other", json.RawMessage(`{"id":"other","status":"ok"}`))
	select {
	case r := <-ti.responses:
		t.Fatalf("answered a request that had no repeat: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestOnceActionRunsOncePerID: an immediate action that changes Matrix (join) runs once per id;
// a repeat gets the first's response, also while the first is still running; without an id,
// and for other immediate actions, every request runs.
func TestOnceActionRunsOncePerID(t *testing.T) {
	ti := newTestIntake(t)
	ti.queue.accepted = map[string]map[string]json.RawMessage{}
	close(ti.ready)
	for range 2 {
		ti.offer("m2m/bridge/request/join", `{"id":"j1","room":"!a:hs"}`)
		if r := ti.responses.Next(t); r.ID != "j1" || r.Status != "ok" || !strings.Contains(fmt.Sprint(r.Data), "!a:hs") {
			t.Fatalf("response = %+v", r)
		}
	}
	for range 2 {
		ti.offer("m2m/bridge/request/join", `{"room":"!b:hs"}`)
		ti.responses.Next(t)
	}
	if got := strings.Join(ti.hs.Joined, " "); got != "!a:hs !b:hs !b:hs" {
		t.Fatalf("joined %s, want !a:hs once and !b:hs (no id) twice", got)
	}

	ti.queue.ClaimRequest(context.Background(), "join", "p", ti.clock.Now()) // running now
	ti.offer("m2m/bridge/request/join", `{"id":"p","room":"!c:hs"}`)
	if d := <-ti.clock.Asked; d != 100*time.Millisecond { // the repeat waits for the first's response
		t.Fatalf("waited %s", d)
	}
	ti.queue.KeepResponse(context.Background(), "join", "p", json.RawMessage(`{"id":"p","status":"ok","data":{"room_id":"!first:hs"}}`))
	ti.clock.Advance(100 * time.Millisecond)
	if r := ti.responses.Next(t); r.ID != "p" || !strings.Contains(fmt.Sprint(r.Data), "!first:hs") {
		t.Fatalf("answer to the repeat of a running request = %+v", r)
	}
	if len(ti.hs.Joined) != 3 {
		t.Fatalf("the repeat of a running request ran: joined %v", ti.hs.Joined)
	}

	// One accepted before this start and never done was cut short by a stop: its repeat is told
	// so at once, and does not run.
	ti.queue.ClaimRequest(context.Background(), "join", "cut", ti.clock.Now().Add(-time.Minute))
	ti.offer("m2m/bridge/request/join", `{"id":"cut","room":"!d:hs"}`)
	if r := ti.responses.Next(t); r.ID != "cut" || r.Error == nil || r.Error.Code != wire.CodeInvalidRequest || !strings.Contains(r.Error.Message, "stopped") {
		t.Fatalf("answer to the repeat of a request cut short = %+v", r)
	}
	if len(ti.hs.Joined) != 3 {
		t.Fatalf("the repeat of a request cut short ran: joined %v", ti.hs.Joined)
	}
}

// TestOnceActionThatNeverRanIsForgotten: a Once request that timed out before it ran (waiting for
// the login) leaves no claim: its repeat runs.
func TestOnceActionThatNeverRanIsForgotten(t *testing.T) {
	ti := newTestIntake(t)
	ti.offer("m2m/bridge/request/join", `{"id":"early","room":"!a:hs"}`)
	if r := ti.responses.Next(t); r.ID != "early" || r.Error == nil || r.Error.Code != wire.CodeTimeout {
		t.Fatalf("response before the login = %+v", r)
	}
	close(ti.ready)
	ti.offer("m2m/bridge/request/join", `{"id":"early","room":"!a:hs"}`)
	if r := ti.responses.Next(t); r.ID != "early" || r.Status != "ok" || len(ti.hs.Joined) != 1 {
		t.Fatalf("the repeat = %+v after %v joins, want it run", r, ti.hs.Joined)
	}
}

// blockingResponder is a broker that is gone: each Respond reports its call and then waits
// until release is closed.
type blockingResponder struct {
	calls   chan string
	release chan struct{}
}

func (b *blockingResponder) Respond(_ context.Context, action, requestID string, _ any, err *wire.Error) {
	code := ""
	if err != nil {
		code = err.Code
	}
	b.calls <- action + " " + requestID + " " + code
	<-b.release
}

// TestOverloadAnswerDoesNotHoldUpClose: an immediate request beyond maxImmediateQueued is
// acknowledged and answered with a timeout through the queue of answers to bad requests, so a
// broker that does not take the answer holds up neither the intake's loop nor Close.
func TestOverloadAnswerDoesNotHoldUpClose(t *testing.T) {
	resp := &blockingResponder{calls: make(chan string, 8), release: make(chan struct{})}
	clk := clock.NewFake()
	in := New(Deps{
		Topics: wire.Topics{Base: "m2m"}, Registry: catalog.Default(), Queue: &fakeQueue{committed: map[string]bool{}},
		Env:       actions.Env{Matrix: &actionstest.Matrix{}, Targets: targets.New(targets.Config{}), Outbox: fakeOutbox{}},
		Responder: resp, Stats: stats.New(clk), Clock: clk, Ready: make(chan struct{}),
		MaxPayloadBytes: 1024, RequestTimeout: 2 * time.Second,
	})
	in.immediateQueued.Store(maxImmediateQueued) // as if 1024 immediate requests were waiting
	ctx, cancel := context.WithCancel(zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background()))
	done := make(chan struct{})
	go func() {
		in.Run(ctx)
		close(done)
	}()
	defer func() {
		close(resp.release)
		in.Close()
		cancel()
		in.Wait()
		<-done
	}()

	acked := make(chan struct{})
	in.Offer(mqtt.NewMessage("m2m/bridge/request/outbox_stats", []byte(`{"id":"over"}`), func() { close(acked) }))
	select {
	case call := <-resp.calls:
		if call != "outbox_stats over "+wire.CodeTimeout {
			t.Fatalf("answer = %q, want a timeout for over", call)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request beyond the queue's capacity was not answered")
	}
	select {
	case <-acked:
	case <-time.After(2 * time.Second):
		t.Fatal("the request was not acknowledged while the broker held its answer: the intake's loop waits for the broker")
	}
	closed := make(chan struct{})
	go func() {
		in.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close waited for the broker to take the answer")
	}
}

// TestDrainWaitsForImmediateRequests: a shutdown's Drain waits, within its context, until the
// immediate requests under way are answered.
func TestDrainWaitsForImmediateRequests(t *testing.T) {
	ti := newTestIntake(t)
	ti.offer("m2m/bridge/request/join", `{"id":"j","room":"!a:hs"}`) // waits for the login
	ti.Close()                                                       // as a shutdown does first
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if ti.Drain(short) {
		t.Fatal("drained while a request waited for the login")
	}
	close(ti.ready)
	if r := ti.responses.Next(t); r.ID != "j" || r.Status != "ok" {
		t.Fatalf("response = %+v", r)
	}
	if !ti.Drain(context.Background()) {
		t.Fatal("not drained after the answer")
	}
}
