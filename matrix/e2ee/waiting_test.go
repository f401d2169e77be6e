package e2ee

import (
	"context"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// openOwnDB opens (and upgrades) this package's tables in the SQLite file at path.
func openOwnDB(t *testing.T, path string) *dbutil.Database {
	t.Helper()
	raw, err := dbutil.NewWithDialect("file:"+path+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	db := raw.Child("matrix2mqtt_e2ee_version", upgradeTable, dbutil.NoopLogger)
	if err := db.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestWaitingSurvivesRestart checks that events saved as waiting for their keys are found by a
// new process until they are done.
func TestWaitingSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "undecrypted.db")
	first := newWaiting(openOwnDB(t, path))
	events := map[id.EventID]*event.Event{
		"$a": {ID: "$a", RoomID: "!r", Sender: "@x:hs"},
		"$b": {ID: "$b", RoomID: "!r"},
		"$c": {ID: "$c", RoomID: "!s"},
	}
	if err := first.save(ctx, maps.Values(events)); err != nil {
		t.Fatal(err)
	}
	if err := first.done(ctx, "$b", "$unknown"); err != nil {
		t.Fatal(err)
	}

	second := newWaiting(openOwnDB(t, path))
	if err := second.load(ctx); err != nil {
		t.Fatal(err)
	}
	got := second.list()
	if len(got) != 2 || got["$a"].RoomID != "!r" || got["$a"].Sender != "@x:hs" || got["$c"].RoomID != "!s" || time.Since(got["$a"].SeenAt) > time.Minute {
		t.Fatalf("waiting after a restart = %v", got)
	}
	if err := second.done(ctx, "$a", "$c"); err != nil {
		t.Fatal(err)
	}
	third := newWaiting(openOwnDB(t, path))
	if err := third.load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := third.list(); len(got) != 0 {
		t.Fatalf("waiting after done = %v", got)
	}
}

// TestWaitingKeepsRowsOfOldSchema checks that the events a bridge saved while package matrix
// owned the table are still there once this package's schema took it over.
func TestWaitingKeepsRowsOfOldSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	raw, err := dbutil.NewWithDialect("file:"+path+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	for _, query := range []string{
		"CREATE TABLE matrix2mqtt_undecrypted (event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, sender TEXT NOT NULL, seen_at BIGINT NOT NULL)",
		"INSERT INTO matrix2mqtt_undecrypted VALUES ('$old', '!r', '@x:hs', 1)",
	} {
		if _, err := raw.Exec(ctx, query); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	w := newWaiting(openOwnDB(t, path))
	if err := w.load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.list(); len(got) != 1 || got["$old"].Sender != "@x:hs" {
		t.Fatalf("waiting = %v", got)
	}
}
