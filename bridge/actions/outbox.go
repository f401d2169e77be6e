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

// OutboxCancel is the `outbox_cancel` action.
type OutboxCancel struct {
	Common
	// Request is the id of the request to cancel.
	Request string `json:"request_id"`
}

// Validate checks that a request id is given.
func (r *OutboxCancel) Validate(Targets) *wire.Error {
	if r.Request == "" {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'request_id' is required: the id of the request to cancel")
	}
	return nil
}

// Run cancels the request.
func (r *OutboxCancel) Run(ctx context.Context, env *Env) (any, error) {
	n, err := env.Outbox.Cancel(ctx, r.Request)
	if err != nil {
		return nil, err
	}
	return CancelResult{RequestID: r.Request, Cancelled: n}, nil
}

// CancelResult is the data of outbox_cancel.
type CancelResult struct {
	RequestID string `json:"request_id"`
	Cancelled int    `json:"cancelled"`
}
