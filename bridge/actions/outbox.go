package actions

import (
	"context"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Outbox are the actions that look at and steer the outbox.
var Outbox = []Spec{
	{Name: "outbox_flush", Help: "makes every request waiting to retry try again now",
		New: func() Request { return &OutboxFlush{} }, Local: true},
	{Name: "outbox_stats", Help: "returns the outbox and delivery figures",
		New: func() Request { return &OutboxStats{} }, Local: true},
	{Name: "outbox_cancel", Help: "cancels a scheduled or pending request by its id",
		New: func() Request { return &OutboxCancel{} }, Local: true},
}

// OutboxFlush is the `outbox_flush` action.
type OutboxFlush struct {
	Common
}

// Validate accepts any outbox_flush request.
func (r *OutboxFlush) Validate(Targets) *wire.Error { return nil }

// Run wakes the waiting retries and returns the figures.
func (r *OutboxFlush) Run(_ context.Context, env *Env) (any, error) {
	env.Outbox.Flush()
	return env.Outbox.Stats(), nil
}

// OutboxStats is the `outbox_stats` action.
type OutboxStats struct {
	Common
}

// Validate accepts any outbox_stats request.
func (r *OutboxStats) Validate(Targets) *wire.Error { return nil }

// Run returns the figures.
func (r *OutboxStats) Run(_ context.Context, env *Env) (any, error) {
	return env.Outbox.Stats(), nil
}
