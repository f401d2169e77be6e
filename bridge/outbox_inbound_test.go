package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// TestInboundDedupeInChunks checks unpublished and markPublished across more events than one
// statement takes.
func TestInboundDedupeInChunks(t *testing.T) {
	eachDB(t, func(t *testing.T, tb *testBridge) {
		ctx := context.Background()
		var published, fresh []id.EventID
		for i := range sqlChunk + 50 {
			published = append(published, id.EventID(fmt.Sprintf("$pub%d", i)))
			fresh = append(fresh, id.EventID(fmt.Sprintf("$new%d", i)))
		}
		if err := tb.outbox.markPublished(ctx, published, time.Now()); err != nil {
			t.Fatal(err)
		}
		// Marking again is not an error.
		if err := tb.outbox.markPublished(ctx, published[:3], time.Now()); err != nil {
			t.Fatal(err)
		}
		got, err := tb.outbox.unpublished(ctx, append(append([]id.EventID{}, fresh...), published...))
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
