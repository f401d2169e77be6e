package e2ee

import (
	"context"
	"sync"

	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/id"
)

// sessionCache keeps each room's outbound Megolm session in memory in front of the crypto
// store: mautrix reads and unpickles it from the database for every message it encrypts, which
// cost more than the encryption. Every change is still written through first, so the ratchet
// index the database holds is never behind a message sent. mautrix changes a session only under
// its per-room encryption lock, so one shared value per room is safe.
type sessionCache struct {
	crypto.Store

	mu       sync.Mutex
	sessions map[id.RoomID]*crypto.OutboundGroupSession
}

func newSessionCache(store crypto.Store) *sessionCache {
	return &sessionCache{Store: store, sessions: map[id.RoomID]*crypto.OutboundGroupSession{}}
}

// GetOutboundGroupSession returns the room's session, from memory after the first read.
func (c *sessionCache) GetOutboundGroupSession(ctx context.Context, roomID id.RoomID) (*crypto.OutboundGroupSession, error) {
	c.mu.Lock()
	session, ok := c.sessions[roomID]
	c.mu.Unlock()
	if ok {
		return session, nil
	}
	session, err := c.Store.GetOutboundGroupSession(ctx, roomID)
	if err != nil || session == nil {
		return session, err
	}
	c.remember(roomID, session)
	return session, nil
}

// AddOutboundGroupSession stores a new or newly shared session, then keeps it.
func (c *sessionCache) AddOutboundGroupSession(ctx context.Context, session *crypto.OutboundGroupSession) error {
	return c.writeThrough(session, c.Store.AddOutboundGroupSession(ctx, session))
}

// UpdateOutboundGroupSession stores a session after an encryption, then keeps it.
func (c *sessionCache) UpdateOutboundGroupSession(ctx context.Context, session *crypto.OutboundGroupSession) error {
	return c.writeThrough(session, c.Store.UpdateOutboundGroupSession(ctx, session))
}

// RemoveOutboundGroupSession forgets the room's session (a member left: the next message
// shares a new one).
func (c *sessionCache) RemoveOutboundGroupSession(ctx context.Context, roomID id.RoomID) error {
	c.forget(roomID)
	return c.Store.RemoveOutboundGroupSession(ctx, roomID)
}

// writeThrough keeps session when it was stored (err is nil); otherwise the next read goes to
// the database, which holds what was stored last.
func (c *sessionCache) writeThrough(session *crypto.OutboundGroupSession, err error) error {
	if err != nil {
		c.forget(session.RoomID)
		return err
	}
	c.remember(session.RoomID, session)
	return nil
}

func (c *sessionCache) remember(roomID id.RoomID, session *crypto.OutboundGroupSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sessions[roomID] = session
}

func (c *sessionCache) forget(roomID id.RoomID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sessions, roomID)
}
