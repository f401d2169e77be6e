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
		if err := s.Add(ctx, []*Entry{a, b, anon}); err != nil {
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
