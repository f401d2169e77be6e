// Package intake takes requests from MQTT: it validates each once, answers bad ones, runs
// immediate actions, and commits durable ones to the outbox in batches before it acknowledges
// them to the broker.
package intake

import (
	"context"
	"encoding/base64"
	"encoding/json"
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
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
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

// maxRejectsQueued bounds the answers to bad requests waiting to be published. The intake
// waits for room when it is full, but never after Close: an answer that cannot go out then
// (the broker is gone) must not hold up the shutdown, and is dropped.
const maxRejectsQueued = 1024

// Queue is the outbox, as the intake uses it.
type Queue interface {
	Seen(ctx context.Context, mqttKey string) (bool, error)
	Accepted(ctx context.Context, action string, ids []string) (map[string]json.RawMessage, error)
	Watch(fn func(ctx context.Context, action, requestID string, response json.RawMessage))
	NewEntry(j outbox.Job) (*outbox.Entry, error)
	Add(ctx context.Context, entries []*outbox.Entry) ([]outbox.Repeat, error)
	Start(entries []*outbox.Entry)
}

// Requests remembers the ids of immediate requests whose action runs once per id (Spec.Once).
type Requests interface {
	ClaimRequest(ctx context.Context, action, id string, at time.Time) (store.Claim, error)
	KeepResponse(ctx context.Context, action, id string, response json.RawMessage) error
	ForgetRequest(ctx context.Context, action, id string) error
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
	// Requests, when set, keeps Once actions from running twice for one id.
	Requests Requests
}

// Intake takes the request messages.
type Intake struct {
	Deps
	queue  chan mqtt.Message
	mu     sync.RWMutex
	closed bool
	done   chan struct{}
	log    zerolog.Logger

	// rejects are the answers to bad requests, published by their own goroutine so that a
	// broker that is gone does not stop the intake's loop; closing is closed by Close.
	rejects        chan rejection
	closing        chan struct{}
	droppedRejects atomic.Int64

	// repeats are the repeats of pending requests (by action and id), answered when the first
	// is done.
	repeatsMu sync.Mutex
	repeats   map[[2]string]int

	slots chan struct{} // bounds concurrent immediate actions
	// started is when this intake was made: a Once request accepted before it, and not done, was
	// cut short by a stop.
	started time.Time
	// immediateQueued counts immediate actions started and not yet answered.
	immediateQueued atomic.Int64
	immediate       sync.WaitGroup
}

// New prepares the intake; Run starts it.
func New(d Deps) *Intake {
	in := &Intake{Deps: d, queue: make(chan mqtt.Message, 4096), done: make(chan struct{}), slots: make(chan struct{}, immediateSlots),
		rejects: make(chan rejection, maxRejectsQueued), closing: make(chan struct{}), repeats: map[[2]string]int{}}
	in.started = d.Clock.Now()
	d.Queue.Watch(in.finished)
	in.immediate.Add(1) // the loop that answers bad requests, started by Run: Wait waits for it too
	return in
}

// rejection is the answer to one bad request, or the kept response to a repeated one.
type rejection struct {
	action, id string
	data       any
	err        *wire.Error
}

// Offer is the MQTT message callback: it only hands the message over. A QoS 1 message waits
// for room in the queue, which holds paho's reader and so the broker (a broker without an
// in-flight limit may send its whole queue at once); QoS 0 messages that do not fit are dropped
// with a warning.
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
		close(in.closing)
	}
	in.mu.Unlock()
	<-in.done
}

// Wait blocks until the immediate actions that were started, and the bad requests, have been
// answered (or their context ended).
func (in *Intake) Wait() { in.immediate.Wait() }

// Drain is Wait within ctx, for a shutdown that lets the requests under way finish before it
// cancels them; it reports whether they all were answered. Call it after Close: until then the
// loop that answers bad requests runs, and Drain waits for it too.
func (in *Intake) Drain(ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		in.immediate.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// Run takes messages until Close.
func (in *Intake) Run(ctx context.Context) {
	in.log = zerolog.Ctx(ctx).With().Str("component", "intake").Logger()
	go in.publishRejects(ctx)
	defer close(in.done)
	defer close(in.rejects)
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
	var reqs []actions.Durable
	received := in.Clock.Now()
	for _, m := range batch {
		if m.Duplicate && in.alreadyCommitted(ctx, m) {
			m.Ack()
			continue
		}
		e, req := in.accept(ctx, m, received)
		if e == nil {
			m.Ack()
			continue
		}
		durable, acks, reqs = append(durable, e), append(acks, m), append(reqs, req)
	}
	if len(durable) == 0 {
		return
	}
	var repeats []outbox.Repeat
	for {
		var err error
		repeats, err = in.Queue.Add(ctx, durable)
		if err == nil {
			break
		}
		in.log.Error().Err(err).Msg("Failed to commit requests to the outbox; retrying")
		select {
		case <-ctx.Done():
			for _, req := range reqs {
				in.release(req)
			}
			return // not acknowledged: the broker delivers them again
		case <-time.After(time.Second):
		}
	}
	for _, m := range acks {
		m.Ack()
	}
	in.answerRepeats(ctx, repeats, durable, acks, reqs)
	in.Queue.Start(outbox.WithoutRepeats(durable, repeats))
}

// accept validates one message. It answers bad requests and starts immediate actions
// (returning nil), and returns the outbox entry of a durable one with its request.
func (in *Intake) accept(ctx context.Context, m mqtt.Message, received time.Time) (*outbox.Entry, actions.Durable) {
	action, target, err := in.Topics.Route(m.Topic)
	responseAction := action
	if responseAction == "" {
		responseAction = "unknown"
	}
	if err != nil {
		in.reject(received, responseAction, wire.RequestID(m.Payload), m, err)
		return nil, nil
	}
	if m.Retained {
		// A retained request would run again after every reconnect.
		if len(m.Payload) > 0 {
			in.reject(received, action, wire.RequestID(m.Payload), m, wire.Errorf(wire.CodeInvalidRequest,
				"retained requests are ignored: publish without the retain flag, and clear this one with an empty retained message"))
		}
		return nil, nil
	}
	if limit, setting := in.payloadLimit(action, target); len(m.Payload) > limit {
		in.reject(received, action, wire.RequestID(m.Payload), m, wire.Errorf(wire.CodeTooLarge,
			"the payload is %d bytes; %s allows %d", len(m.Payload), setting, limit))
		return nil, nil
	}
	req, err := in.Registry.Parse(action, target, m.Payload, in.Env.Targets)
	if err != nil {
		in.reject(received, action, wire.RequestID(m.Payload), m, err)
		return nil, nil
	}
	if p, ok := req.(actions.Preparer); ok {
		if err := p.Prepare(&in.Env); err != nil {
			in.reject(received, action, req.RequestID(), m, err)
			return nil, nil
		}
	}
	switch r := req.(type) {
	case actions.Durable:
		e, qerr := in.Queue.NewEntry(outbox.Job{Action: action, Request: r, MQTTKey: outbox.MQTTKey(m.PacketID, m.Topic, m.Payload)})
		if qerr != nil {
			in.release(r)
			in.reject(received, action, r.RequestID(), m, wire.Errorf(wire.CodeInvalidRequest, "%v", qerr))
			return nil, nil
		}
		return e, r
	case actions.Immediate:
		in.startImmediate(ctx, action, r, received)
	}
	return nil, nil
}

// release lets a request that Prepare kept something for outside its row (a spooled file) clean
// up when it is not committed: refused, a repeat, or left for the broker to deliver again.
func (in *Intake) release(req actions.Request) {
	f, ok := req.(actions.Finisher)
	if !ok {
		return
	}
	if err := f.Finished(&in.Env); err != nil {
		in.log.Warn().Err(err).Msg("Failed to clean up after a request that was not committed")
	}
}

// answerRepeats answers the durable requests Add did not commit because their action and id
// were accepted already (within store.RequestRetention) or earlier in the batch: a repeat of a
// done one with its kept response, a repeat of a pending one when the first is done (by
// finished); what the repeat's Prepare kept is released. durable, acks and reqs are the batch's
// entries, their messages and their requests.
func (in *Intake) answerRepeats(ctx context.Context, repeats []outbox.Repeat, durable []*outbox.Entry, acks []mqtt.Message, reqs []actions.Durable) {
	if len(repeats) == 0 {
		return
	}
	index := make(map[*outbox.Entry]int, len(durable))
	for i, e := range durable {
		index[e] = i
	}
	for _, r := range repeats {
		e, m := r.Entry, acks[index[r.Entry]]
		in.release(reqs[index[r.Entry]])
		log := in.log.Info().Str("action", e.Action).Str("request_id", e.RequestID).Uint16("packet_id", m.PacketID).Bool("redelivery", m.Duplicate)
		response := r.Response
		if len(response) == 0 {
			response = in.awaitFirst(ctx, e.Action, e.RequestID)
		}
		if len(response) == 0 {
			log.Msg("Request with this id is pending already; not run again, answered when it is done")
			continue
		}
		log.Msg("Request with this id was done already; answering with its response")
		data, err := in.decodeKept(e.RequestID, response)
		in.answer(rejection{action: e.Action, id: e.RequestID, data: data, err: err})
	}
}

// awaitFirst registers a repeat of a pending request, to be answered by finished, and returns
// the first's response instead if it was recorded meanwhile (it may have finished between the
// look-up and the registration).
func (in *Intake) awaitFirst(ctx context.Context, action, id string) json.RawMessage {
	key := [2]string{action, id}
	in.repeatsMu.Lock()
	in.repeats[key]++
	in.repeatsMu.Unlock()
	found, err := in.Queue.Accepted(ctx, action, []string{id})
	if err != nil || len(found[id]) == 0 {
		return nil
	}
	in.repeatsMu.Lock()
	defer in.repeatsMu.Unlock()
	if in.repeats[key] == 0 {
		return nil // finished answered it already
	}
	if in.repeats[key]--; in.repeats[key] == 0 {
		delete(in.repeats, key)
	}
	return found[id]
}

// finished answers the repeats of a request that were taken while it was pending; it runs on
// the outbox lane that finished the request, like the request's own response.
func (in *Intake) finished(ctx context.Context, action, id string, response json.RawMessage) {
	key := [2]string{action, id}
	in.repeatsMu.Lock()
	n := in.repeats[key]
	delete(in.repeats, key)
	in.repeatsMu.Unlock()
	if n == 0 {
		return
	}
	data, err := in.decodeKept(id, response)
	for range n {
		in.Responder.Respond(ctx, action, id, data, err)
	}
}

// decodeKept returns the data and error of a kept response.
func (in *Intake) decodeKept(id string, response json.RawMessage) (any, *wire.Error) {
	var kept struct {
		Data  json.RawMessage `json:"data"`
		Error *wire.Error     `json:"error"`
	}
	if err := json.Unmarshal(response, &kept); err != nil {
		in.log.Warn().Err(err).Str("request_id", id).Msg("Failed to decode a kept response")
		return nil, wire.Errorf(wire.CodeInvalidRequest, "this id was used by an earlier request whose response cannot be read")
	}
	if len(kept.Data) == 0 {
		return nil, kept.Error
	}
	return kept.Data, kept.Error
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

// reject answers a bad request through publishRejects. It waits while maxRejectsQueued answers
// are queued, unless the intake is closing: then the answer is dropped (and counted).
func (in *Intake) reject(received time.Time, action, id string, m mqtt.Message, err *wire.Error) {
	in.log.Warn().Str("topic", m.Topic).Str("request_id", id).Str("code", err.Code).Str("reason", err.Message).Msg("Rejected request")
	in.Metrics.Request(action, err.Code, in.Clock.Now().Sub(received))
	in.answer(rejection{action: action, id: id, err: err})
}

// answer queues r for publishRejects, waiting while the queue is full unless the intake is
// closing.
func (in *Intake) answer(r rejection) {
	select {
	case in.rejects <- r:
		return
	default:
	}
	select {
	case in.rejects <- r:
	case <-in.closing:
		in.droppedRejects.Add(1)
	}
}

// publishRejects publishes the answers to bad requests in order, until Run ends and the queue
// is empty; each waits for the broker no longer than ctx.
func (in *Intake) publishRejects(ctx context.Context) {
	defer in.immediate.Done()
	for r := range in.rejects {
		if ctx.Err() != nil {
			in.droppedRejects.Add(1)
			continue
		}
		in.Responder.Respond(ctx, r.action, r.id, r.data, r.err)
	}
	if dropped := in.droppedRejects.Load(); dropped > 0 {
		in.log.Warn().Int64("dropped", dropped).Msg("Dropped answers to bad requests at shutdown: the broker was gone")
	}
}

// startImmediate runs an immediate request in its own goroutine, at most immediateSlots at a
// time, within REQUEST_TIMEOUT from when it was received. It never blocks the intake.
func (in *Intake) startImmediate(ctx context.Context, action string, req actions.Immediate, received time.Time) {
	if in.immediateQueued.Add(1) > maxImmediateQueued {
		in.immediateQueued.Add(-1)
		// Answered through publishRejects, like a bad request: the intake's loop never waits
		// for the broker.
		werr := wire.Errorf(wire.CodeTimeout, "too many requests waiting; try again later")
		in.countImmediate(received, action, req, werr)
		in.answer(rejection{action: action, id: req.RequestID(), err: werr})
		return
	}
	in.immediate.Add(1)
	go func() {
		defer in.immediate.Done()
		defer in.immediateQueued.Add(-1)
		runCtx, cancel := context.WithTimeout(ctx, in.RequestTimeout)
		defer cancel()
		once, repeat, kept, werr := in.claimOnce(runCtx, action, req.RequestID(), received)
		if repeat {
			in.Responder.Respond(ctx, action, req.RequestID(), kept, werr)
			return
		}
		data, ran, err := in.runImmediate(runCtx, action, req)
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			werr = wire.Errorf(wire.CodeTimeout, "not done within REQUEST_TIMEOUT (%s)", in.RequestTimeout)
		default:
			werr = actions.Classify(err).Err
		}
		if once {
			in.settleOnce(ctx, action, req.RequestID(), ran, data, werr)
		}
		in.finishImmediate(ctx, received, action, req, data, werr)
	}()
}

// claimOnce claims the id of a request whose action runs once per id. once tells that it is the
// first, whose outcome settleOnce keeps; a repeat is answered with kept and werr: the first's
// response, once the first is done (waiting while it runs, until ctx ends).
func (in *Intake) claimOnce(ctx context.Context, action, id string, received time.Time) (once, repeat bool, kept any, werr *wire.Error) {
	if spec, _ := in.Registry.Spec(action); !spec.Once || id == "" || in.Requests == nil {
		return false, false, nil, nil
	}
	for logged := false; ; logged = true {
		c, err := in.Requests.ClaimRequest(ctx, action, id, received)
		switch {
		case err != nil:
			// Running it is better than refusing it: the homeserver refuses most repeats itself.
			in.log.Error().Err(err).Str("action", action).Str("request_id", id).Msg("Failed to claim a request id; running the request")
			return false, false, nil, nil
		case c.Claimed:
			return true, false, nil, nil // also when an earlier one never ran and forgot its claim
		case !logged:
			in.log.Info().Str("action", action).Str("request_id", id).Msg("Request with this id was accepted already; answering with its response")
		}
		switch {
		case len(c.Response) > 0:
			kept, werr := in.decodeKept(id, c.Response)
			return false, true, kept, werr
		case c.AcceptedAt.Before(in.started):
			return false, true, nil, wire.Errorf(wire.CodeInvalidRequest, "a request with the id %q was accepted, but the bridge stopped while it ran, so whether it was done is not known; to run it again, use a new id", id)
		}
		select {
		case <-in.Clock.After(100 * time.Millisecond):
		case <-ctx.Done():
			return false, true, nil, wire.Errorf(wire.CodeTimeout, "a request with the id %q is still running; its response comes on this topic when it is done", id)
		}
	}
}

// settleOnce keeps the outcome of the first request of an id for its repeats, or, when the
// action never ran (it timed out waiting for a slot or the login), forgets the id so that a
// repeat runs.
func (in *Intake) settleOnce(ctx context.Context, action, id string, ran bool, data any, werr *wire.Error) {
	ctx = context.WithoutCancel(ctx) // kept even when the shutdown cancelled the request
	var err error
	if !ran {
		err = in.Requests.ForgetRequest(ctx, action, id)
	} else {
		var response []byte
		if response, err = json.Marshal(wire.NewResponse(id, data, werr)); err == nil {
			err = in.Requests.KeepResponse(ctx, action, id, response)
		}
	}
	if err != nil {
		in.log.Error().Err(err).Str("action", action).Str("request_id", id).Msg("Failed to keep the outcome of a request id")
	}
}

// finishImmediate counts and answers an immediate request that ran, on its own goroutine.
func (in *Intake) finishImmediate(ctx context.Context, received time.Time, action string, req actions.Request, data any, err *wire.Error) {
	in.countImmediate(received, action, req, err)
	in.Responder.Respond(ctx, action, req.RequestID(), data, err)
}

// countImmediate logs a failed immediate request and counts it in the stats and metrics.
func (in *Intake) countImmediate(received time.Time, action string, req actions.Request, err *wire.Error) {
	code := ""
	if err != nil {
		code = err.Code
		in.Stats.RequestFailed(err)
		in.log.Warn().Str("action", action).Str("request_id", req.RequestID()).Str("code", err.Code).Str("reason", err.Message).Msg("Request failed")
	}
	in.Metrics.Request(action, code, in.Clock.Now().Sub(received))
}

// runImmediate waits for a slot and, for actions that need Matrix, for the login; then it runs
// the action, waiting and trying again as long as the homeserver answers M_LIMIT_EXCEEDED and
// the context allows.
func (in *Intake) runImmediate(ctx context.Context, action string, req actions.Immediate) (data any, ran bool, err error) {
	select {
	case in.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	defer func() { <-in.slots }()
	if spec, _ := in.Registry.Spec(action); !spec.Local {
		select {
		case <-in.Ready:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	for attempt := 0; ; attempt++ {
		data, err := req.Run(ctx, &in.Env)
		if err == nil || !errors.Is(err, mautrix.MLimitExceeded) {
			return data, true, err
		}
		wait := max(actions.Classify(err).RetryWait, matrix.Backoff(attempt, time.Second, 5*time.Minute))
		in.log.Debug().Str("action", action).Dur("retry_in", wait).Msg("Rate limited, waiting as told")
		select {
		case <-in.Clock.After(wait):
		case <-ctx.Done():
			return nil, true, err
		}
	}
}
