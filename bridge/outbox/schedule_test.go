package outbox

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/actionstest"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// TestScheduledSendWaitsInItsOwnLane: a send with delay_s waits for its time without holding
// back the room's other sends, counts as a scheduled message, and goes out on time.
func TestScheduledSendWaitsInItsOwnLane(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		later := send("later", "!room:hs", "later")
		later.DelayS = 60
		e := to.enqueue(t, later)
		if !isTimed(e.Lane) || deliveryTarget(e.Lane) != "!room:hs" || !e.NotBefore.Equal(to.clock.Now().Add(time.Minute)) {
			t.Fatalf("lane %q, not_before %s", e.Lane, e.NotBefore)
		}
		to.Start([]*Entry{e})
		if d := to.sleeps(t); d != time.Minute {
			t.Fatalf("waits %s", d)
		}
		if s := to.Stats(); s.ScheduledMessages != 1 || s.OutboxPending != 0 {
			t.Fatalf("stats %+v", s)
		}
		to.Start([]*Entry{to.enqueue(t, send("now", "!room:hs", "now"))})
		if r := to.responses.Next(t); r.ID != "now" || r.Status != "ok" {
			t.Fatalf("the unscheduled send was held back: %+v", r)
		}
		to.clock.Advance(time.Minute)
		if r := to.responses.Next(t); r.ID != "later" || r.Status != "ok" {
			t.Fatalf("response %+v", r)
		}
		// The response comes before the entry is removed and counted.
		actionstest.WaitFor(t, func() bool { s := to.Stats(); return s.ScheduledMessages == 0 && s.Sent == 2 })
	})
}

// TestCancel: a waiting send is answered expired at once and never sent; cancelling it again,
// or an unknown id, is an error; a send whose attempt is under way cannot be cancelled.
func TestCancel(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		later := send("later", "!room:hs", "later")
		later.DelayS = 3600
		to.Start([]*Entry{to.enqueue(t, later)})
		to.sleeps(t)
		if n, err := to.Cancel(context.Background(), "later"); n != 1 || err != nil {
			t.Fatalf("cancel = %d, %v", n, err)
		}
		r := to.responses.Next(t)
		if r.ID != "later" || r.Error == nil || r.Error.Code != wire.CodeExpired {
			t.Fatalf("response %+v", r)
		}
		actionstest.WaitFor(t, func() bool { return len(to.pending(t)) == 0 })
		for _, id := range []string{"later", "unknown"} {
			if _, err := to.Cancel(context.Background(), id); err == nil {
				t.Fatalf("cancel %s again succeeded", id)
			}
		}
		to.clock.Advance(2 * time.Hour)
		if len(to.hs.Sent) != 0 {
			t.Fatalf("a cancelled send was sent: %v", to.hs.Sent)
		}
		if s := to.Stats(); s.ScheduledMessages != 0 || s.Expired != 1 {
			t.Fatalf("stats %+v", s)
		}

		// An attempt under way: its lane holds the entry.
		busy := to.enqueue(t, send("busy", "!room:hs", "busy"))
		busy.state.begin()
		to.liveMu.Lock()
		to.live[busy.ID] = busy
		to.liveMu.Unlock()
		if _, err := to.Cancel(context.Background(), "busy"); err == nil {
			t.Fatal("cancelled a request under delivery")
		}
	})
}

func TestScheduleValidation(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		past := send("p", "!room:hs", "x")
		past.At = to.clock.Now().Add(-2 * time.Minute).Format(time.RFC3339)
		if _, err := to.NewEntry(Job{Action: "send", Request: past}); err == nil {
			t.Fatal("at two minutes in the past accepted")
		}
		recent := send("r", "!room:hs", "x")
		recent.At = to.clock.Now().Add(-30 * time.Second).Format(time.RFC3339)
		e, err := to.NewEntry(Job{Action: "send", Request: recent})
		if err != nil || isTimed(e.Lane) {
			t.Fatalf("at half a minute ago: %v, lane %q", err, e.Lane)
		}
		expiring := send("e", "!room:hs", "x")
		expiring.DelayS, expiring.ExpireS = 600, 60
		if e, _ := to.NewEntry(Job{Action: "send", Request: expiring}); !e.ExpiresAt.Equal(to.clock.Now().Add(11 * time.Minute)) {
			t.Fatalf("expire_s does not count from the scheduled time: %s", e.ExpiresAt)
		}
	})
}

// TestCancelWhereTheLaneDidNotKeepIt: a request behind more than maxQueued others is only in the
// store; outbox_cancel finds it there, and its lane does not send it later.
func TestCancelWhereTheLaneDidNotKeepIt(t *testing.T) {
	to := newTestOutbox(t, "", nil)
	to.hs.Errs = []error{errNetwork} // the lane's first send fails: it waits to retry
	const n = maxQueued + 10
	for i := range n {
		to.Start([]*Entry{to.enqueue(t, send(fmt.Sprintf("q%d", i), "!room:hs", fmt.Sprintf("m%d", i)))})
	}
	to.sleeps(t)
	last := fmt.Sprintf("q%d", n-1)
	to.liveMu.Lock()
	_, kept := to.live[to.pending(t)[n-1].ID]
	to.liveMu.Unlock()
	if kept {
		t.Fatal("the lane kept more than maxQueued entries in memory")
	}
	if c, err := to.Cancel(context.Background(), last); c != 1 || err != nil {
		t.Fatalf("cancel = %d, %v", c, err)
	}
	if r := to.responses.Next(t); r.ID != last || r.Error == nil || r.Error.Code != wire.CodeExpired {
		t.Fatalf("response %+v", r)
	}
	to.clock.Advance(time.Minute) // the retry
	for range n - 1 {
		if r := to.responses.Next(t); r.Status != "ok" || r.ID == last {
			t.Fatalf("response %+v", r)
		}
	}
	to.hs.Mu.Lock()
	defer to.hs.Mu.Unlock()
	if len(to.hs.Sent) != n-1 {
		t.Fatalf("%d sent, want %d", len(to.hs.Sent), n-1)
	}
}

// TestCancelInDoubt: an entry that may have been delivered (left in flight by the last run, or
// after a failure that may have reached the homeserver) cannot be cancelled until sync tells.
func TestCancelInDoubt(t *testing.T) {
	t.Run("left by the last run", func(t *testing.T) {
		to := newTestOutbox(t, "", nil)
		to.hs.Sync = make(chan struct{}) // no sync yet
		to.enqueue(t, send("left", "!room:hs", "maybe delivered"))
		if err := to.Open(to.work); err != nil {
			t.Fatal(err)
		}
		to.sleeps(t) // waiting in doubt
		if _, err := to.Cancel(context.Background(), "left"); err == nil || !strings.Contains(err.Error(), "too late") {
			t.Fatalf("cancel of an entry in doubt = %v", err)
		}
	})
	t.Run("after a failure that may have arrived", func(t *testing.T) {
		to := newTestOutbox(t, "", nil)
		to.hs.Errs = []error{errBroken}
		to.hs.Sync = make(chan struct{})
		to.Start([]*Entry{to.enqueue(t, send("broken", "!room:hs", "maybe delivered"))})
		to.sleeps(t) // waiting in doubt
		if _, err := to.Cancel(context.Background(), "broken"); err == nil || !strings.Contains(err.Error(), "too late") {
			t.Fatalf("cancel of an entry in doubt = %v", err)
		}
	})
}
