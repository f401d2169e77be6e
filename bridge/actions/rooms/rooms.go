package rooms

import (
	"context"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Rooms are the actions that change which rooms the bot is in and how they are set up.
var Rooms = []actions.Spec{
	{Name: "join", Once: true, Help: "joins a room by ID or alias", New: func() actions.Request { return &Join{} }},
	{Name: "leave", Once: true, Help: "leaves a room", New: func() actions.Request { return &Leave{} }},
	{Name: "ensure_dm", Once: true, Help: "finds or creates the direct chat with a user", New: func() actions.Request { return &EnsureDM{} }},
	{Name: "ensure_encrypted", Once: true, Help: "turns encryption on in a room", New: func() actions.Request { return &EnsureEncrypted{} }},
}

// Room is the `room` field of requests that act on a room.
type Room struct {
	Room   string `json:"room"`
	target string
}

func (r *Room) Check(t actions.Targets) (err *wire.Error) {
	r.target, err = t.CheckRoom("room", r.Room)
	return err
}

// Join is the `join` action.
type Join struct {
	actions.Common
	Room
}

// Validate checks the room.
func (r *Join) Validate(t actions.Targets) *wire.Error { return r.Room.Check(t) }

// Run joins the room.
func (r *Join) Run(ctx context.Context, env *actions.Env) (any, error) {
	roomID, err := env.Matrix.Join(ctx, r.target)
	if err != nil {
		return nil, err
	}
	env.Targets.Remember(r.target, roomID)
	return actions.RoomResult{RoomID: roomID, Key: env.Targets.Key(roomID)}, nil
}

// Leave is the `leave` action.
type Leave struct {
	actions.Common
	Room
}

// Validate checks the room.
func (r *Leave) Validate(t actions.Targets) *wire.Error { return r.Room.Check(t) }

// Run leaves the room.
func (r *Leave) Run(ctx context.Context, env *actions.Env) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	return actions.RoomResult{RoomID: roomID}, env.Matrix.Leave(ctx, roomID)
}

// EnsureEncrypted is the `ensure_encrypted` action.
type EnsureEncrypted struct {
	actions.Common
	Room
}

// Validate checks the room.
func (r *EnsureEncrypted) Validate(t actions.Targets) *wire.Error { return r.Room.Check(t) }

// Run turns encryption on unless it is on already.
func (r *EnsureEncrypted) Run(ctx context.Context, env *actions.Env) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	changed, err := env.Matrix.EnsureEncrypted(ctx, roomID)
	return actions.RoomResult{RoomID: roomID, Changed: &changed}, err
}

// EnsureDM is the `ensure_dm` action.
type EnsureDM struct {
	actions.Common
	User string `json:"user"`
	user id.UserID
}

// Validate checks the user.
func (r *EnsureDM) Validate(t actions.Targets) (err *wire.Error) {
	r.user, err = t.CheckUser("user", r.User)
	return err
}

// Run finds the DM with the user, creating it when there is none.
func (r *EnsureDM) Run(ctx context.Context, env *actions.Env) (any, error) {
	roomID, created, err := env.Matrix.EnsureDM(ctx, r.user)
	if err != nil {
		return nil, err
	}
	env.Targets.Remember(r.user.String(), roomID)
	return actions.RoomResult{RoomID: roomID, Key: env.Targets.Key(roomID), Created: &created}, nil
}
