package actions

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Lookups are the actions that only read.
var Lookups = []Spec{
	{Name: "resolve", Help: "tells the room a target stands for", New: func() Request { return &Resolve{} }},
	{Name: "list_rooms", Help: "lists the joined rooms", New: func() Request { return &ListRooms{} }},
	{Name: "get_event", Help: "fetches one event as it would be published inbound", New: func() Request { return &GetEvent{} }},
}

// Resolve is the `resolve` action.
type Resolve struct {
	Common
	To
}

// Validate checks the target.
func (r *Resolve) Validate(t Targets) *wire.Error { return r.To.Check(t) }

// Run resolves the target; a user ID resolves to the DM with them, created when there is none.
func (r *Resolve) Run(ctx context.Context, env *Env) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	return RoomResult{RoomID: roomID, Key: env.Targets.Key(roomID)}, nil
}

// ListRooms is the `list_rooms` action.
type ListRooms struct {
	Common
}

// Validate accepts any list_rooms request.
func (r *ListRooms) Validate(Targets) *wire.Error { return nil }

// RoomList is the data of list_rooms.
type RoomList struct {
	Rooms []wire.RoomInfo `json:"rooms"`
}

// Run lists the rooms with their topic keys.
func (r *ListRooms) Run(ctx context.Context, env *Env) (any, error) {
	rooms, err := env.Matrix.Rooms(ctx)
	if err != nil {
		return nil, err
	}
	return RoomList{Rooms: env.Targets.Annotate(rooms)}, nil
}

// GetEvent is the `get_event` action.
type GetEvent struct {
	Common
	To
	EventID id.EventID `json:"event_id"`
}

// Validate checks the event.
func (r *GetEvent) Validate(t Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	return CheckEventID("event_id", r.EventID, true)
}

// EventResult is the data of get_event: the event as it would be published inbound.
type EventResult struct {
	Kind  wire.Kind `json:"kind"`
	Event any       `json:"event"`
}

// Run fetches (and decrypts) the event.
func (r *GetEvent) Run(ctx context.Context, env *Env) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	ev, err := env.Matrix.GetEvent(ctx, roomID, r.EventID)
	if err != nil {
		return nil, err
	}
	return EventResult{Kind: ev.Kind, Event: ev.Payload}, nil
}
