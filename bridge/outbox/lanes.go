package outbox

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// maxQueued is how many entries of one lane are kept in memory. The entries after them stay in
// the store until the lane gets to them, so that a long backlog (an outage, a flood) costs disk,
// not memory.
const maxQueued = 256

// lanes runs outbox entries in order per lane (one lane per target), each lane in its own
// goroutine, so that a slow or failing room never holds the others back.
type lanes struct {
	run func(ctx context.Context, e *Entry)
	// load reads up to limit committed entries of a lane, oldest first.
	load func(ctx context.Context, lane string, limit int) ([]*Entry, error)
	// kept is told of a pushed entry the lane keeps, before its worker can take it.
	kept func(e *Entry)

	mu      sync.Mutex
	states  map[string]*laneState
	wg      sync.WaitGroup
	workers atomic.Int64 // lanes with a running worker
}

// laneState is one lane's queue in memory. While the lane is spilled, entries pushed to it are
// left in the store (dropped), and the worker reads them when its queue is empty: the lane's
// rows are then exactly the entries it does not hold, as a lane finishes each entry before it
// takes the next. An entry read that way before its push came is awaited, and its push is
// ignored.
type laneState struct {
	queue   []*Entry
	working bool
	spilled bool
	dropped map[int64]bool
	awaited map[int64]bool
}

func newLanes(run func(ctx context.Context, e *Entry), load func(ctx context.Context, lane string, limit int) ([]*Entry, error), kept func(e *Entry)) *lanes {
	return &lanes{run: run, load: load, kept: kept, states: map[string]*laneState{}}
}

// push appends a committed entry to its lane, starting the lane's worker when it is idle. The
// lane keeps it in memory (and tells kept) unless it holds maxQueued already (the worker reads
// it from the store when it gets to it) or read it from the store already.
func (l *lanes) push(ctx context.Context, e *Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.states[e.Lane]
	if st == nil {
		st = &laneState{dropped: map[int64]bool{}, awaited: map[int64]bool{}}
		l.states[e.Lane] = st
	}
	if st.take(e) {
		l.kept(e)
	}
	if !st.working && (len(st.queue) > 0 || st.spilled) {
		st.working = true
		l.wg.Add(1)
		l.workers.Add(1)
		go l.work(ctx, e.Lane, st)
	}
}

// take adds e to the queue unless the lane read it already or is full; l.mu is held.
func (st *laneState) take(e *Entry) bool {
	if st.awaited[e.ID] {
		delete(st.awaited, e.ID)
		return false
	}
	if st.spilled || len(st.queue) >= maxQueued {
		st.spilled = true
		st.dropped[e.ID] = true
		return false
	}
	st.queue = append(st.queue, e)
	return true
}

func (l *lanes) work(ctx context.Context, lane string, st *laneState) {
	defer l.wg.Done()
	defer l.workers.Add(-1)
	for {
		l.mu.Lock()
		if len(st.queue) == 0 && st.spilled && ctx.Err() == nil {
			l.mu.Unlock()
			l.refill(ctx, lane, st)
			continue
		}
		if len(st.queue) == 0 || ctx.Err() != nil {
			st.working = false
			if !st.spilled && len(st.awaited) == 0 {
				delete(l.states, lane)
			}
			l.mu.Unlock()
			return
		}
		e := st.queue[0]
		st.queue[0] = nil // the delivered entry is not kept by the queue's array
		st.queue = st.queue[1:]
		l.mu.Unlock()
		l.run(ctx, e)
	}
}

// refill reads the entries of a spilled lane from the store, once its queue is empty.
func (l *lanes) refill(ctx context.Context, lane string, st *laneState) {
	entries, err := l.load(ctx, lane, maxQueued)
	if err != nil {
		select { // the store's error was logged; try again
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(entries) == 0 {
		clear(st.dropped) // gone from the store: nothing left to read
	}
	for _, e := range entries {
		if st.dropped[e.ID] {
			delete(st.dropped, e.ID)
		} else {
			st.awaited[e.ID] = true // committed, its push still to come
		}
		st.queue = append(st.queue, e)
	}
	if len(entries) < maxQueued && len(st.dropped) == 0 {
		st.spilled = false // every entry of the lane is in memory or will be pushed
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
