package inbound

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/outbox"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// recorder is the broker, the dedupe table and the outbox of one test, logging every call in
// order.
type recorder struct {
	mu        sync.Mutex
	log       []string
	payloads  []string // "topic payload" of each ordered publish
	published map[id.EventID]bool
	failAcks  bool
	keys      map[string]bool // keys of queued jobs
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, s)
}

func (r *recorder) Publish(_ context.Context, topic string, _ bool, _ []byte) error {
	r.add("publish " + topic)
	return nil
}

func (r *recorder) PublishOrdered(_ context.Context, topic string, _ bool, payload []byte) func(context.Context) error {
	r.add("publish " + topic)
	r.mu.Lock()
	r.payloads = append(r.payloads, topic+" "+string(payload))
	r.mu.Unlock()
	return func(context.Context) error {
		r.add("acked " + topic)
		if r.failAcks {
			return errors.New("broker gone")
		}
		return nil
	}
}

func (r *recorder) Unpublished(_ context.Context, ids []id.EventID) (map[id.EventID]bool, error) {
	out := map[id.EventID]bool{}
	for _, e := range ids {
		out[e] = !r.published[e]
	}
	return out, nil
}

func (r *recorder) MarkPublished(_ context.Context, ids []id.EventID) error {
	for _, e := range ids {
		r.published[e] = true
	}
	r.add("marked")
	return nil
}

func (r *recorder) Enqueue(_ context.Context, jobs ...outbox.Job) error {
	for _, j := range jobs {
		r.add("queued " + j.Action)
		r.mu.Lock()
		if r.keys == nil {
			r.keys = map[string]bool{}
		}
		r.keys[j.MQTTKey] = true
		r.mu.Unlock()
	}
	return nil
}

func message(room id.RoomID, evt id.EventID, sender id.UserID, body string) matrix.Event {
	return matrix.Event{Kind: wire.KindMessage, RoomID: room, ID: evt, Payload: &wire.Message{
		EventID: evt, RoomID: room, Sender: sender, MsgType: "m.text", Body: body,
	}}
}

func newInbound(r *recorder) *Inbound {
	tg := targets.New(targets.Config{Names: targets.Names{"kitchen": "!k:hs"}})
	cfg := CommandConfig{Prefix: "!", Senders: []string{"@alice:hs"}, Rooms: []string{"kitchen"}, React: true}
	return New(Deps{
		Topics: wire.Topics{Base: "m2m"}, Pub: r, Dedupe: r, Queue: r, Keys: tg, Stats: stats.New(clock.NewFake()),
		Filters: []Filter{NewCommands(cfg, tg), EntityEvents{Names: tg}},
	})
}

// TestHandleSyncOneWay: fresh events are published in timeline order with what the filters add,
// the reactions are queued only once all of it was acknowledged, the events are marked published
// last, and a batch handed over again publishes nothing twice.
func TestHandleSyncOneWay(t *testing.T) {
	r := &recorder{published: map[id.EventID]bool{"$old": true}}
	in := newInbound(r)
	batch := &matrix.Batch{Events: []matrix.Event{
		message("!k:hs", "$old", "@bob:hs", "seen before"),
		message("!k:hs", "$cmd", "@alice:hs", "!lights off"),
		message("!other:hs", "$m", "@bob:hs", "hi"),
	}, Notices: []wire.Notice{{Type: "invite"}}}
	if err := in.HandleSync(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"publish m2m/room/kitchen/message",
		"publish m2m/room/kitchen/command",
		"publish m2m/command/lights",
		"publish m2m/room/kitchen/event",
		"publish m2m/room/!other:hs/message",
		"publish m2m/bridge/event",
		"acked m2m/room/kitchen/message",
		"acked m2m/room/kitchen/command",
		"acked m2m/command/lights",
		"acked m2m/room/kitchen/event",
		"acked m2m/room/!other:hs/message",
		"acked m2m/bridge/event",
		"queued command_react",
		"marked",
	}
	if got := strings.Join(r.log, "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if s := in.Stats.Snapshot(); s.Inbound != 2 {
		t.Fatalf("inbound = %d, want the 2 fresh events", s.Inbound)
	}
	r.log = nil
	if err := in.HandleSync(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.log, "\n"); got != "publish m2m/bridge/event\nacked m2m/bridge/event\nmarked" {
		t.Fatalf("a batch handed over again published:\n%s", got)
	}
}

// TestHandleSyncFailsWithoutAcks: when the broker does not acknowledge, the hand-over fails and
// nothing is marked published or queued, so the same sync is handed over again.
func TestHandleSyncFailsWithoutAcks(t *testing.T) {
	r := &recorder{published: map[id.EventID]bool{}, failAcks: true}
	err := newInbound(r).HandleSync(context.Background(), &matrix.Batch{Events: []matrix.Event{message("!k:hs", "$cmd", "@alice:hs", "!lights off")}})
	if err == nil {
		t.Fatal("hand-over succeeded without acknowledgements")
	}
	for _, call := range r.log {
		if call == "marked" || strings.HasPrefix(call, "queued") {
			t.Fatalf("%q after a failed hand-over", call)
		}
	}
}
