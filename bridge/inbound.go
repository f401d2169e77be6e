package bridge

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// HandleSync publishes what one sync response brought and returns once the broker acknowledged
// all of it, so that the sync token is saved only then.
func (b *Bridge) HandleSync(ctx context.Context, batch *matrix.Batch) error {
	ids := batch.EventIDs()
	fresh, err := b.outbox.unpublished(ctx, ids)
	if err != nil {
		return err
	}
	// Published one after another, so they reach subscribers in timeline order, and waited for
	// together.
	var waits []func(context.Context) error
	publish := func(topic string, v any) {
		payload, err := json.Marshal(v)
		if err != nil {
			b.log.Error().Err(err).Str("topic", topic).Msg("Failed to encode inbound event")
			return
		}
		waits = append(waits, b.pub.PublishOrdered(ctx, topic, false, payload))
	}
	var reactions []*entry
	for _, ev := range batch.Events {
		if !fresh[ev.ID] {
			b.log.Debug().Stringer("event_id", ev.ID).Msg("Skipping inbound event published before")
			continue
		}
		key := b.keys.key(ev.RoomID)
		publish(b.topics.inbound(key, ev.Kind), ev.Payload)
		if r := b.publishExtras(ctx, ev, key, publish); r != nil {
			reactions = append(reactions, r)
		}
	}
	for _, n := range batch.Notices {
		publish(b.topics.event(), n)
	}
	for _, wait := range waits {
		if err := wait(ctx); err != nil {
			return fmt.Errorf("failed to publish inbound events: %w", err)
		}
	}
	b.queueReactions(ctx, reactions)
	if len(ids) > 0 {
		if err := b.outbox.markPublished(ctx, ids, b.clock.Now()); err != nil {
			return err
		}
		published := 0
		for _, isFresh := range fresh {
			if isFresh {
				published++
			}
		}
		b.stats.update(func(s *Stats) { s.Inbound += int64(published) })
	}
	if batch.RoomsChanged {
		b.publishRooms(ctx)
	}
	return nil
}

// HandleNotice publishes a notice for the operator on `<base>/bridge/event`.
func (b *Bridge) HandleNotice(ctx context.Context, n matrix.Notice) {
	b.publishJSON(ctx, b.topics.event(), false, n)
}
