package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

// Benchmarks of the outbox writes on SQLite. Run:
// go test -tags goolm -run '^$' -bench . -benchmem ./bridge/store/

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(context.Background(), b.TempDir(), "", clock.Real{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchEntries(n int, seq *int) []*Entry {
	out := make([]*Entry, n)
	now := time.Now()
	for i := range out {
		*seq++
		out[i] = &Entry{
			Action: "send", Lane: "!abc123:example.org", TxnID: fmt.Sprintf("m2mbench%d", *seq), CreatedAt: now,
			Request: json.RawMessage(`{"id":"door-1","to":"!abc123:example.org","text":"Front door opened"}`),
			MQTTKey: fmt.Sprintf("%d:%024x", *seq, *seq),
		}
	}
	return out
}

// BenchmarkOutboxAdd commits batches of requests to the outbox, as the intake does; the
// ns/entry metric is the cost per request.
func BenchmarkOutboxAdd(b *testing.B) {
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := benchStore(b)
			ctx := context.Background()
			seq := 0
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				batch := benchEntries(size, &seq)
				b.StartTimer()
				if _, err := s.Add(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/entry")
		})
	}
}

// BenchmarkOutboxFinish removes a delivered entry and remembers its MQTT key, as each delivery
// does.
func BenchmarkOutboxFinish(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	seq := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		batch := benchEntries(1, &seq)
		if _, err := s.Add(ctx, batch); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := s.Finish(ctx, batch[0], nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOutboxFinishParallel is many lanes finishing at once, as under load.
func BenchmarkOutboxFinishParallel(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	seq := 0
	batch := benchEntries(b.N+64, &seq)
	if _, err := s.Add(ctx, batch); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8) // 16 lanes on 2 CPUs
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Finish(ctx, batch[next.Add(1)-1], nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
