package bridge

import (
	"context"
	"sync"
	"time"
)

// Stats is the retained payload of `<base>/bridge/stats` and the data of `outbox_stats`.
type Stats struct {
	OutboxPending int `json:"outbox_pending"`
	// ScheduledRedactions are redact_after_s redactions waiting for their time.
	ScheduledRedactions int       `json:"scheduled_redactions"`
	OldestPendingAgeS   float64   `json:"oldest_pending_age_s"`
	Sent                int64     `json:"sent"`
	Failed              int64     `json:"failed"`
	Expired             int64     `json:"expired"`
	Inbound             int64     `json:"inbound"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
	// MatrixConnected is whether the last Matrix sync succeeded.
	MatrixConnected bool `json:"matrix_connected"`
}

// stats counts what the bridge did; it is published at most once a second when it changed.
type stats struct {
	clock   Clock
	started time.Time

	mu        sync.Mutex
	s         Stats
	pending   map[int64]time.Time
	scheduled map[int64]bool
	dirty     chan struct{}
}

func newStats(clock Clock) *stats {
	return &stats{clock: clock, started: clock.Now(), pending: map[int64]time.Time{}, scheduled: map[int64]bool{}, dirty: make(chan struct{}, 1)}
}

func (st *stats) touch() {
	select {
	case st.dirty <- struct{}{}:
	default:
	}
}

func (st *stats) update(fn func(s *Stats)) {
	st.mu.Lock()
	fn(&st.s)
	st.mu.Unlock()
	st.touch()
}

// setMatrixConnected records the Matrix connection state; a change is published.
func (st *stats) setMatrixConnected(connected bool) {
	st.mu.Lock()
	changed := st.s.MatrixConnected != connected
	st.s.MatrixConnected = connected
	st.mu.Unlock()
	if changed {
		st.touch()
	}
}

func (st *stats) enqueued(e *entry) {
	st.mu.Lock()
	if e.Action == actionAutoRedact {
		st.scheduled[e.ID] = true
	} else {
		st.pending[e.ID] = e.CreatedAt
	}
	st.mu.Unlock()
	st.touch()
}

// done records the end of an entry: code is "" for success, else the error code.
func (st *stats) done(e *entry, err *Error) {
	st.mu.Lock()
	delete(st.pending, e.ID)
	switch {
	case st.scheduled[e.ID]:
		delete(st.scheduled, e.ID)
	case err == nil:
		st.s.Sent++
	case err.Code == CodeExpired:
		st.s.Expired++
	default:
		st.s.Failed++
	}
	st.mu.Unlock()
	if err != nil {
		st.failed(err)
	}
	st.touch()
}

// failed records the last error, for requests that failed or are being retried.
func (st *stats) failed(err *Error) {
	st.update(func(s *Stats) {
		s.LastError = err.Error()
		s.LastErrorAt = st.clock.Now().UTC()
	})
}

func (st *stats) snapshot() Stats {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.s
	s.OutboxPending = len(st.pending)
	s.ScheduledRedactions = len(st.scheduled)
	now := st.clock.Now()
	for _, created := range st.pending {
		if age := now.Sub(created).Seconds(); age > s.OldestPendingAgeS {
			s.OldestPendingAgeS = age
		}
	}
	return s
}

// publishLoop calls publish with a snapshot whenever something changed, at most once a second,
// and every 30 seconds anyway so that the oldest pending age stays current.
func (st *stats) publishLoop(ctx context.Context, publish func(context.Context, Stats)) {
	ticker := time.NewTicker(30 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.dirty:
		case <-ticker.C:
		}
		publish(ctx, st.snapshot())
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
