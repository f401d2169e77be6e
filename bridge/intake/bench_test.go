package intake

import (
	"context"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// BenchmarkAccept is everything the intake does for one valid durable request before the
// outbox commit: route the topic, decode and validate, check the target, make the entry (its
// stored request encoded, the MQTT message keyed).
func BenchmarkAccept(b *testing.B) {
	in := New(Deps{
		Topics: wire.Topics{Base: "matrix2mqtt", Shortcuts: []string{"send"}}, Registry: catalog.Default(), Queue: &fakeQueue{},
		Env:   actions.Env{Targets: targets.New(targets.Config{Names: targets.Names{"kitchen": "!abc123:example.org"}})},
		Stats: stats.New(clock.Real{}), Clock: clock.Real{}, MaxPayloadBytes: 65536,
	})
	in.log = zerolog.Nop()
	ctx := context.Background()
	for _, c := range []struct{ name, topic, payload string }{
		{"request_send", "matrix2mqtt/bridge/request/send", `{"id":"door-1","to":"kitchen","text":"Front door opened"}`},
		{"shortcut_text", "matrix2mqtt/send/kitchen", `Dishwasher finished`},
	} {
		b.Run(c.name, func(b *testing.B) {
			m := mqtt.NewMessage(c.topic, []byte(c.payload), nil)
			b.ReportAllocs()
			for b.Loop() {
				if e, _ := in.accept(ctx, m, time.Time{}); e == nil {
					b.Fatal("not accepted")
				}
			}
		})
	}
}
