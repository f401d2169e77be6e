package outbox

import (
	"context"
	"strings"
	"sync"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// timedLanePrefix starts the lane of a request that waits for its own time (`at`, `delay_s`):
// "at/<txn id>/<target>". Such a request has a lane of its own, so that it does not hold back
// the requests to its target while it waits.
const timedLanePrefix = "at/"

// timedLane is the lane of a timed request.
func timedLane(txnID, target string) string { return timedLanePrefix + txnID + "/" + target }

// deliveryTarget is the target of a lane.
func deliveryTarget(lane string) string {
	if rest, ok := strings.CutPrefix(lane, timedLanePrefix); ok {
		if _, target, ok := strings.Cut(rest, "/"); ok {
			return target
		}
	}
	return lane
}

// isTimed tells the lane of a timed request.
func isTimed(lane string) bool { return deliveryTarget(lane) != lane }

// entryState is where an entry is between its lane and outbox_cancel.
type entryState struct {
	mu         sync.Mutex
	delivering bool
	cancelled  chan struct{} // closed by a cancel
}

// cancelledCh is closed once the entry was cancelled.
func (s *entryState) cancelledCh() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancelled == nil {
		s.cancelled = make(chan struct{})
	}
	return s.cancelled
}

// begin claims the entry for an attempt (or its answer); false means it was cancelled.
func (s *entryState) begin() bool {
	ch := s.cancelledCh()
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-ch:
		return false
	default:
	}
	s.delivering = true
	return true
}

// end releases the entry while it waits to retry.
func (s *entryState) end() {
	s.mu.Lock()
	s.delivering = false
	s.mu.Unlock()
}

// cancel marks the entry cancelled unless an attempt is under way.
func (s *entryState) cancel() bool {
	ch := s.cancelledCh()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.delivering {
		return false
	}
	select {
	case <-ch:
		return false // cancelled before
	default:
	}
	close(ch)
	return true
}

// Cancel answers the waiting requests with this id `expired` ("cancelled") and removes them
// from the outbox. A request whose attempt is under way cannot be cancelled.
func (o *Outbox) Cancel(ctx context.Context, reqID string) (int, error) {
	o.loadMu.Lock()
	defer o.loadMu.Unlock()
	found, err := o.waiting(ctx, reqID)
	if err != nil {
		return 0, wire.Errorf(wire.CodeInvalidRequest, "failed to look up the request: %v", err)
	}
	if len(found) == 0 {
		return 0, wire.Errorf(wire.CodeInvalidRequest, "no scheduled or pending request has the id %q (it may be done already)", reqID)
	}
	n := 0
	for _, e := range found {
		if e.spec.Internal || !e.state.cancel() {
			continue
		}
		n++
		o.log.Info().Int64("outbox_id", e.ID).Str("action", e.Action).Msg("Cancelled request")
		o.finish(o.work, e, reqID, nil, wire.Errorf(wire.CodeExpired, "cancelled by outbox_cancel before it was delivered"), nil)
	}
	if n == 0 {
		return 0, wire.Errorf(wire.CodeInvalidRequest, "the request with the id %q is being delivered now: too late to cancel", reqID)
	}
	return n, nil
}

// waiting returns the entries of the requests with this id in the store: those started, and
// those only in the store (their lane did not keep them, and cannot read them while loadMu is
// held). The look-up holds liveMu, so no entry is started or finished meanwhile.
func (o *Outbox) waiting(ctx context.Context, reqID string) ([]*Entry, error) {
	o.liveMu.Lock()
	defer o.liveMu.Unlock()
	rows, err := o.Store.Waiting(ctx, reqID)
	if err != nil {
		return nil, err
	}
	entries := make([]*Entry, len(rows))
	for i, row := range rows {
		if entries[i] = o.live[row.ID]; entries[i] == nil {
			e := &Entry{Entry: *row}
			e.spec, _ = o.Registry.Spec(e.Action)
			entries[i] = e
		}
	}
	return entries, nil
}
