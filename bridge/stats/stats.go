// Package stats counts what the bridge does, for `<base>/bridge/stats`, `outbox_stats` and the
// Home Assistant sensors.
package stats

import (
	"context"
	"sync"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

// Stats counts what the bridge did; it is published at most once a second when it changed.
type Stats struct {
	clock clock.Clock
	// Started is when the bridge started.
	Started time.Time

	mu        sync.Mutex
	s         wire.Stats
	pending   map[int64]time.Time
	scheduled map[int64]bool
	// timed are the requests that wait for their own time (`at`, `delay_s`).
	timed map[int64]bool
	dirty chan struct{}
}

// New returns zeroed stats.
func New(clk clock.Clock) *Stats {
	return &Stats{clock: clk, Started: clk.Now(), pending: map[int64]time.Time{}, scheduled: map[int64]bool{}, timed: map[int64]bool{}, dirty: make(chan struct{}, 1)}
}

// Touch marks the stats as changed, so they are published again.
func (st *Stats) Touch() {
	select {
	case st.dirty <- struct{}{}:
	default:
	}
}

func (st *Stats) update(fn func(s *wire.Stats)) {
	st.mu.Lock()
	fn(&st.s)
	st.mu.Unlock()
	st.Touch()
}

// SetMatrixConnected records the Matrix connection state; a change is published.
func (st *Stats) SetMatrixConnected(connected bool) {
	st.mu.Lock()
	changed := st.s.MatrixConnected != connected
	st.s.MatrixConnected = connected
	st.mu.Unlock()
	if changed {
		st.Touch()
	}
}

// Enqueued records an outbox entry: pending since createdAt, or a scheduled follow-up that
// waits for its time.
func (st *Stats) Enqueued(id int64, createdAt time.Time, scheduled bool) {
	st.mu.Lock()
	if scheduled {
		st.scheduled[id] = true
	} else {
		st.pending[id] = createdAt
	}
	st.mu.Unlock()
	st.Touch()
}

// EnqueuedTimed records a request that waits for its own time (`at`, `delay_s`): it counts as
// a scheduled message, not as pending, until it is done.
func (st *Stats) EnqueuedTimed(id int64) {
	st.mu.Lock()
	st.timed[id] = true
	st.mu.Unlock()
	st.Touch()
}

// Done records the end of an outbox entry: err is nil for success.
func (st *Stats) Done(id int64, err *wire.Error) {
	st.mu.Lock()
	delete(st.pending, id)
	delete(st.timed, id)
	switch {
	case st.scheduled[id]:
		delete(st.scheduled, id)
	case err == nil:
		st.s.Sent++
	case err.Code == wire.CodeExpired:
		st.s.Expired++
	default:
		st.s.Failed++
	}
	st.mu.Unlock()
	if err != nil {
		st.Failed(err)
	}
	st.Touch()
}

// RequestFailed counts a request that failed outside the outbox.
func (st *Stats) RequestFailed(err *wire.Error) {
	st.update(func(s *wire.Stats) { s.Failed++ })
	st.Failed(err)
}

// Failed records the last error, of a request that failed or is being retried.
func (st *Stats) Failed(err *wire.Error) {
	st.update(func(s *wire.Stats) {
		s.LastError = err.Error()
		s.LastErrorAt = st.clock.Now().UTC()
	})
}

// Inbound counts published inbound events.
func (st *Stats) Inbound(n int) {
	if n > 0 {
		st.update(func(s *wire.Stats) { s.Inbound += int64(n) })
	}
}

// Snapshot returns the current figures.
func (st *Stats) Snapshot() wire.Stats {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.s
	s.OutboxPending = len(st.pending)
	s.ScheduledRedactions = len(st.scheduled)
	s.ScheduledMessages = len(st.timed)
	now := st.clock.Now()
	for _, created := range st.pending {
		if age := now.Sub(created).Seconds(); age > s.OldestPendingAgeS {
			s.OldestPendingAgeS = age
		}
	}
	return s
}

// PublishLoop calls publish with a snapshot whenever something changed, at most once a second,
// and every 30 seconds anyway so that the oldest pending age stays current.
func (st *Stats) PublishLoop(ctx context.Context, publish func(context.Context, wire.Stats)) {
	ticker := time.NewTicker(30 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.dirty:
		case <-ticker.C:
		}
		publish(ctx, st.Snapshot())
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
