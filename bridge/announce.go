package bridge

import (
	"context"
	"encoding/json"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
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
	if err := b.mqtt.Publish(ctx, b.topics.State(), true, []byte("online")); err != nil {
		b.log.Warn().Err(err).Msg("Failed to publish online state")
	}
	select {
	case <-b.ready:
		b.publishInfo(ctx)
		b.rooms.changed(nil)
	default:
	}
	b.stats.Touch()
	b.ha.announce(ctx)
}

// Info is the retained payload of `<base>/bridge/info`.
type Info struct {
	Version    string            `json:"version"`
	UserID     string            `json:"user_id"`
	DeviceID   string            `json:"device_id"`
	Homeserver string            `json:"homeserver"`
	BaseTopic  string            `json:"base_topic"`
	E2EE       matrix.E2EEStatus `json:"e2ee"`
	Targets    []string          `json:"targets"`
	StartedAt  time.Time         `json:"started_at"`
}

func (b *Bridge) publishInfo(ctx context.Context) {
	publishJSON(ctx, b.mqtt, b.topics.Info(), true, Info{
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

func (b *Bridge) publishRooms(ctx context.Context, rooms []targets.RoomInfo) {
	publishJSON(ctx, b.mqtt, b.topics.Rooms(), true, rooms)
}

func (b *Bridge) publishStats(ctx context.Context, s wire.Stats) {
	publishJSON(ctx, b.mqtt, b.topics.Stats(), true, s)
}

// roomSource lists the joined rooms and resolves aliases.
type roomSource interface {
	Rooms(ctx context.Context) ([]matrix.Room, error)
	Resolve(ctx context.Context, target string) (id.RoomID, error)
}

// roomList keeps `<base>/bridge/rooms` current: on each change it lets the targets learn the
// rooms of friendly names and command rooms, then publishes the list.
type roomList struct {
	targets *targets.Targets
	source  roomSource
	updates chan []matrix.Room
}

func newRoomList(t *targets.Targets, source roomSource) *roomList {
	return &roomList{targets: t, source: source, updates: make(chan []matrix.Room, 1)}
}

// changed tells that the joined rooms changed; rooms is the new list, or nil to ask for it.
// Changes that come while one is handled are folded into the next.
func (l *roomList) changed(rooms []matrix.Room) {
	for {
		select {
		case l.updates <- rooms:
			return
		default:
		}
		select {
		case <-l.updates: // replaced by the newer one
		default:
		}
	}
}

// run handles the changes until ctx ends.
func (l *roomList) run(ctx context.Context, publish func(context.Context, []targets.RoomInfo)) {
	for {
		var rooms []matrix.Room
		select {
		case <-ctx.Done():
			return
		case rooms = <-l.updates:
		}
		if rooms == nil {
			var err error
			if rooms, err = l.source.Rooms(ctx); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to list rooms")
				continue
			}
		}
		l.targets.Learn(ctx, rooms, l.source)
		publish(ctx, l.targets.Annotate(rooms))
	}
}
