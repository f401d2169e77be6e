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
