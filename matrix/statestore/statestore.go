// Package statestore is mautrix's SQL state store with the rooms' encryption settings and the
// members' profiles cached in memory.
package statestore

import (
	"context"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"
)

// Store is mautrix's SQL state store with the rooms' encryption settings cached in memory: every
// send asks whether its room is encrypted, and that answer only changes with an
// m.room.encryption event, which passes through SetEncryptionEvent.
type Store struct {
	*sqlstatestore.SQLStateStore

	mu         sync.RWMutex
	generation uint64 // bumped by every SetEncryptionEvent
	encryption map[id.RoomID]*event.EncryptionEventContent
	// memberGeneration is bumped by every change of members, which clears members.
	memberGeneration uint64
	members          map[memberKey]*event.MemberEventContent
}

// New opens the state store in db, upgrading its tables. It logs with the context's logger.
func New(ctx context.Context, db *dbutil.Database) (*Store, error) {
	store := sqlstatestore.NewSQLStateStore(db, dbutil.ZeroLogger(*zerolog.Ctx(ctx)), false)
	if err := store.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade Matrix state store: %w", err)
	}
	return &Store{SQLStateStore: store, encryption: map[id.RoomID]*event.EncryptionEventContent{},
		members: map[memberKey]*event.MemberEventContent{}}, nil
}

// SetEncryptionEvent stores the room's encryption settings and forgets the cached ones.
func (s *Store) SetEncryptionEvent(ctx context.Context, roomID id.RoomID, content *event.EncryptionEventContent) error {
	err := s.SQLStateStore.SetEncryptionEvent(ctx, roomID, content)
	s.mu.Lock()
	s.generation++
	delete(s.encryption, roomID)
	s.mu.Unlock()
	return err
}

// GetEncryptionEvent returns the room's encryption settings, nil when it is not encrypted.
func (s *Store) GetEncryptionEvent(ctx context.Context, roomID id.RoomID) (*event.EncryptionEventContent, error) {
	s.mu.RLock()
	content, ok := s.encryption[roomID]
	generation := s.generation
	s.mu.RUnlock()
	if !ok {
		var err error
		content, err = s.SQLStateStore.GetEncryptionEvent(ctx, roomID)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		// A SetEncryptionEvent that ran meanwhile may have made what was read stale.
		if s.generation == generation {
			s.encryption[roomID] = content
		}
		s.mu.Unlock()
	}
	if content == nil {
		return nil, nil
	}
	copied := *content
	return &copied, nil
}

// IsEncrypted tells whether the room is encrypted with Megolm.
func (s *Store) IsEncrypted(ctx context.Context, roomID id.RoomID) (bool, error) {
	content, err := s.GetEncryptionEvent(ctx, roomID)
	return content != nil && content.Algorithm == id.AlgorithmMegolmV1, err
}
