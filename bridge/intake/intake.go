// Package intake takes requests from MQTT: it validates each once, answers bad ones, runs
// immediate actions, and commits durable ones to the outbox in batches before it acknowledges
// them to the broker.
package intake

import (
	"context"
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/metrics"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/outbox"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// batchSize is how many requests at most share one outbox transaction.
const batchSize = 256

// maxImmediateQueued bounds the immediate requests waiting for a slot; beyond it they are
// answered at once with a timeout error instead of piling up.
const maxImmediateQueued = 1024

// immediateSlots is how many immediate actions run at once.
const immediateSlots = 16

// Queue is the outbox, as the intake uses it.
type Queue interface {
	Seen(ctx context.Context, mqttKey string) (bool, error)
	NewEntry(j outbox.Job) (*outbox.Entry, error)
	Add(ctx context.Context, entries []*outbox.Entry) error
	Start(entries []*outbox.Entry)
}

// Responder answers requests on MQTT.
type Responder interface {
	Respond(ctx context.Context, action, requestID string, data any, err *wire.Error)
}

// Deps are what the intake works with.
type Deps struct {
	Topics    wire.Topics
	Registry  *actions.Registry
	Queue     Queue
	Env       actions.Env
	Responder Responder
	Stats     *stats.Stats
	Clock     clock.Clock
	// Ready is closed once Matrix is logged in; immediate actions that need Matrix wait for it.
	Ready           <-chan struct{}
	MaxPayloadBytes int
	// MaxFileBytes is MEDIA_MAX_BYTES, the limit of actions with LargePayload.
	MaxFileBytes   int64
	RequestTimeout time.Duration
	// Metrics counts the requests answered here (nil counts nothing).
	Metrics *metrics.Metrics
}

// Intake takes the request messages.
type Intake struct {
	Deps
	queue  chan mqtt.Message
	mu     sync.RWMutex
	closed bool
	done   chan struct{}
	log    zerolog.Logger

	slots chan struct{} // bounds concurrent immediate actions
	// immediateQueued counts immediate actions started and not yet answered.
	immediateQueued atomic.Int64
	immediate       sync.WaitGroup
}

// New prepares the intake; Run starts it.
func New(d Deps) *Intake {
	return &Intake{Deps: d, queue: make(chan mqtt.Message, 4096), done: make(chan struct{}), slots: make(chan struct{}, immediateSlots)}
}

// Offer is the MQTT message callback: it only hands the message over. Unacknowledged QoS 1
// messages are bounded by the broker's in-flight window, so the queue cannot overflow with them;
// QoS 0 messages that do not fit are dropped with a warning.
func (in *Intake) Offer(m mqtt.Message) {
	in.mu.RLock()
	defer in.mu.RUnlock()
	if in.closed {
		return // not acknowledged: the broker delivers it again to the next session
	}
	if m.QoS == 0 {
		select {
		case in.queue <- m:
		default:
			in.log.Warn().Str("topic", m.Topic).Msg("Dropping QoS 0 request: intake queue full")
		}
		return
	}
	in.queue <- m
}

// Close stops taking messages and waits until the ones taken are committed.
func (in *Intake) Close() {
	in.mu.Lock()
	if !in.closed {
		in.closed = true
		close(in.queue)
	}
	in.mu.Unlock()
	<-in.done
}

// Wait blocks until the immediate actions that were started have answered.
func (in *Intake) Wait() { in.immediate.Wait() }

// Run takes messages until Close.
func (in *Intake) Run(ctx context.Context) {
	defer close(in.done)
	in.log = zerolog.Ctx(ctx).With().Str("component", "intake").Logger()
	batch := make([]mqtt.Message, 0, batchSize)
	for m := range in.queue {
		batch = append(batch[:0], m)
	fill:
		for len(batch) < batchSize {
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
func (in *Intake) process(ctx context.Context, batch []mqtt.Message) {
	var durable []*outbox.Entry
	var acks []mqtt.Message
	received := in.Clock.Now()
	for _, m := range batch {
		if m.Duplicate && in.alreadyCommitted(ctx, m) {
			m.Ack()
			continue
		}
		e := in.accept(ctx, m, received)
		if e == nil {
			m.Ack()
			continue
		}
		durable = append(durable, e)
		acks = append(acks, m)
	}
	if len(durable) == 0 {
		return
	}
	for {
		err := in.Queue.Add(ctx, durable)
		if err == nil {
			break
		}
		in.log.Error().Err(err).Msg("Failed to commit requests to the outbox; retrying")
		select {
		case <-ctx.Done():
			return // not acknowledged: the broker delivers them again
		case <-time.After(time.Second):
		}
	}
	for _, m := range acks {
		m.Ack()
	}
	in.Queue.Start(durable)
}

// accept validates one message. It answers bad requests and starts immediate actions
// (returning nil), and returns the outbox entry of a durable one.
func (in *Intake) accept(ctx context.Context, m mqtt.Message, received time.Time) *outbox.Entry {
	action, target, err := in.Topics.Route(m.Topic)
	responseAction := action
	if responseAction == "" {
		responseAction = "unknown"
	}
	if err != nil {
		in.reject(ctx, received, responseAction, wire.RequestID(m.Payload), m, err)
		return nil
	}
	if m.Retained {
		// A retained request would run again after every reconnect.
		if len(m.Payload) > 0 {
			in.reject(ctx, received, action, wire.RequestID(m.Payload), m, wire.Errorf(wire.CodeInvalidRequest,
				"retained requests are ignored: publish without the retain flag, and clear this one with an empty retained message"))
		}
		return nil
	}
	if limit, setting := in.payloadLimit(action, target); len(m.Payload) > limit {
		in.reject(ctx, received, action, wire.RequestID(m.Payload), m, wire.Errorf(wire.CodeTooLarge,
			"the payload is %d bytes; %s allows %d", len(m.Payload), setting, limit))
		return nil
	}
	req, err := in.Registry.Parse(action, target, m.Payload, in.Env.Targets)
	if err != nil {
		in.reject(ctx, received, action, wire.RequestID(m.Payload), m, err)
		return nil
	}
	if p, ok := req.(actions.Preparer); ok {
		if err := p.Prepare(&in.Env); err != nil {
			in.reject(ctx, received, action, req.RequestID(), m, err)
			return nil
		}
	}
	switch r := req.(type) {
	case actions.Durable:
		e, qerr := in.Queue.NewEntry(outbox.Job{Action: action, Request: r, MQTTKey: outbox.MQTTKey(m.PacketID, m.Topic, m.Payload)})
		if qerr != nil {
			in.reject(ctx, received, action, r.RequestID(), m, wire.Errorf(wire.CodeInvalidRequest, "%v", qerr))
			return nil
		}
		return e
	case actions.Immediate:
		in.startImmediate(ctx, action, r, received)
	}
	return nil
}

// payloadLimit is the largest payload action takes, and the setting that says so: a file as
// large as MEDIA_MAX_BYTES for actions that carry one (base64 in a JSON request), else
// MAX_PAYLOAD_BYTES.
func (in *Intake) payloadLimit(action, target string) (int, string) {
	spec, _ := in.Registry.Spec(action)
	if !spec.LargePayload || in.MaxFileBytes == 0 {
		return in.MaxPayloadBytes, "MAX_PAYLOAD_BYTES"
	}
	if target != "" {
		return int(in.MaxFileBytes), "MEDIA_MAX_BYTES"
	}
	return int(base64.StdEncoding.EncodedLen(int(in.MaxFileBytes))) + in.MaxPayloadBytes, "MEDIA_MAX_BYTES (in base64, with MAX_PAYLOAD_BYTES for the other fields)"
}

// alreadyCommitted reports whether a redelivered message was taken already: the bridge
// committed it and stopped before its PUBACK reached the broker.
func (in *Intake) alreadyCommitted(ctx context.Context, m mqtt.Message) bool {
	found, err := in.Queue.Seen(ctx, outbox.MQTTKey(m.PacketID, m.Topic, m.Payload))
	if err != nil {
		in.log.Warn().Err(err).Msg("Failed to check a redelivered message; taking it as new")
		return false
	}
	if found {
		in.log.Debug().Str("topic", m.Topic).Uint16("packet_id", m.PacketID).Msg("Redelivered message is in the outbox already")
	}
	return found
}

func (in *Intake) reject(ctx context.Context, received time.Time, action, id string, m mqtt.Message, err *wire.Error) {
	in.log.Warn().Str("topic", m.Topic).Str("request_id", id).Str("code", err.Code).Str("reason", err.Message).Msg("Rejected request")
	in.Metrics.Request(action, err.Code, in.Clock.Now().Sub(received))
	in.Responder.Respond(ctx, action, id, nil, err)
}

// startImmediate runs an immediate request in its own goroutine, at most immediateSlots at a
// time, within REQUEST_TIMEOUT from when it was received. It never blocks the intake.
func (in *Intake) startImmediate(ctx context.Context, action string, req actions.Immediate, received time.Time) {
	if in.immediateQueued.Add(1) > maxImmediateQueued {
		in.immediateQueued.Add(-1)
		in.finishImmediate(ctx, received, action, req, nil, wire.Errorf(wire.CodeTimeout, "too many requests waiting; try again later"))
		return
	}
	in.immediate.Add(1)
	go func() {
		defer in.immediate.Done()
		runCtx, cancel := context.WithTimeout(ctx, in.RequestTimeout)
		defer cancel()
		data, err := in.runImmediate(runCtx, action, req)
		in.immediateQueued.Add(-1)
		var werr *wire.Error
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			werr = wire.Errorf(wire.CodeTimeout, "not done within REQUEST_TIMEOUT (%s)", in.RequestTimeout)
		default:
			werr = actions.Classify(err).Err
		}
		in.finishImmediate(ctx, received, action, req, data, werr)
	}()
}

func (in *Intake) finishImmediate(ctx context.Context, received time.Time, action string, req actions.Request, data any, err *wire.Error) {
	code := ""
	if err != nil {
		code = err.Code
		in.Stats.RequestFailed(err)
		in.log.Warn().Str("action", action).Str("request_id", req.RequestID()).Str("code", err.Code).Str("reason", err.Message).Msg("Request failed")
	}
	in.Metrics.Request(action, code, in.Clock.Now().Sub(received))
	in.Responder.Respond(ctx, action, req.RequestID(), data, err)
}

// runImmediate waits for a slot and, for actions that need Matrix, for the login; then it runs
// the action, waiting and trying again as long as the homeserver answers M_LIMIT_EXCEEDED and
// the context allows.
func (in *Intake) runImmediate(ctx context.Context, action string, req actions.Immediate) (any, error) {
	select {
	case in.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-in.slots }()
	if spec, _ := in.Registry.Spec(action); !spec.Local {
		select {
		case <-in.Ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	for attempt := 0; ; attempt++ {
		data, err := req.Run(ctx, &in.Env)
		if err == nil || !errors.Is(err, mautrix.MLimitExceeded) {
			return data, err
		}
		wait := max(actions.Classify(err).RetryWait, matrix.Backoff(attempt, time.Second, 5*time.Minute))
		in.log.Debug().Str("action", action).Dur("retry_in", wait).Msg("Rate limited, waiting as told")
		select {
		case <-in.Clock.After(wait):
		case <-ctx.Done():
			return nil, err
		}
	}
}
