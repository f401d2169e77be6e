package actionstest

import (
	"context"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
)

// Memory keeps what the store keeps for actions (options, tags) in memory.
type Memory struct {
	mu sync.Mutex
	// Saved are the option sets in the order they were saved.
	Saved []store.OptionSet
	tags  map[string]store.Tagged
	// Sent are the messages recorded as sent, by request id.
	Sent map[id.EventID]string
}

// RecordSent records the request that sent evtID, and evtID as the room's last message.
func (m *Memory) RecordSent(_ context.Context, roomID id.RoomID, evtID id.EventID, requestID string, sentAt time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Sent == nil {
		m.Sent = map[id.EventID]string{}
	}
	if m.tags == nil {
		m.tags = map[string]store.Tagged{}
	}
	m.Sent[evtID] = requestID
	m.tags[roomID.String()+"\x00"] = store.Tagged{EventID: evtID, SentAt: sentAt}
	return nil
}

// SaveOptions records the option set.
func (m *Memory) SaveOptions(_ context.Context, o store.OptionSet) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Saved = append(m.Saved, o)
	return nil
}

// Tag returns the message of tag in roomID.
func (m *Memory) Tag(_ context.Context, roomID id.RoomID, tag string) (store.Tagged, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tags[roomID.String()+"\x00"+tag]
	return t, ok, nil
}

// SetTag makes evtID the message of tag in roomID.
func (m *Memory) SetTag(_ context.Context, roomID id.RoomID, tag string, evtID id.EventID, sentAt time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tags == nil {
		m.tags = map[string]store.Tagged{}
	}
	m.tags[roomID.String()+"\x00"+tag] = store.Tagged{EventID: evtID, SentAt: sentAt}
	return nil
}

// ForgetTag forgets the message of tag in roomID if it is evtID.
func (m *Memory) ForgetTag(_ context.Context, roomID id.RoomID, tag string, evtID id.EventID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := roomID.String() + "\x00" + tag; m.tags[k].EventID == evtID {
		delete(m.tags, k)
	}
	return nil
}
