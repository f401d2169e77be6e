package bridge

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// intakeBatch is how many requests at most share one outbox transaction.
const intakeBatch = 256

// intake takes messages from the MQTT client's callback, validates them, commits the durable
// ones to the outbox in batches and only then acknowledges them to the broker.
type intake struct {
	b      *Bridge
	queue  chan mqtt.Message
	mu     sync.RWMutex
	closed bool
	done   chan struct{}
}

func newIntake(b *Bridge) *intake {
	return &intake{b: b, queue: make(chan mqtt.Message, 4096), done: make(chan struct{})}
}

// offer is the MQTT message callback: it only hands the message over. Unacknowledged QoS 1
// messages are bounded by the broker's in-flight window, so the queue cannot overflow with them;
// QoS 0 messages that do not fit are dropped with a warning.
func (in *intake) offer(m mqtt.Message) {
	in.mu.RLock()
	defer in.mu.RUnlock()
	if in.closed {
		return // not acknowledged: the broker delivers it again to the next session
	}
	if m.QoS == 0 {
		select {
		case in.queue <- m:
		default:
			in.b.log.Warn().Str("topic", m.Topic).Msg("Dropping QoS 0 request: intake queue full")
		}
		return
	}
	in.queue <- m
}

// close stops taking messages and waits until the ones taken are committed.
func (in *intake) close() {
	in.mu.Lock()
	in.closed = true
	close(in.queue)
	in.mu.Unlock()
	<-in.done
}

func (in *intake) run(ctx context.Context) {
	defer close(in.done)
	batch := make([]mqtt.Message, 0, intakeBatch)
	for m := range in.queue {
		batch = append(batch[:0], m)
	fill:
		for len(batch) < intakeBatch {
			select {
			case m, ok := <-in.queue:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		in.process(ctx, batch)
	}
}

// process handles one batch: answers bad requests, starts immediate actions, and commits the
// durable ones before acknowledging them.
func (in *intake) process(ctx context.Context, batch []mqtt.Message) {
	b := in.b
	var durable []*entry
	var acks []mqtt.Message
	for _, m := range batch {
		if m.Duplicate && b.alreadyCommitted(ctx, m) {
			m.Ack()
			continue
		}
		e, err := b.accept(ctx, m)
		switch {
		case err != nil:
			m.Ack()
		case e != nil:
			durable = append(durable, e)
			acks = append(acks, m)
		default:
			m.Ack()
		}
	}
	if len(durable) == 0 {
		return
	}
	for {
		err := b.outbox.add(ctx, durable)
		if err == nil {
			break
		}
		b.log.Error().Err(err).Msg("Failed to commit requests to the outbox; retrying")
		select {
		case <-ctx.Done():
			return // not acknowledged: the broker delivers them again
		case <-time.After(time.Second):
		}
	}
	for _, m := range acks {
		m.Ack()
	}
	for _, e := range durable {
		b.stats.enqueued(e)
		b.lanes.push(ctx, e)
	}
}

// accept validates one message. It answers bad requests (returning their error), starts
// immediate actions (returning nil, nil), and returns the outbox entry of a durable one.
func (b *Bridge) accept(ctx context.Context, m mqtt.Message) (*entry, *Error) {
	action, target, rerr := b.topics.route(m.Topic)
	responseAction := action
	if responseAction == "" {
		responseAction = "unknown"
	}
	if rerr != nil {
		b.reject(ctx, responseAction, requestID(m.Payload), m, rerr)
		return nil, rerr
	}
	if m.Retained {
		// A retained request would run again after every reconnect.
		err := errorf(CodeInvalidRequest, "retained requests are ignored: publish without the retain flag, and clear this one with an empty retained message")
		if len(m.Payload) > 0 {
			b.reject(ctx, action, requestID(m.Payload), m, err)
		}
		return nil, err
	}
	if len(m.Payload) > b.cfg.MaxPayloadBytes {
		err := errorf(CodeTooLarge, "the payload is %d bytes; MAX_PAYLOAD_BYTES is %d", len(m.Payload), b.cfg.MaxPayloadBytes)
		b.reject(ctx, action, requestID(m.Payload), m, err)
		return nil, err
	}
	req, err := parsePayload(action, m.Payload, target)
	if err != nil {
		b.reject(ctx, action, requestID(m.Payload), m, err)
		return nil, err
	}
	lane, err := b.laneOf(req)
	if err != nil {
		b.reject(ctx, action, idOf(req), m, err)
		return nil, err
	}
	if !isDurable(action) {
		b.startImmediate(ctx, action, req)
		return nil, nil
	}
	raw, jerr := json.Marshal(req)
	if jerr != nil {
		err := errorf(CodeInvalidRequest, "failed to encode request: %v", jerr)
		b.reject(ctx, action, idOf(req), m, err)
		return nil, err
	}
	now := b.clock.Now()
	e := &entry{Action: action, Lane: lane, Request: raw, TxnID: newTxnID(), CreatedAt: now, MQTTKey: mqttKey(m.PacketID, m.Topic, m.Payload)}
	if t, ok := req.(timed); ok {
		if expireS, _ := t.timing(); expireS > 0 {
			e.ExpiresAt = now.Add(seconds(expireS))
		}
	}
	return e, nil
}

// alreadyCommitted reports whether a redelivered message was taken already: the bridge
// committed it and stopped before its PUBACK reached the broker.
func (b *Bridge) alreadyCommitted(ctx context.Context, m mqtt.Message) bool {
	found, err := b.outbox.seen(ctx, mqttKey(m.PacketID, m.Topic, m.Payload))
	if err != nil {
		b.log.Warn().Err(err).Msg("Failed to check a redelivered message; taking it as new")
		return false
	}
	if found {
		b.log.Debug().Str("topic", m.Topic).Uint16("packet_id", m.PacketID).Msg("Redelivered message is in the outbox already")
	}
	return found
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func (b *Bridge) reject(ctx context.Context, action, id string, m mqtt.Message, err *Error) {
	b.log.Warn().Str("topic", m.Topic).Str("request_id", id).Str("code", err.Code).Str("reason", err.Message).Msg("Rejected request")
	b.respond(ctx, action, id, nil, err)
}

// isDurable reports whether action goes through the outbox (and so survives a crash).
func isDurable(action string) bool {
	switch action {
	case ActionSend, ActionSendLocation, ActionReact, ActionRedact:
		return true
	}
	return false
}

// laneOf checks the request's target against the config and returns the lane it runs in: the
// target after friendly names are expanded, so messages to one target keep their order.
func (b *Bridge) laneOf(req request) (string, *Error) {
	var to string
	switch r := req.(type) {
	case *SendRequest:
		to = r.To
	case *LocationRequest:
		to = r.To
	case *ReactRequest:
		to = r.To
	case *RedactRequest:
		to = r.To
	default:
		return "", nil
	}
	return b.checkTarget(to)
}

// checkTarget expands a friendly name, checks the shape of the target and the allowlist.
func (b *Bridge) checkTarget(to string) (string, *Error) {
	expanded, friendly := b.keys.expand(to)
	if !friendly {
		if err := validateTargetID(to); err != nil {
			return "", errorf(CodeUnknownTarget, "%v, and not a friendly name from TARGETS", err)
		}
	}
	if len(b.cfg.AllowedTargets) > 0 && !b.allowed(to, expanded) {
		return "", errorf(CodeNotAllowed, "target %q is not in ALLOWED_TARGETS", to)
	}
	return expanded, nil
}

func (b *Bridge) allowed(to, expanded string) bool {
	for _, a := range b.cfg.AllowedTargets {
		if a == to || a == expanded {
			return true
		}
		if v, ok := b.keys.expand(a); ok && v == expanded {
			return true
		}
	}
	return false
}

// Response is the payload of `<base>/bridge/response/<action>`.
type Response struct {
	ID     string `json:"id,omitempty"`
	Status string `json:"status"`
	Data   any    `json:"data,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

func (b *Bridge) respond(ctx context.Context, action, id string, data any, err *Error) {
	resp := Response{ID: id, Status: "ok", Data: data}
	if err != nil {
		resp.Status, resp.Data, resp.Error = "error", nil, err
	}
	b.publishJSON(ctx, b.topics.response(action), false, resp)
}
