// Package clock is the time source of the bridge's retry, expiry and pruning logic, so that
// tests can move time by hand.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time and waits.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// Real is the system clock.
type Real struct{}

// Now returns the current time.
func (Real) Now() time.Time { return time.Now() }

// After waits for d.
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Fake is a Clock whose time moves only when a test advances it.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	// Asked receives every After call's duration, so a test can wait until something sleeps.
	Asked chan time.Duration
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// NewFake returns a fake clock at a fixed time.
func NewFake() *Fake {
	return &Fake{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), Asked: make(chan time.Duration, 100)}
}

// Now returns the fake time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives once the fake time reached now+d.
func (c *Fake) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	c.mu.Unlock()
	select {
	case c.Asked <- d:
	default:
	}
	return ch
}

// Advance moves time forward and wakes the sleepers that are due.
func (c *Fake) Advance(d time.Duration) {
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
