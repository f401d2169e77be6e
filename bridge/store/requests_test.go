package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

// TestRequestIDsAreKeptWithTheirResponse: Add remembers the ids (pending: no response), Finish
// keeps the response, ids are per action, and pruning forgets them after RequestRetention.
func TestRequestIDsAreKeptWithTheirResponse(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, clk *clock.Fake) {
		ctx := context.Background()
		a, b, anon := entry("send", "l"), entry("send", "l"), entry("send", "l")
		a.RequestID, b.RequestID = "a", "b"
		a.CreatedAt, b.CreatedAt, anon.CreatedAt = clk.Now(), clk.Now(), clk.Now()
		if _, err := s.Add(ctx, []*Entry{a, b, anon}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Accepted(ctx, "send", []string{"a", "b", "c"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || len(got["a"]) != 0 || len(got["b"]) != 0 {
			t.Fatalf("Accepted = %v, want a and b pending", got)
		}
		if other, _ := s.Accepted(ctx, "react", []string{"a"}); len(other) != 0 {
			t.Fatalf("ids leak across actions: %v", other)
		}
		a.Response = json.RawMessage(`{"id":"a","status":"ok"}`)
		if err := s.Finish(ctx, a, nil); err != nil {
			t.Fatal(err)
		}
		got, _ = s.Accepted(ctx, "send", []string{"a"})
		if string(got["a"]) != `{"id":"a","status":"ok"}` {
			t.Fatalf("kept response = %s", got["a"])
		}
		clk.Advance(RequestRetention + time.Minute)
		if err := s.Prune(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ = s.Accepted(ctx, "send", []string{"a", "b"}); len(got) != 0 {
			t.Fatalf("ids kept after the retention: %v", got)
		}
	})
}

// TestAddSortsOutRepeats: Add stores a request whose action and id are new and returns, without
// storing them, the repeats of one accepted earlier (with its kept response, empty while it is
// pending) or earlier in the same call; requests without an id are always stored.
func TestAddSortsOutRepeats(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, clk *clock.Fake) {
		ctx := context.Background()
		withID := func(action, id string) *Entry {
			e := entry(action, "l")
			e.RequestID, e.CreatedAt = id, clk.Now()
			return e
		}
		done, pending := withID("send", "done"), withID("send", "pending")
		if _, err := s.Add(ctx, []*Entry{done, pending}); err != nil {
			t.Fatal(err)
		}
		done.Response = json.RawMessage(`{"id":"done","status":"ok"}`)
		if err := s.Finish(ctx, done, nil); err != nil {
			t.Fatal(err)
		}
		batch := []struct {
			name     string
			entry    *Entry
			repeat   bool
			response string
		}{
			{"new id", withID("send", "new"), false, ""},
			{"repeat of a done request", withID("send", "done"), true, `{"id":"done","status":"ok"}`},
			{"repeat of a pending request", withID("send", "pending"), true, ""},
			{"repeat earlier in the call", withID("send", "new"), true, ""},
			{"same id, other action", withID("react", "done"), false, ""},
			{"no id", withID("send", ""), false, ""},
		}
		entries := make([]*Entry, len(batch))
		for i, b := range batch {
			entries[i] = b.entry
		}
		repeats, err := s.Add(ctx, entries)
		if err != nil {
			t.Fatal(err)
		}
		got := map[*Entry]string{}
		for _, r := range repeats {
			got[r.Entry] = string(r.Response)
		}
		for _, b := range batch {
			response, repeat := got[b.entry]
			if repeat != b.repeat || response != b.response || (b.entry.ID != 0) == b.repeat {
				t.Errorf("%s: repeat %v (response %q, row %d), want repeat %v (response %q)", b.name, repeat, response, b.entry.ID, b.repeat, b.response)
			}
		}
	})
}

// TestClaimRequest: the first claim of an action and id wins, a repeat gets nothing while the
// first runs and its response once kept, with the first's time; ids are per action; a claim that
// never ran can be forgotten (a kept one cannot); pruning frees them.
func TestClaimRequest(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, clk *clock.Fake) {
		ctx := context.Background()
		first := clk.Now()
		claim := func(action, id string) Claim {
			t.Helper()
			c, err := s.ClaimRequest(ctx, action, id, clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		if c := claim("create_room", "c1"); !c.Claimed {
			t.Fatal("the first claim lost")
		}
		clk.Advance(time.Minute)
		if c := claim("create_room", "c1"); c.Claimed || len(c.Response) != 0 || !c.AcceptedAt.Equal(first) {
			t.Fatalf("repeat while running: %+v", c)
		}
		if c := claim("invite", "c1"); !c.Claimed {
			t.Fatal("ids leak across actions")
		}
		if err := s.ForgetRequest(ctx, "invite", "c1"); err != nil {
			t.Fatal(err)
		}
		if c := claim("invite", "c1"); !c.Claimed {
			t.Fatal("a forgotten claim still holds its id")
		}
		if err := s.KeepResponse(ctx, "create_room", "c1", json.RawMessage(`{"id":"c1","status":"ok"}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.ForgetRequest(ctx, "create_room", "c1"); err != nil {
			t.Fatal(err)
		}
		if c := claim("create_room", "c1"); c.Claimed || string(c.Response) != `{"id":"c1","status":"ok"}` {
			t.Fatalf("repeat after the first: %+v", c)
		}
		clk.Advance(RequestRetention + time.Minute)
		if err := s.Prune(ctx); err != nil {
			t.Fatal(err)
		}
		if c := claim("create_room", "c1"); !c.Claimed {
			t.Fatal("an id is still claimed after the retention")
		}
	})
}
