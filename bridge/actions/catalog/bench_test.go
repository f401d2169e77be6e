package catalog

import (
	"testing"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
)

// Benchmarks of the request hot path: decoding and validating a request, and the message
// content built for actions.Matrix. Run: go test -tags goolm -run '^$' -bench . -benchmem ./bridge/...

var benchPayloads = []struct {
	name, action, target string
	payload              string
}{
	{"send_text", "send", "", `{"id":"door-1","to":"!abc123:example.org","text":"Front door opened"}`},
	{"send_full", "send", "", `{"id":"door-2","to":"kitchen","markdown":"**Door** open at 12:00","msgtype":"notice","reply_to":"$Yz123","mentions":["@alice:example.org","@room"],"expire_s":600}`},
	{"shortcut_text", "send", "kitchen", `Dishwasher finished`},
	{"shortcut_json", "send", "@alice:example.org", `{"markdown":"Battery of *door sensor* low","expire_s":3600}`},
	{"react", "react", "", `{"to":"!abc123:example.org","event_id":"$Yz123","key":"👍"}`},
	{"invalid_field", "send", "", `{"to":"!abc123:example.org","txt":"typo"}`},
}

func BenchmarkParse(b *testing.B) {
	registry := Default()
	tg := targets.New(targets.Config{Names: targets.Names{"kitchen": "!abc123:example.org"}})
	for _, p := range benchPayloads {
		b.Run(p.name, func(b *testing.B) {
			payload := []byte(p.payload)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				_, _ = registry.Parse(p.action, p.target, payload, tg)
			}
		})
	}
}
