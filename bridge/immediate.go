package bridge

import (
	"context"
	"errors"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// maxImmediateQueued bounds the immediate requests waiting for a slot; beyond it they are
// answered at once with a timeout error instead of piling up.
const maxImmediateQueued = 1024

// startImmediate runs a request that does not go through the outbox (room operations, typing,
// lookups) in its own goroutine, at most 16 at a time, within REQUEST_TIMEOUT from when it was
// received. It never blocks the intake.
func (b *Bridge) startImmediate(ctx context.Context, action string, req request) {
	if b.immediateQueued.Add(1) > maxImmediateQueued {
		b.immediateQueued.Add(-1)
		b.finishImmediate(ctx, action, req, nil, errorf(CodeTimeout, "too many requests waiting; try again later"))
		return
	}
	go func() {
		runCtx, cancel := context.WithTimeout(ctx, b.cfg.RequestTimeout)
		defer cancel()
		data, err := b.runImmediate(runCtx, action, req)
		b.immediateQueued.Add(-1)
		var rerr *Error
		switch {
		case err == nil:
		case errors.As(err, &rerr):
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			rerr = errorf(CodeTimeout, "not done within REQUEST_TIMEOUT (%s)", b.cfg.RequestTimeout)
		default:
			rerr = classify(err).err
		}
		b.finishImmediate(ctx, action, req, data, rerr)
	}()
}

func (b *Bridge) finishImmediate(ctx context.Context, action string, req request, data any, err *Error) {
	if err != nil {
		b.stats.update(func(s *Stats) { s.Failed++ })
		b.stats.failed(err)
		b.log.Warn().Str("action", action).Str("request_id", idOf(req)).Str("code", err.Code).Str("reason", err.Message).Msg("Request failed")
	}
	b.respond(ctx, action, idOf(req), data, err)
}

// runImmediate waits for a slot and, for actions that need Matrix, for the login.
func (b *Bridge) runImmediate(ctx context.Context, action string, req request) (any, error) {
	select {
	case b.limiter <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-b.limiter }()
	switch action {
	case ActionOutboxStats, ActionOutboxFlush:
	default:
		select {
		case <-b.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.immediateRateLimited(ctx, action, req)
}

// immediateRateLimited runs an immediate action, waiting and trying again as long as the
// homeserver answers M_LIMIT_EXCEEDED and REQUEST_TIMEOUT allows.
func (b *Bridge) immediateRateLimited(ctx context.Context, action string, req request) (any, error) {
	for attempt := 0; ; attempt++ {
		data, err := b.immediate(ctx, action, req)
		if err == nil || !errors.Is(err, mautrix.MLimitExceeded) {
			return data, err
		}
		wait := max(classify(err).retryWait, matrix.Backoff(attempt, retryBase, retryLimit))
		b.log.Debug().Str("action", action).Dur("retry_in", wait).Msg("Rate limited, waiting as told")
		if !b.sleep(ctx, wait, false) {
			return nil, err
		}
	}
}

// RoomResult is the data of join, leave, resolve and ensure_dm.
type RoomResult struct {
	RoomID  id.RoomID `json:"room_id"`
	Key     string    `json:"key,omitempty"`
	Created *bool     `json:"created,omitempty"`
	// Changed tells, for ensure_encrypted, whether encryption was off.
	Changed *bool `json:"changed,omitempty"`
}

// EventResult is the data of get_event: the event as it would be published inbound.
type EventResult struct {
	Kind  matrix.Kind `json:"kind"`
	Event any         `json:"event"`
}

func (b *Bridge) immediate(ctx context.Context, action string, req request) (any, error) {
	switch r := req.(type) {
	case *TypingRequest:
		roomID, err := b.resolveChecked(ctx, r.To)
		if err != nil {
			return nil, err
		}
		typing := r.Typing == nil || *r.Typing
		timeout := time.Duration(r.TimeoutMS) * time.Millisecond
		if timeout == 0 {
			timeout = 30 * time.Second
		}
		return RoomResult{RoomID: roomID}, b.matrix.Typing(ctx, roomID, typing, timeout)
	case *ReadReceiptRequest:
		roomID, err := b.resolveChecked(ctx, r.To)
		if err != nil {
			return nil, err
		}
		if action == ActionGetEvent {
			ev, err := b.matrix.GetEvent(ctx, roomID, r.EventID)
			if err != nil {
				return nil, err
			}
			return EventResult{Kind: ev.Kind, Event: ev.Payload}, nil
		}
		return RoomResult{RoomID: roomID}, b.matrix.ReadReceipt(ctx, roomID, r.EventID)
	case *TargetRequest:
		roomID, err := b.resolveChecked(ctx, r.To)
		if err != nil {
			return nil, err
		}
		return RoomResult{RoomID: roomID, Key: b.keys.key(roomID)}, nil
	case *RoomRequest:
		room, err := b.checkRoom(r.Room)
		if err != nil {
			return nil, err
		}
		if action == ActionEnsureEncrypted {
			roomID, err := b.resolve(ctx, room)
			if err != nil {
				return nil, err
			}
			changed, err := b.matrix.EnsureEncrypted(ctx, roomID)
			return RoomResult{RoomID: roomID, Changed: &changed}, err
		}
		if action == ActionJoin {
			roomID, err := b.matrix.Join(ctx, room)
			if err != nil {
				return nil, err
			}
			b.keys.remember(room, roomID)
			return RoomResult{RoomID: roomID, Key: b.keys.key(roomID)}, nil
		}
		roomID, err := b.resolve(ctx, room)
		if err != nil {
			return nil, err
		}
		return RoomResult{RoomID: roomID}, b.matrix.Leave(ctx, roomID)
	case *UserRequest:
		user, _ := b.keys.expand(r.User)
		if !strings.HasPrefix(user, "@") {
			return nil, errorf(CodeInvalidRequest, "field 'user' must be a user ID or a friendly name of one, not %q", r.User)
		}
		if err := validateTargetID(user); err != nil {
			return nil, errorf(CodeInvalidRequest, "field 'user': %v", err)
		}
		if _, err := b.checkTarget(r.User); err != nil {
			return nil, err
		}
		roomID, created, err := b.matrix.EnsureDM(ctx, id.UserID(user))
		if err != nil {
			return nil, err
		}
		b.keys.remember(user, roomID)
		return RoomResult{RoomID: roomID, Key: b.keys.key(roomID), Created: &created}, nil
	case *EmptyRequest:
		switch action {
		case ActionListRooms:
			rooms, err := b.matrix.Rooms(ctx)
			if err != nil {
				return nil, err
			}
			return map[string]any{"rooms": b.keys.annotate(rooms)}, nil
		case ActionOutboxFlush:
			b.flush()
			return b.stats.snapshot(), nil
		case ActionOutboxStats:
			return b.stats.snapshot(), nil
		}
	}
	return nil, errorf(CodeUnknownAction, "action %q is not known", action)
}

// resolveChecked resolves a `to` field after the friendly-name and allowlist checks.
func (b *Bridge) resolveChecked(ctx context.Context, to string) (id.RoomID, error) {
	target, err := b.checkTarget(to)
	if err != nil {
		return "", err
	}
	return b.resolve(ctx, target)
}

// checkRoom expands and checks a `room` field: a room ID or alias, or a friendly name of one.
func (b *Bridge) checkRoom(room string) (string, error) {
	target, err := b.checkTarget(room)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(target, "@") {
		return "", errorf(CodeInvalidRequest, "field 'room' must be a room ID, alias or friendly name of a room, not the user %q", target)
	}
	return target, nil
}
