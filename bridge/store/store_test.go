package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopSharedPostgres()
	os.Exit(code)
}

// eachDB runs fn with a fresh store on SQLite and on PostgreSQL.
func eachDB(t *testing.T, fn func(t *testing.T, s *Store, clk *clock.Fake)) {
	t.Run("sqlite", func(t *testing.T) {
		s, clk := openStore(t, "")
		fn(t, s, clk)
	})
	t.Run("postgres", func(t *testing.T) {
		s, clk := openStore(t, testenv.PostgresDatabase(t))
		fn(t, s, clk)
	})
}

func openStore(t *testing.T, databaseURL string) (*Store, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake()
	ctx := zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background())
	s, err := Open(ctx, t.TempDir(), databaseURL, clk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clk
}

var txn int

func entry(action, lane string) *Entry {
	txn++
	return &Entry{Action: action, Lane: lane, Request: json.RawMessage(`{}`), TxnID: fmt.Sprintf("txn%d", txn), CreatedAt: time.Now()}
}

// TestFinishConcurrently finishes many entries from many goroutines, as lanes do (grouped into
// shared transactions on SQLite): each is removed, its MQTT key remembered, and its follow-up
// stored with an ID.
func TestFinishConcurrently(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ *clock.Fake) {
		ctx := context.Background()
		const n = 60
		var entries []*Entry
		for i := range n {
			e := entry("send", fmt.Sprintf("!r%d:hs", i%7))
			e.MQTTKey = fmt.Sprintf("%d:key", i)
			entries = append(entries, e)
		}
		if _, err := s.Add(ctx, entries); err != nil {
			t.Fatal(err)
		}
		followUps := make([]*Entry, n)
		var wg sync.WaitGroup
		for i, e := range entries {
			var fu []*Entry
			if i%5 == 0 {
				followUps[i] = entry("auto_redact", "redact_after/x")
				followUps[i].NotBefore = time.Now().Add(time.Hour)
				fu = []*Entry{followUps[i]}
			}
			wg.Go(func() {
				if err := s.Finish(ctx, e, fu); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		left, err := s.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) != n/5 {
			t.Fatalf("%d entries left, want the %d follow-ups", len(left), n/5)
		}
		for i, fu := range followUps {
			if fu != nil && fu.ID == 0 {
				t.Fatalf("follow-up %d has no ID", i)
			}
		}
		for _, e := range entries {
			if seen, err := s.Seen(ctx, e.MQTTKey); err != nil || !seen {
				t.Fatalf("key %s not remembered (%v)", e.MQTTKey, err)
			}
		}
	})
}

// TestAddInChunks adds more entries than one INSERT takes: each gets an ID, the IDs follow the
// order of the entries (the order in which they are resumed after a restart), and what is
// loaded back is what was stored.
func TestAddInChunks(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ *clock.Fake) {
		ctx := context.Background()
		n := 2*insertChunk + 5
		var entries []*Entry
		for i := range n {
			e := entry("send", fmt.Sprintf("!r%d:hs", i%3))
			e.Request = json.RawMessage(fmt.Sprintf(`{"text":"%d"}`, i))
			e.CreatedAt, e.MQTTKey = time.UnixMilli(int64(1000+i)), fmt.Sprintf("%d:key", i)
			entries = append(entries, e)
		}
		if _, err := s.Add(ctx, entries); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < n; i++ {
			if entries[i].ID <= entries[i-1].ID {
				t.Fatalf("entry %d has ID %d after %d", i, entries[i].ID, entries[i-1].ID)
			}
		}
		loaded, err := s.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(loaded) != n {
			t.Fatalf("%d entries loaded, want %d", len(loaded), n)
		}
		for i, e := range loaded {
			want := entries[i]
			if e.ID != want.ID || e.TxnID != want.TxnID || e.Lane != want.Lane || string(e.Request) != string(want.Request) ||
				!e.CreatedAt.Equal(want.CreatedAt) || e.MQTTKey != want.MQTTKey || e.Progress != nil {
				t.Fatalf("loaded %d = %+v, stored %+v", i, e, want)
			}
		}
	})
}

// TestProgressIsKept: what a request's steps did survives a reload of the outbox.
func TestProgressIsKept(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ *clock.Fake) {
		ctx := context.Background()
		e := entry("broadcast", "lane")
		if _, err := s.Add(ctx, []*Entry{e}); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveProgress(ctx, e.ID, json.RawMessage(`{"mxc":"mxc://hs/abc"}`)); err != nil {
			t.Fatal(err)
		}
		loaded, err := s.Pending(ctx)
		if err != nil || len(loaded) != 1 {
			t.Fatalf("pending = %v, %v", loaded, err)
		}
		if string(loaded[0].Progress) != `{"mxc":"mxc://hs/abc"}` {
			t.Fatalf("progress = %s", loaded[0].Progress)
		}
	})
}

// TestInboundDedupeInChunks checks Unpublished and MarkPublished across more events than one
// statement takes.
func TestInboundDedupeInChunks(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ *clock.Fake) {
		ctx := context.Background()
		var published, fresh []id.EventID
		for i := range sqlChunk + 50 {
			published = append(published, id.EventID(fmt.Sprintf("$pub%d", i)))
			fresh = append(fresh, id.EventID(fmt.Sprintf("$new%d", i)))
		}
		if err := s.MarkPublished(ctx, published); err != nil {
			t.Fatal(err)
		}
		// Marking again is not an error.
		if err := s.MarkPublished(ctx, published[:3]); err != nil {
			t.Fatal(err)
		}
		got, err := s.Unpublished(ctx, append(append([]id.EventID{}, fresh...), published...))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2*(sqlChunk+50) {
			t.Fatalf("got %d answers", len(got))
		}
		for _, e := range published {
			if got[e] {
				t.Fatalf("%s was published but is reported fresh", e)
			}
		}
		for _, e := range fresh {
			if !got[e] {
				t.Fatalf("%s is fresh but is reported published", e)
			}
		}
	})
}

// TestPruningOfASendOnlyBridge: the keys of done requests are forgotten after a day by the
// pruning timer, also when no inbound event ever comes (they used to be pruned only when inbound
// events were marked published).
func TestPruningOfASendOnlyBridge(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, clk *clock.Fake) {
		ctx, cancel := context.WithCancel(context.Background())
		e := entry("send", "!r:hs")
		e.MQTTKey = "1:abc"
		if _, err := s.Add(ctx, []*Entry{e}); err != nil {
			t.Fatal(err)
		}
		if err := s.Finish(ctx, e, nil); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			s.RunPruning(ctx)
			close(done)
		}()
		defer func() {
			cancel()
			<-done
		}()
		doneKeys := func() int {
			n, err := s.DoneKeys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		for hour := 1; hour <= 25; hour++ {
			<-clk.Asked // the timer waits for its next round
			if hour <= 24 && doneKeys() != 1 {
				t.Fatalf("key forgotten after %d hours", hour-1)
			}
			clk.Advance(time.Hour)
		}
		<-clk.Asked // the round after 25 hours ran
		if n := doneKeys(); n != 0 {
			t.Fatalf("%d done keys left after 25 hours", n)
		}
		if seen, _ := s.Seen(ctx, "1:abc"); seen {
			t.Fatal("a pruned key is still seen")
		}
	})
}

// TestUpgradeFromVersion1: a database made by the first schema (without progress) opens, is
// upgraded, and keeps its entries.
func TestUpgradeFromVersion1(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "matrix2mqtt.db")
	raw, err := dbutil.NewWithDialect("file:"+path, "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, q := range []string{
		"CREATE TABLE matrix2mqtt_bridge_version (version INTEGER, compat INTEGER)",
		"INSERT INTO matrix2mqtt_bridge_version VALUES (1, 1)",
		`CREATE TABLE matrix2mqtt_outbox (id INTEGER PRIMARY KEY, action TEXT NOT NULL, lane TEXT NOT NULL,
			request TEXT NOT NULL, txn_id TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0,
			not_before BIGINT NOT NULL DEFAULT 0, mqtt_key TEXT NOT NULL DEFAULT '')`,
		"CREATE TABLE matrix2mqtt_done (mqtt_key TEXT PRIMARY KEY, done_at BIGINT NOT NULL)",
		"CREATE TABLE matrix2mqtt_inbound (event_id TEXT PRIMARY KEY, published_at BIGINT NOT NULL)",
		`INSERT INTO matrix2mqtt_outbox (action, lane, request, txn_id, created_at) VALUES ('send', '!r:hs', '{"to":"!r:hs","text":"old"}', 'm2mold', 1000)`,
	} {
		if _, err := raw.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()
	s, err := Open(zerolog.New(zerolog.NewTestWriter(t)).WithContext(ctx), dir, "", clock.NewFake())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pending, err := s.Pending(ctx)
	if err != nil || len(pending) != 1 || pending[0].TxnID != "m2mold" {
		t.Fatalf("pending = %v, %v", pending, err)
	}
	if err := s.SaveProgress(ctx, pending[0].ID, json.RawMessage(`{"step":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRoomKey(ctx, "guests", "!r:hs"); err != nil {
		t.Fatalf("the room key table is missing after the upgrade: %v", err)
	}
	if err := s.SaveRoomUpgrade(ctx, "!r:hs", "!s:hs"); err != nil {
		t.Fatalf("the room upgrade table is missing after the upgrade: %v", err)
	}
	// The tables of v4 (03-actionable.sql) are there.
	if err := s.SetTag(ctx, "!r:hs", "t", "$e", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadUpTo(ctx, "!r:hs", "@a:hs", "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Vote(ctx, "$p", "@a:hs", []string{"a1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The content column of v7 (06-options-content.sql) is there.
	if err := s.SaveOptions(ctx, OptionSet{EventID: "$o", RoomID: "!r:hs", Content: "{}"}); err != nil {
		t.Fatal(err)
	}
}
