package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// Benchmarks of the request hot path: payload parsing and validation, the whole intake step of
// one message (accept), the message content built for Matrix, and outbox writes on SQLite.
// Run: go test -tags goolm -run '^$' -bench . -benchmem ./bridge/

var benchPayloads = []struct {
	name, action, target string
	payload              string
}{
	{"send_text", ActionSend, "", `{"id":"door-1","to":"!abc123:example.org","text":"Front door opened"}`},
	{"send_full", ActionSend, "", `{"id":"door-2","to":"kitchen","markdown":"**Door** open at 12:00","msgtype":"notice","reply_to":"$Yz123","mentions":["@alice:example.org","@room"],"expire_s":600}`},
	{"shortcut_text", ActionSend, "kitchen", `Dishwasher finished`},
	{"shortcut_json", ActionSend, "@alice:example.org", `{"markdown":"Battery of *door sensor* low","expire_s":3600}`},
	{"react", ActionReact, "", `{"to":"!abc123:example.org","event_id":"$Yz123","key":"👍"}`},
	{"invalid_field", ActionSend, "", `{"to":"!abc123:example.org","txt":"typo"}`},
}

func BenchmarkParsePayload(b *testing.B) {
	for _, p := range benchPayloads {
		b.Run(p.name, func(b *testing.B) {
			payload := []byte(p.payload)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				_, _ = parsePayload(p.action, payload, p.target)
			}
		})
	}
}

// BenchmarkAccept is everything intake does for one valid durable request before the outbox
// commit: route the topic, parse and validate, check the target, encode the stored request, key
// the MQTT message.
func BenchmarkAccept(b *testing.B) {
	cfg := Config{MaxPayloadBytes: 65536, MQTT: mqtt.Config{BaseTopic: "matrix2mqtt"}, Targets: Targets{"kitchen": "!abc123:example.org"}}
	br := New(cfg, Options{})
	br.log = zerolog.Nop()
	ctx := context.Background()
	for _, c := range []struct{ name, topic, payload string }{
		{"request_send", "matrix2mqtt/bridge/request/send", `{"id":"door-1","to":"kitchen","text":"Front door opened"}`},
		{"shortcut_text", "matrix2mqtt/send/kitchen", `Dishwasher finished`},
	} {
		b.Run(c.name, func(b *testing.B) {
			m := mqtt.Message{Topic: c.topic, Payload: []byte(c.payload), QoS: 1, PacketID: 7}
			b.ReportAllocs()
			for b.Loop() {
				if e, err := br.accept(ctx, m); err != nil || e == nil {
					b.Fatalf("accept: %v", err)
				}
			}
		})
	}
}

func BenchmarkMessageContent(b *testing.B) {
	for _, c := range []struct {
		name string
		req  SendRequest
	}{
		{"text", SendRequest{To: "!r:hs", Text: "Front door opened"}},
		{"markdown", SendRequest{To: "!r:hs", Markdown: "**Door** open at *12:00*, see [log](https://example.org)"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				content := messageContent(&c.req)
				if _, err := json.Marshal(content); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchOutbox(b *testing.B) *Bridge {
	b.Helper()
	br := New(Config{OutboxMaxAge: time.Hour, DataDir: b.TempDir()}, Options{})
	br.log = zerolog.Nop()
	if err := br.openDatabase(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.db.Close() })
	return br
}

func benchEntries(n int, seq *int) []*entry {
	out := make([]*entry, n)
	now := time.Now()
	for i := range out {
		*seq++
		out[i] = &entry{
			Action: ActionSend, Lane: "!abc123:example.org", TxnID: newTxnID(), CreatedAt: now,
			Request: json.RawMessage(`{"id":"door-1","to":"!abc123:example.org","text":"Front door opened"}`),
			MQTTKey: mqttKey(uint16(*seq), "matrix2mqtt/bridge/request/send", []byte(fmt.Sprint(*seq))),
		}
	}
	return out
}

// BenchmarkOutboxAdd commits batches of requests to the outbox on SQLite, as intake does; the
// ns/entry metric is the cost per request.
func BenchmarkOutboxAdd(b *testing.B) {
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			br := benchOutbox(b)
			ctx := context.Background()
			seq := 0
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				batch := benchEntries(size, &seq)
				b.StartTimer()
				if err := br.outbox.add(ctx, batch); err != nil {
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
	br := benchOutbox(b)
	ctx := context.Background()
	seq := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		batch := benchEntries(1, &seq)
		if err := br.outbox.add(ctx, batch); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := br.outbox.finish(ctx, batch[0], time.Now(), nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOutboxFinishParallel is many lanes finishing at once, as under load.
func BenchmarkOutboxFinishParallel(b *testing.B) {
	br := benchOutbox(b)
	ctx := context.Background()
	seq := 0
	batch := benchEntries(b.N+64, &seq)
	if err := br.outbox.add(ctx, batch); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8) // 16 lanes on 2 CPUs
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e := batch[next.Add(1)-1]
			if err := br.outbox.finish(ctx, e, time.Now(), nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
