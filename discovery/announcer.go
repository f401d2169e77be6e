package discovery

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// readBackTimeout bounds the wait for the retained device config when there is none: a broker
// sends a retained message right after it acknowledged the subscription.
const readBackTimeout = 2 * time.Second

// Client is what the announcer needs from MQTT: publishing, and the short subscription that
// reads back the retained device config.
type Client interface {
	Publish(ctx context.Context, topic string, retained bool, payload []byte) error
	Subscribe(ctx context.Context, filter string, handle func(mqtt.Message)) error
	Unsubscribe(ctx context.Context, filter string) error
}

// Announcer announces the bridge to Home Assistant: the device config after every MQTT connect
// (removing the components that left the config, or everything when discovery was turned off),
// and again after Home Assistant's birth message.
type Announcer struct {
	cfg    Config
	device Bridge
	topic  string
	mqtt   Client
	delay  func() time.Duration

	mu sync.Mutex // one announcement at a time

	readMu  sync.Mutex
	reading chan []byte // receives the retained device config while it is read back

	births chan struct{}
}

// randomBirthDelay is the default wait before announcing again after Home Assistant's birth
// message, so that bridges and devices do not all answer at once.
func randomBirthDelay() time.Duration {
	return time.Second + rand.N(4*time.Second)
}

// NewAnnouncer prepares the announcement of device; birthDelay is the wait after Home
// Assistant's birth message (nil: a random 1 to 5 seconds).
func NewAnnouncer(cfg Config, device Bridge, client Client, birthDelay func() time.Duration) *Announcer {
	if birthDelay == nil {
		birthDelay = randomBirthDelay
	}
	return &Announcer{
		cfg:    cfg,
		device: device,
		topic:  Topic(cfg.Prefix, device.NodeID),
		mqtt:   client,
		delay:  birthDelay,
		births: make(chan struct{}, 1),
	}
}

// onConfig takes the retained device config while it is read back.
func (d *Announcer) onConfig(m mqtt.Message) {
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

// OnStatus takes Home Assistant's status: a live "online" is its birth message.
func (d *Announcer) OnStatus(m mqtt.Message) {
	m.Ack()
	// A retained status is old news: the bridge announced itself when it connected.
	if d.cfg.Enabled && !m.Retained && string(m.Payload) == "online" {
		select {
		case d.births <- struct{}{}:
		default:
		}
	}
}

// Announce runs after every MQTT connect. It reads back the retained device config, then
// removes what left the config and publishes the current one; with discovery off it clears a
// config left by an earlier run.
func (d *Announcer) Announce(ctx context.Context) {
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
	stale, err := Stale(d.device, previous)
	if err != nil {
		log.Warn().Err(err).Msg("Failed to compare with the previous discovery config; publishing the current one")
	}
	if len(stale) > 0 {
		topic, payload, err := Removal(d.device, stale)
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
func (d *Announcer) readBack(ctx context.Context) ([]byte, error) {
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

// Run announces the device again after Home Assistant's birth message, following a short
// random delay; births during the delay are answered once.
func (d *Announcer) Run(ctx context.Context) {
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

func (d *Announcer) publishConfig(ctx context.Context) {
	topic, payload, err := Payload(d.device)
	if err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Msg("Failed to build the discovery config")
		return
	}
	d.publish(ctx, topic, payload)
}

func (d *Announcer) publish(ctx context.Context, topic string, payload []byte) {
	if err := d.mqtt.Publish(ctx, topic, true, payload); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("topic", topic).Msg("Failed to publish discovery config")
	}
}
