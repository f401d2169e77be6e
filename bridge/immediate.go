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

// startImmediate runs a request that does not go through the outbox (room operations, typing,
// lookups) in its own goroutine, at most 16 at a time, bounded by REQUEST_TIMEOUT.
func (b *Bridge) startImmediate(ctx context.Context, action string, req request) {
	select {
	case b.limiter <- struct{}{}:
	case <-ctx.Done():
		return
	}
	go func() {
		defer func() { <-b.limiter }()
		select {
		case <-b.ready:
		case <-ctx.Done():
			return
		}
		runCtx, cancel := context.WithTimeout(ctx, b.cfg.RequestTimeout)
		defer cancel()
		data, err := b.immediateRateLimited(runCtx, action, req)
		var rerr *Error
		if err != nil {
			if errors.As(err, &rerr) {
				// already a response error
			} else if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				rerr = errorf(CodeTimeout, "no answer from the homeserver within REQUEST_TIMEOUT (%s)", b.cfg.RequestTimeout)
			} else {
				rerr = classify(err).err
			}
			b.stats.failed(rerr)
			b.log.Warn().Str("action", action).Str("request_id", idOf(req)).Str("code", rerr.Code).Str("reason", rerr.Message).Msg("Request failed")
		}
		b.respond(ctx, action, idOf(req), data, rerr)
	}()
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
