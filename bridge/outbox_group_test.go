package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestFinishConcurrently finishes many entries from many goroutines, as lanes do (grouped into
// shared transactions on SQLite): each is removed, its MQTT key remembered, and its follow-up
// stored with an ID.
func TestFinishConcurrently(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		ctx := context.Background()
		const n = 60
		var entries []*entry
		for i := range n {
			entries = append(entries, &entry{Action: ActionSend, Lane: fmt.Sprintf("!r%d:hs", i%7), Request: json.RawMessage(`{}`),
				TxnID: newTxnID(), CreatedAt: time.Now(), MQTTKey: fmt.Sprintf("%d:key", i)})
		}
		if err := tb.outbox.add(ctx, entries); err != nil {
			t.Fatal(err)
		}
		followUps := make([]*entry, n)
		var wg sync.WaitGroup
		for i, e := range entries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var fu []*entry
				if i%5 == 0 {
					followUps[i] = &entry{Action: actionAutoRedact, Lane: "redact_after/x", Request: json.RawMessage(`{}`), TxnID: newTxnID(), CreatedAt: time.Now(), NotBefore: time.Now().Add(time.Hour)}
					fu = []*entry{followUps[i]}
				}
				if err := tb.outbox.finish(ctx, e, time.Now(), fu); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		left, err := tb.outbox.pending(ctx)
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
			if seen, err := tb.outbox.seen(ctx, e.MQTTKey); err != nil || !seen {
				t.Fatalf("key %s not remembered (%v)", e.MQTTKey, err)
			}
		}
	})
}

// TestAddInChunks adds more entries than one INSERT takes: each gets an ID, the IDs follow the
// order of the entries (the order in which they are resumed after a restart), and what is
// loaded back is what was stored.
func TestAddInChunks(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		ctx := context.Background()
		n := 2*insertChunk + 5
		var entries []*entry
		for i := range n {
			entries = append(entries, &entry{Action: ActionSend, Lane: fmt.Sprintf("!r%d:hs", i%3),
				Request: json.RawMessage(fmt.Sprintf(`{"text":"%d"}`, i)), TxnID: newTxnID(),
				CreatedAt: time.UnixMilli(int64(1000 + i)), MQTTKey: fmt.Sprintf("%d:key", i)})
		}
		if err := tb.outbox.add(ctx, entries); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < n; i++ {
			if entries[i].ID <= entries[i-1].ID {
				t.Fatalf("entry %d has ID %d after %d", i, entries[i].ID, entries[i-1].ID)
			}
		}
		loaded, err := tb.outbox.pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(loaded) != n {
			t.Fatalf("%d entries loaded, want %d", len(loaded), n)
		}
		for i, e := range loaded {
			want := entries[i]
			if e.ID != want.ID || e.TxnID != want.TxnID || e.Lane != want.Lane || string(e.Request) != string(want.Request) ||
				!e.CreatedAt.Equal(want.CreatedAt) || e.MQTTKey != want.MQTTKey {
				t.Fatalf("loaded %d = %+v, stored %+v", i, e, want)
			}
		}
	})
}
