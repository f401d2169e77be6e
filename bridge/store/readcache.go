package store

import (
	"sync"

	"maunium.net/go/mautrix/id"
)

// readCache lets ReadUpTo answer without a query when a user has read every message the bridge
// sent into a room and none was recorded since: the inbound path asks for every message and
// receipt of every room, and most find nothing new.
type readCache struct {
	mu sync.Mutex
	// sent counts, per room, the commits that recorded messages sent there.
	sent map[id.RoomID]uint64
	// allRead holds, per room and user, the count of sent when the user was found to have read
	// everything sent there.
	allRead map[readKey]uint64
}

type readKey struct {
	room id.RoomID
	user id.UserID
}

func newReadCache() *readCache {
	return &readCache{sent: map[id.RoomID]uint64{}, allRead: map[readKey]uint64{}}
}

// generation is the room's count of commits with sent messages; read it before querying.
func (c *readCache) generation(roomID id.RoomID) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[roomID]
}

// readAll reports whether user had read everything in roomID at generation gen, and nothing
// was sent there since.
func (c *readCache) readAll(roomID id.RoomID, user id.UserID, gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.allRead[readKey{roomID, user}]
	return ok && at == gen
}

// markAllRead records that user has read everything sent into roomID as of generation gen.
func (c *readCache) markAllRead(roomID id.RoomID, user id.UserID, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.allRead[readKey{roomID, user}] = gen
}

// recorded bumps the generation of the rooms of committed sent messages.
func (c *readCache) recorded(sent []Sent) {
	if len(sent) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range sent {
		c.sent[s.RoomID]++
	}
}
