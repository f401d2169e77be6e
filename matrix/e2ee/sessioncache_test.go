package e2ee

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/id"
)

// countingStore is a crypto store holding outbound sessions, counting reads and failing
// writes on demand.
type countingStore struct {
	crypto.Store
	stored   map[id.RoomID]*crypto.OutboundGroupSession
	reads    int
	failNext bool
}

func (s *countingStore) GetOutboundGroupSession(_ context.Context, roomID id.RoomID) (*crypto.OutboundGroupSession, error) {
	s.reads++
	return s.stored[roomID], nil
}

func (s *countingStore) write(session *crypto.OutboundGroupSession) error {
	if s.failNext {
		s.failNext = false
		return errors.New("disk full")
	}
	s.stored[session.RoomID] = session
	return nil
}

func (s *countingStore) AddOutboundGroupSession(_ context.Context, session *crypto.OutboundGroupSession) error {
	return s.write(session)
}

func (s *countingStore) UpdateOutboundGroupSession(_ context.Context, session *crypto.OutboundGroupSession) error {
	return s.write(session)
}

func (s *countingStore) RemoveOutboundGroupSession(_ context.Context, roomID id.RoomID) error {
	delete(s.stored, roomID)
	return nil
}

// TestSessionCache: the database is read once per room; a failed write and a removal make the
// next read go to the database again; every write reaches it.
func TestSessionCache(t *testing.T) {
	ctx := context.Background()
	const room = id.RoomID("!r:hs")
	session := &crypto.OutboundGroupSession{RoomID: room}
	steps := []struct {
		name      string
		do        func(c *sessionCache, s *countingStore) error
		wantReads int
		wantNil   bool
	}{
		{"first read goes to the database", func(*sessionCache, *countingStore) error { return nil }, 1, false},
		{"later reads come from memory", func(*sessionCache, *countingStore) error { return nil }, 1, false},
		{"an update is written and kept", func(c *sessionCache, _ *countingStore) error {
			return c.UpdateOutboundGroupSession(ctx, session)
		}, 1, false},
		{"a failed update is forgotten", func(c *sessionCache, s *countingStore) error {
			s.failNext = true
			if err := c.UpdateOutboundGroupSession(ctx, session); err == nil {
				t.Fatal("the failed write was not reported")
			}
			return nil
		}, 2, false},
		{"a removal is forgotten", func(c *sessionCache, _ *countingStore) error {
			return c.RemoveOutboundGroupSession(ctx, room)
		}, 3, true},
		{"a new session is written and kept", func(c *sessionCache, _ *countingStore) error {
			return c.AddOutboundGroupSession(ctx, session)
		}, 3, false},
	}
	s := &countingStore{stored: map[id.RoomID]*crypto.OutboundGroupSession{room: session}}
	c := newSessionCache(s)
	for _, step := range steps {
		if err := step.do(c, s); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got, err := c.GetOutboundGroupSession(ctx, room)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if (got == nil) != step.wantNil || s.reads != step.wantReads {
			t.Fatalf("%s: session %v after %d database reads, want nil=%v after %d", step.name, got, s.reads, step.wantNil, step.wantReads)
		}
	}
	if s.stored[room] != session {
		t.Fatal("the last session was not written to the database")
	}
}
