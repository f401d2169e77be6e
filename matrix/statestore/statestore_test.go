package statestore

import (
	"context"
	"path/filepath"
	"testing"

	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func TestStateStoreCachesEncryption(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	const room = id.RoomID("!room:example.org")

	if encrypted, err := store.IsEncrypted(ctx, room); err != nil || encrypted {
		t.Fatalf("new room: encrypted = %v, %v", encrypted, err)
	}
	// The sync handler's path: the cached "not encrypted" must not outlive the encryption event.
	stateKey := ""
	evt := &event.Event{Type: event.StateEncryption, RoomID: room, StateKey: &stateKey,
		Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}
	mautrix.UpdateStateStore(ctx, store, evt)
	if encrypted, err := store.IsEncrypted(ctx, room); err != nil || !encrypted {
		t.Fatalf("after m.room.encryption: encrypted = %v, %v", encrypted, err)
	}
	// Cached now: a change behind the cache's back is not seen, which shows the cache is used.
	if err := store.SQLStateStore.SetEncryptionEvent(ctx, room, &event.EncryptionEventContent{Algorithm: "m.other"}); err != nil {
		t.Fatal(err)
	}
	if encrypted, _ := store.IsEncrypted(ctx, room); !encrypted {
		t.Fatal("IsEncrypted read the database instead of the cache")
	}
	content, _ := store.GetEncryptionEvent(ctx, room)
	content.RotationPeriodMillis = 1 // callers get a copy
	if again, _ := store.GetEncryptionEvent(ctx, room); again.RotationPeriodMillis != 0 {
		t.Fatal("the cached content was changed through a returned pointer")
	}
}

// TestStateStoreCachesMembers: a member's profile is read from the database once; each way a
// member changes (a member event through the sync handler's path, a member list replaced or
// cleared) is seen at once.
func TestStateStoreCachesMembers(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	const room, user = id.RoomID("!room:example.org"), id.UserID("@a:example.org")
	memberEvent := func(name string) *event.Event {
		stateKey := user.String()
		return &event.Event{Type: event.StateMember, RoomID: room, StateKey: &stateKey,
			Content: event.Content{Parsed: &event.MemberEventContent{Membership: event.MembershipJoin, Displayname: name}}}
	}
	name := func() string {
		member, err := store.TryGetMember(ctx, room, user)
		if err != nil {
			t.Fatal(err)
		}
		if member == nil {
			return "(none)"
		}
		return member.Displayname
	}
	steps := []struct {
		name   string
		change func()
		want   string
	}{
		{"unknown member", func() {}, "(none)"},
		{"member event", func() { mautrix.UpdateStateStore(ctx, store, memberEvent("Alice")) }, "Alice"},
		{"changed behind the cache: the cache answers", func() {
			_ = store.SQLStateStore.SetMember(ctx, room, user, &event.MemberEventContent{Membership: event.MembershipJoin, Displayname: "Stale"})
		}, "Alice"},
		{"member list replaced", func() {
			_ = store.ReplaceCachedMembers(ctx, room, []*event.Event{memberEvent("Alicia")})
		}, "Alicia"},
		{"member list cleared", func() { _ = store.ClearCachedMembers(ctx, room) }, "(none)"},
		{"membership set", func() { _ = store.SetMembership(ctx, room, user, event.MembershipJoin) }, ""},
	}
	for _, step := range steps {
		step.change()
		if got := name(); got != step.want {
			t.Fatalf("%s: display name %q, want %q", step.name, got, step.want)
		}
	}
}

// newTestStore opens a state store in a new SQLite database.
func newTestStore(t *testing.T) *Store {
	t.Helper()
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "state.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return store
}
