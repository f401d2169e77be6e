// Package inbound publishes what Matrix sync brings, one way: sync batch → dedupe → filters
// (chat commands, the Home Assistant event entity) → publish, and returns once the broker
// acknowledged it all, so that the sync token is saved only then.
package inbound

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/metrics"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/outbox"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// Publisher publishes in order and returns a wait for the broker's acknowledgement.
type Publisher interface {
	Publish(ctx context.Context, topic string, retained bool, payload []byte) error
	PublishOrdered(ctx context.Context, topic string, retained bool, payload []byte) (wait func(context.Context) error)
}

// Dedupe remembers which events were published.
type Dedupe interface {
	Unpublished(ctx context.Context, ids []id.EventID) (map[id.EventID]bool, error)
	MarkPublished(ctx context.Context, ids []id.EventID) error
}

// Queue commits durable work to the outbox.
type Queue interface {
	Enqueue(ctx context.Context, jobs ...outbox.Job) error
	// Seen tells whether work with this key was queued before (held events carry one).
	Seen(ctx context.Context, key string) (bool, error)
}

// Keys gives each room its topic key.
type Keys interface {
	Key(roomID id.RoomID) string
}

// Filter sees each fresh inbound event after it was published on its own topic, and may
// publish more or queue durable work through out. Filters run in the order given to New.
type Filter interface {
	Inbound(ctx context.Context, ev matrix.Event, key string, out *Output)
}

// Output collects what the filters of one batch publish and queue.
type Output struct {
	topics  wire.Topics
	publish func(topic string, v any)
	jobs    []outbox.Job
	// Command is the accepted chat command of the current event, if it is one.
	Command *wire.Command
	// Callback is the accepted answer of the current event, if it is one.
	Callback *wire.Callback
}

// Publish publishes v as JSON on the room topic of kind, in timeline order with the batch.
func (o *Output) Publish(topic string, v any) { o.publish(topic, v) }

// Topics are the bridge's topics.
func (o *Output) Topics() wire.Topics { return o.topics }

// Queue adds durable work, committed once the batch's publishes were acknowledged and before
// the sync token is saved.
func (o *Output) Queue(j outbox.Job) { o.jobs = append(o.jobs, j) }

// Holder takes over the publishing of some events (a media message, published once its file
// was downloaded): it returns the durable work that will publish the event.
type Holder interface {
	Hold(ev matrix.Event, topic string) (outbox.Job, bool)
}

// Deps are what Inbound works with.
type Deps struct {
	Topics  wire.Topics
	Pub     Publisher
	Dedupe  Dedupe
	Queue   Queue
	Keys    Keys
	Stats   *stats.Stats
	Filters []Filter
	// Metrics counts the events and notices published (nil counts nothing).
	Metrics *metrics.Metrics
	// Holder, when set, may hold events back from the immediate publish.
	Holder Holder
}

// Inbound hands sync batches to MQTT; it is the Matrix client's Handler.
type Inbound struct {
	Deps
}

// New prepares the inbound path.
func New(d Deps) *Inbound { return &Inbound{Deps: d} }

// HandleSync publishes what one sync response brought and returns once the broker acknowledged
// all of it.
func (in *Inbound) HandleSync(ctx context.Context, batch *matrix.Batch) error {
	log := zerolog.Ctx(ctx)
	ids := batch.EventIDs()
	fresh, err := in.Dedupe.Unpublished(ctx, ids)
	if err != nil {
		return err
	}
	// Published one after another, so they reach subscribers in timeline order, and waited for
	// together.
	var waits []func(context.Context) error
	out := &Output{topics: in.Topics, publish: func(topic string, v any) {
		payload, err := json.Marshal(v)
		if err != nil {
			log.Error().Err(err).Str("topic", topic).Msg("Failed to encode inbound event")
			return
		}
		waits = append(waits, in.Pub.PublishOrdered(ctx, topic, false, payload))
	}}
	published := 0
	kinds := map[wire.Kind]int{}
	var held []outbox.Job // events published later by durable work
	for _, ev := range batch.Events {
		if !fresh[ev.ID] {
			log.Debug().Stringer("event_id", ev.ID).Msg("Skipping inbound event published before")
			continue
		}
		published++
		kinds[ev.Kind]++
		key := in.Keys.Key(ev.RoomID)
		out.Command, out.Callback = nil, nil
		if j, ok := in.hold(ev, key); ok {
			held = append(held, j)
		} else if ev.Kind != "" {
			out.Publish(in.Topics.Room(key, ev.Kind), ev.Payload)
		}
		for _, f := range in.Filters {
			f.Inbound(ctx, ev, key, out)
		}
	}
	if len(batch.Receipts) > 0 {
		for _, f := range in.Filters {
			if rf, ok := f.(ReceiptFilter); ok {
				rf.Receipts(ctx, batch.Receipts, in.Keys, out)
			}
		}
	}
	for _, n := range batch.Notices {
		out.Publish(in.Topics.Event(), n)
	}
	for _, wait := range waits {
		if err := wait(ctx); err != nil {
			return fmt.Errorf("failed to publish inbound events: %w", err)
		}
	}
	if held, err = in.unqueued(ctx, held); err != nil {
		return err
	}
	if len(held) > 0 {
		// These events are published only by this work: without it they would be lost, so
		// the batch is handed over again instead.
		if err := in.Queue.Enqueue(ctx, held...); err != nil {
			return fmt.Errorf("failed to queue inbound events: %w", err)
		}
	}
	if len(out.jobs) > 0 {
		// The events were published: a failure here loses only the queued work (a reaction),
		// which is better than publishing the events again.
		if err := in.Queue.Enqueue(ctx, out.jobs...); err != nil {
			log.Warn().Err(err).Int("count", len(out.jobs)).Msg("Failed to queue inbound follow-up work")
		}
	}
	if len(ids) > 0 {
		if err := in.Dedupe.MarkPublished(ctx, ids); err != nil {
			return err
		}
		in.Stats.Inbound(published)
		for kind, n := range kinds {
			in.Metrics.Inbound(string(kind), n)
		}
	}
	for _, n := range batch.Notices {
		in.Metrics.Notice(n.Type)
	}
	return nil
}

// hold asks the Holder whether it publishes ev later.
func (in *Inbound) hold(ev matrix.Event, key string) (outbox.Job, bool) {
	if in.Holder == nil {
		return outbox.Job{}, false
	}
	return in.Holder.Hold(ev, in.Topics.Room(key, ev.Kind))
}

// unqueued drops the held events whose work was queued already: by the same batch, handed
// over again after a crash that came before it was marked published.
func (in *Inbound) unqueued(ctx context.Context, jobs []outbox.Job) ([]outbox.Job, error) {
	out := jobs[:0]
	for _, j := range jobs {
		seen, err := in.Queue.Seen(ctx, j.MQTTKey)
		if err != nil {
			return nil, fmt.Errorf("failed to queue inbound events: %w", err)
		}
		if !seen {
			out = append(out, j)
		}
	}
	return out, nil
}

// HandleNotice publishes a notice for the operator on `<base>/bridge/event`.
func (in *Inbound) HandleNotice(ctx context.Context, n wire.Notice) {
	payload, err := json.Marshal(n)
	if err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Msg("Failed to encode notice")
		return
	}
	if err := in.Pub.Publish(ctx, in.Topics.Event(), false, payload); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to publish notice")
		return
	}
	in.Metrics.Notice(n.Type)
}
