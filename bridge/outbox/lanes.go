package outbox

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// lanes runs outbox entries in order per lane (one lane per target), each lane in its own
// goroutine, so that a slow or failing room never holds the others back.
type lanes struct {
	run func(ctx context.Context, e *Entry)

	mu      sync.Mutex
	queues  map[string][]*Entry
	wg      sync.WaitGroup
	workers atomic.Int64 // lanes with a running worker
}

func newLanes(run func(ctx context.Context, e *Entry)) *lanes {
	return &lanes{run: run, queues: map[string][]*Entry{}}
}

// push appends e to its lane, starting the lane's worker when it is idle.
func (l *lanes) push(ctx context.Context, e *Entry) {
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
// scheduled time, asleep counting those) or ctx ends; it reports whether that happened.
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

// wait blocks until every lane's worker returned.
func (l *lanes) wait() { l.wg.Wait() }
