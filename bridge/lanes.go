package bridge

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the time source of retry and expiry logic; tests inject a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// lanes runs outbox entries in order per lane (one lane per target), each lane in its own
// goroutine, so that a slow or failing room never holds the others back.
type lanes struct {
	run func(ctx context.Context, e *entry)

	mu      sync.Mutex
	queues  map[string][]*entry
	wg      sync.WaitGroup
	workers atomic.Int64 // lanes with a running worker
}

func newLanes(run func(ctx context.Context, e *entry)) *lanes {
	return &lanes{run: run, queues: map[string][]*entry{}}
}

// push appends e to its lane, starting the lane's worker when it is idle.
func (l *lanes) push(ctx context.Context, e *entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q, busy := l.queues[e.Lane]
	l.queues[e.Lane] = append(q, e)
	if !busy {
		l.wg.Add(1)
		l.workers.Add(1)
		go l.work(ctx, e.Lane)
	}
}

func (l *lanes) work(ctx context.Context, lane string) {
	defer l.wg.Done()
	defer l.workers.Add(-1)
	for {
		l.mu.Lock()
		q := l.queues[lane]
		if len(q) == 0 || ctx.Err() != nil {
			delete(l.queues, lane)
			l.mu.Unlock()
			return
		}
		e := q[0]
		l.queues[lane] = q[1:]
		l.mu.Unlock()
		l.run(ctx, e)
	}
}

// drain blocks until no lane does work (each is idle or only sleeping: a retry backoff or a
// scheduled redaction, asleep counting those) or ctx ends; it reports whether that happened.
func (l *lanes) drain(ctx context.Context, asleep *atomic.Int64) bool {
	for l.workers.Load() > asleep.Load() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

// wait blocks until every lane is idle or ctx ends; it reports whether they went idle.
func (l *lanes) wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
