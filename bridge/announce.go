package bridge

import (
	"context"
	"encoding/json"
	"github.com/matrix2mqtt/matrix2mqtt/discovery"
	"sync"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// publisher publishes to MQTT and waits for the broker's acknowledgement.
type publisher interface {
	Publish(ctx context.Context, topic string, retained bool, payload []byte) error
}

// publishJSON publishes v as JSON, logging a failure: what the bridge announces is published
// again on the next change or reconnect.
func publishJSON(ctx context.Context, pub publisher, topic string, retained bool, v any) {
	log := zerolog.Ctx(ctx)
	payload, err := json.Marshal(v)
	if err != nil {
		log.Error().Err(err).Str("topic", topic).Msg("Failed to encode payload")
		return
	}
	if err := pub.Publish(ctx, topic, retained, payload); err != nil {
		log.Warn().Err(err).Str("topic", topic).Msg("Failed to publish")
	}
}

// responder answers requests on `<base>/bridge/response/<action>`.
type responder struct {
	pub    publisher
	topics wire.Topics
}

// Respond publishes the response of one request.
func (r responder) Respond(ctx context.Context, action, requestID string, data any, err *wire.Error) {
	publishJSON(ctx, r.pub, r.topics.Response(action), false, wire.NewResponse(requestID, data, err))
}

// announce runs after every MQTT (re)connect: state, info, rooms and stats are retained, so
// they are published again in case the broker lost them; so is the Home Assistant discovery.
func (b *Bridge) announce(ctx context.Context) {
	ctx = b.log.WithContext(ctx)
	b.metrics.MQTTConnected()
	if err := b.mqtt.Publish(ctx, b.topics.State(), true, []byte("online")); err != nil {
		b.log.Warn().Err(err).Msg("Failed to publish online state")
	}
	select {
	case <-b.ready:
		b.publishInfo(ctx)
		if rooms, known := b.rooms.get(); known {
			b.publishRooms(ctx, rooms)
		}
	default:
	}
	b.stats.Touch()
	b.ha.Announce(ctx)
}

func (b *Bridge) publishInfo(ctx context.Context) {
	publishJSON(ctx, b.mqtt, b.topics.Info(), true, wire.Info{
		Version:    b.opts.Version,
		UserID:     b.matrix.UserID().String(),
		DeviceID:   b.matrix.DeviceID().String(),
		Homeserver: b.matrix.Homeserver(),
		BaseTopic:  b.cfg.MQTT.BaseTopic,
		E2EE:       b.matrix.E2EEStatus(ctx),
		Targets:    b.targets.Names(),
		StartedAt:  b.stats.Started,
	})
}

func (b *Bridge) publishRooms(ctx context.Context, rooms []wire.Room) {
	publishJSON(ctx, b.mqtt, b.topics.Rooms(), true, b.targets.Annotate(rooms))
}

func (b *Bridge) publishStats(ctx context.Context, s wire.Stats) {
	publishJSON(ctx, b.mqtt, b.topics.Stats(), true, s)
}

// roomList is the last list of joined rooms the Matrix client reported, published again after
// an MQTT reconnect.
type roomList struct {
	mu    sync.Mutex
	rooms []wire.Room
	known bool
}

func (l *roomList) set(rooms []wire.Room) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rooms, l.known = rooms, true
}

func (l *roomList) get() ([]wire.Room, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rooms, l.known
}

// haDevice is the bridge as a Home Assistant device, with its friendly names.
func haDevice(cfg Config, version string, names []string) discovery.Bridge {
	device := discovery.Bridge{
		Prefix:    cfg.Discovery.Prefix,
		BaseTopic: cfg.MQTT.BaseTopic,
		NodeID:    discovery.ObjectID(cfg.Matrix.UserID.String()),
		Name:      "matrix2mqtt " + cfg.Matrix.UserID.String(),
		Version:   version,
		Targets:   names,
		Rooms:     names,
	}
	if cfg.Commands.Enabled() {
		device.Commands = cfg.Commands.Names
	}
	return device
}
