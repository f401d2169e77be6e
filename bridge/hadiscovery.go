package bridge

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/discovery"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// readBackTimeout bounds the wait for the retained device config when there is none: a broker
// sends a retained message right after it acknowledged the subscription.
const readBackTimeout = 2 * time.Second

// haClient is what discovery needs from MQTT: publishing, and the short subscription that
// reads back the retained device config.
type haClient interface {
	Publish(ctx context.Context, topic string, retained bool, payload []byte) error
	Subscribe(ctx context.Context, filter string, handle func(mqtt.Message)) error
	Unsubscribe(ctx context.Context, filter string) error
}

// haDiscovery announces the bridge to Home Assistant: the device config after every MQTT
// connect (removing the components that left the config, or everything when discovery was
// turned off), and again after Home Assistant's birth message.
type haDiscovery struct {
	cfg    discovery.Config
	device discovery.Bridge
	topic  string
	mqtt   haClient
	delay  func() time.Duration

	mu sync.Mutex // one announcement at a time

	readMu  sync.Mutex
	reading chan []byte // receives the retained device config while it is read back

	births chan struct{}
}

// birthDelay is the default wait before announcing again after Home Assistant's birth message,
// so that bridges and devices do not all answer at once.
func birthDelay() time.Duration {
	return time.Second + rand.N(4*time.Second)
}

// newHADiscovery prepares the announcement of the bridge with its friendly names.
func newHADiscovery(cfg Config, opts Options, names []string, client haClient) *haDiscovery {
	device := discovery.Bridge{
		Prefix:    cfg.Discovery.Prefix,
		BaseTopic: cfg.MQTT.BaseTopic,
		NodeID:    discovery.ObjectID(cfg.Matrix.UserID.String()),
		Name:      "matrix2mqtt " + cfg.Matrix.UserID.String(),
		Version:   opts.Version,
		Targets:   names,
		Rooms:     names,
	}
	if cfg.Commands.Enabled() {
		device.Commands = cfg.Commands.Names
	}
	delay := opts.BirthDelay
	if delay == nil {
		delay = birthDelay
	}
	return &haDiscovery{
		cfg:    cfg.Discovery,
		device: device,
		topic:  discovery.Topic(cfg.Discovery.Prefix, device.NodeID),
		mqtt:   client,
		delay:  delay,
		births: make(chan struct{}, 1),
	}
}

// onConfig takes the retained device config while it is read back.
func (d *haDiscovery) onConfig(m mqtt.Message) {
	m.Ack()
	if !m.Retained {
		return // the copy of an own publish
	}
	d.readMu.Lock()
	defer d.readMu.Unlock()
	if d.reading != nil {
		select {
		case d.reading <- m.Payload:
		default:
		}
	}
}

// onStatus takes Home Assistant's status: a live "online" is its birth message.
func (d *haDiscovery) onStatus(m mqtt.Message) {
	m.Ack()
	// A retained status is old news: the bridge announced itself when it connected.
	if d.cfg.Enabled && !m.Retained && string(m.Payload) == "online" {
		select {
		case d.births <- struct{}{}:
		default:
		}
	}
}

// announce runs after every MQTT connect. It reads back the retained device config, then
// removes what left the config and publishes the current one; with discovery off it clears a
// config left by an earlier run.
func (d *haDiscovery) announce(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	log := zerolog.Ctx(ctx)
	previous, err := d.readBack(ctx)
	if err != nil {
		log.Warn().Err(err).Msg("Failed to read back the Home Assistant discovery config")
	}
	if !d.cfg.Enabled {
		if len(previous) > 0 {
			d.publish(ctx, d.topic, nil)
			log.Info().Str("topic", d.topic).Msg("Removed the Home Assistant device: HA_DISCOVERY is off")
		}
		return
	}
	stale, err := discovery.Stale(d.device, previous)
	if err != nil {
		log.Warn().Err(err).Msg("Failed to compare with the previous discovery config; publishing the current one")
	}
	if len(stale) > 0 {
		topic, payload, err := discovery.Removal(d.device, stale)
		if err != nil {
			log.Error().Err(err).Msg("Failed to build the discovery removal")
		} else {
			d.publish(ctx, topic, payload)
			log.Info().Int("count", len(stale)).Msg("Removed Home Assistant entities that left the config")
		}
	}
	d.publishConfig(ctx)
}

// readBack subscribes to the device config topic for as long as it takes the broker to hand
// over the retained config, and returns it (nil when there is none).
func (d *haDiscovery) readBack(ctx context.Context) ([]byte, error) {
	ch := make(chan []byte, 1)
	d.readMu.Lock()
	d.reading = ch
	d.readMu.Unlock()
	defer func() {
		d.readMu.Lock()
		d.reading = nil
		d.readMu.Unlock()
	}()
	if err := d.mqtt.Subscribe(ctx, d.topic, d.onConfig); err != nil {
		return nil, err
	}
	defer func() {
		if err := d.mqtt.Unsubscribe(ctx, d.topic); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to unsubscribe from the discovery topic")
		}
	}()
	select {
	case payload := <-ch:
		return payload, nil
	case <-time.After(readBackTimeout):
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run announces the device again after Home Assistant's birth message, following a short
// random delay; births during the delay are answered once.
func (d *haDiscovery) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.births:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.delay()):
		}
		select {
		case <-d.births: // arrived during the delay: this announcement answers it too
		default:
		}
		zerolog.Ctx(ctx).Debug().Msg("Home Assistant is online; announcing the device again")
		d.mu.Lock()
		d.publishConfig(ctx)
		d.mu.Unlock()
	}
}

func (d *haDiscovery) publishConfig(ctx context.Context) {
	topic, payload, err := discovery.Payload(d.device)
	if err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Msg("Failed to build the discovery config")
		return
	}
	d.publish(ctx, topic, payload)
}

func (d *haDiscovery) publish(ctx context.Context, topic string, payload []byte) {
	if err := d.mqtt.Publish(ctx, topic, true, payload); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("topic", topic).Msg("Failed to publish discovery config")
	}
}
