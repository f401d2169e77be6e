package matrix

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/event"
)

// Benchmarks of the inbound mapping: a timeline event from sync to the JSON payload the bridge
// publishes on MQTT. Run: go test -tags goolm -run '^$' -bench . -benchmem ./matrix/

var benchEvents = []struct {
	name string
	raw  string
}{
	{"text", `{"type":"m.room.message","event_id":"$Q1w2e3r4t5y6u7i8o9p0","room_id":"!abc123:example.org","sender":"@alice:example.org","origin_server_ts":1735732800000,"content":{"msgtype":"m.text","body":"status"},"unsigned":{"age":12}}`},
	{"html_reply", `{"type":"m.room.message","event_id":"$Q1w2e3r4t5y6u7i8o9p1","room_id":"!abc123:example.org","sender":"@alice:example.org","origin_server_ts":1735732800000,"content":{"msgtype":"m.text","body":"> <@bot:example.org> hi\n\n**yes**","format":"org.matrix.custom.html","formatted_body":"<mx-reply>…</mx-reply><b>yes</b>","m.relates_to":{"m.in_reply_to":{"event_id":"$Yz"}},"m.mentions":{"user_ids":["@bot:example.org"]}}}`},
	{"image", `{"type":"m.room.message","event_id":"$Q1w2e3r4t5y6u7i8o9p2","room_id":"!abc123:example.org","sender":"@alice:example.org","origin_server_ts":1735732800000,"content":{"msgtype":"m.image","body":"cat.png","url":"mxc://example.org/abc","info":{"mimetype":"image/png","size":123456,"w":640,"h":480}}}`},
	{"reaction", `{"type":"m.reaction","event_id":"$Q1w2e3r4t5y6u7i8o9p3","room_id":"!abc123:example.org","sender":"@alice:example.org","origin_server_ts":1735732800000,"content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$Yz","key":"👍"}}}`},
}

func parseBenchEvent(tb testing.TB, raw string) *event.Event {
	var evt event.Event
	if err := json.Unmarshal([]byte(raw), &evt); err != nil {
		tb.Fatal(err)
	}
	if err := evt.Content.ParseRaw(evt.Type); err != nil {
		tb.Fatal(err)
	}
	return &evt
}

// BenchmarkNormalise maps a parsed event to the bridge's inbound payload.
func BenchmarkNormalise(b *testing.B) {
	for _, c := range benchEvents {
		b.Run(c.name, func(b *testing.B) {
			evt := parseBenchEvent(b, c.raw)
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := normalise(evt); !ok {
					b.Fatal("not mapped")
				}
			}
		})
	}
}

// BenchmarkNormaliseJSON is the MQTT mapping of one event: normalise, then encode the payload.
func BenchmarkNormaliseJSON(b *testing.B) {
	for _, c := range benchEvents {
		b.Run(c.name, func(b *testing.B) {
			evt := parseBenchEvent(b, c.raw)
			b.ReportAllocs()
			for b.Loop() {
				ev, _ := normalise(evt)
				if _, err := json.Marshal(ev.Payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEventToPayload is the whole path of one event's bytes in a sync response: decode
// the event (as mautrix does), parse its content, normalise and encode.
func BenchmarkEventToPayload(b *testing.B) {
	for _, c := range benchEvents {
		b.Run(c.name, func(b *testing.B) {
			raw := []byte(c.raw)
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				var evt event.Event
				if err := json.Unmarshal(raw, &evt); err != nil {
					b.Fatal(err)
				}
				_ = evt.Content.ParseRaw(evt.Type)
				ev, ok := normalise(&evt)
				if !ok {
					b.Fatal("not mapped")
				}
				if _, err := json.Marshal(ev.Payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
