package statestore

import (
	"context"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// maxCachedMembers bounds the member cache; it starts over when full.
const maxCachedMembers = 10000

type memberKey struct {
	room id.RoomID
	user id.UserID
}

// TryGetMember returns a member's profile in a room (nil when unknown), from memory after the
// first read: every inbound message asks for its sender's display name.
func (s *Store) TryGetMember(ctx context.Context, roomID id.RoomID, userID id.UserID) (*event.MemberEventContent, error) {
	key := memberKey{roomID, userID}
	s.mu.RLock()
	member, ok := s.members[key]
	generation := s.memberGeneration
	s.mu.RUnlock()
	if !ok {
		var err error
		member, err = s.SQLStateStore.TryGetMember(ctx, roomID, userID)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		// A member change that ran meanwhile may have made what was read stale.
		if s.memberGeneration == generation {
			if len(s.members) >= maxCachedMembers {
				clear(s.members)
			}
			s.members[key] = member
		}
		s.mu.Unlock()
	}
	if member == nil {
		return nil, nil
	}
	copied := *member
	return &copied, nil
}

// SetMembership stores a membership and forgets the cached members.
func (s *Store) SetMembership(ctx context.Context, roomID id.RoomID, userID id.UserID, membership event.Membership) error {
	defer s.membersChanged()
	return s.SQLStateStore.SetMembership(ctx, roomID, userID, membership)
}

// SetMember stores a member's profile and forgets the cached members.
func (s *Store) SetMember(ctx context.Context, roomID id.RoomID, userID id.UserID, member *event.MemberEventContent) error {
	defer s.membersChanged()
	return s.SQLStateStore.SetMember(ctx, roomID, userID, member)
}

// ReplaceCachedMembers stores a room's member list and forgets the cached members.
func (s *Store) ReplaceCachedMembers(ctx context.Context, roomID id.RoomID, evts []*event.Event, onlyMemberships ...event.Membership) error {
	defer s.membersChanged()
	return s.SQLStateStore.ReplaceCachedMembers(ctx, roomID, evts, onlyMemberships...)
}

// ClearCachedMembers forgets a room's stored members, and the cached ones.
func (s *Store) ClearCachedMembers(ctx context.Context, roomID id.RoomID, memberships ...event.Membership) error {
	defer s.membersChanged()
	return s.SQLStateStore.ClearCachedMembers(ctx, roomID, memberships...)
}

func (s *Store) membersChanged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.memberGeneration++
	clear(s.members)
}
