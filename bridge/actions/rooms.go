package actions

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Rooms are the actions that change which rooms the bot is in and how they are set up.
var Rooms = []Spec{
	{Name: "join", Help: "joins a room by ID or alias", New: func() Request { return &Join{} }},
	{Name: "leave", Help: "leaves a room", New: func() Request { return &Leave{} }},
	{Name: "ensure_dm", Help: "finds or creates the direct chat with a user", New: func() Request { return &EnsureDM{} }},
	{Name: "ensure_encrypted", Help: "turns encryption on in a room", New: func() Request { return &EnsureEncrypted{} }},
}

// RoomResult is the data of the room actions and of resolve.
type RoomResult struct {
	RoomID  id.RoomID `json:"room_id"`
	Key     string    `json:"key,omitempty"`
	Created *bool     `json:"created,omitempty"`
	// Changed tells, for ensure_encrypted, whether encryption was off.
	Changed *bool `json:"changed,omitempty"`
}

// Room is the `room` field of requests that act on a room.
type Room struct {
	Room   string `json:"room"`
	target string
}

func (r *Room) validate(t Targets) (err *wire.Error) {
	r.target, err = t.CheckRoom("room", r.Room)
	return err
}

// Join is the `join` action.
type Join struct {
	Common
	Room
}

// Validate checks the room.
func (r *Join) Validate(t Targets) *wire.Error { return r.Room.validate(t) }

// Run joins the room.
func (r *Join) Run(ctx context.Context, env *Env) (any, error) {
	roomID, err := env.Matrix.Join(ctx, r.target)
	if err != nil {
		return nil, err
	}
	env.Targets.Remember(r.target, roomID)
	return RoomResult{RoomID: roomID, Key: env.Targets.Key(roomID)}, nil
}

// Leave is the `leave` action.
type Leave struct {
	Common
	Room
}

// Validate checks the room.
func (r *Leave) Validate(t Targets) *wire.Error { return r.Room.validate(t) }

// Run leaves the room.
func (r *Leave) Run(ctx context.Context, env *Env) (any, error) {
	roomID, err := env.resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	return RoomResult{RoomID: roomID}, env.Matrix.Leave(ctx, roomID)
}

// EnsureEncrypted is the `ensure_encrypted` action.
type EnsureEncrypted struct {
	Common
	Room
}

// Validate checks the room.
func (r *EnsureEncrypted) Validate(t Targets) *wire.Error { return r.Room.validate(t) }

// Run turns encryption on unless it is on already.
func (r *EnsureEncrypted) Run(ctx context.Context, env *Env) (any, error) {
	roomID, err := env.resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	changed, err := env.Matrix.EnsureEncrypted(ctx, roomID)
	return RoomResult{RoomID: roomID, Changed: &changed}, err
}

// EnsureDM is the `ensure_dm` action.
type EnsureDM struct {
	Common
	User string `json:"user"`
	user id.UserID
}

// Validate checks the user.
func (r *EnsureDM) Validate(t Targets) (err *wire.Error) {
	r.user, err = t.CheckUser("user", r.User)
	return err
}

// Run finds the DM with the user, creating it when there is none.
func (r *EnsureDM) Run(ctx context.Context, env *Env) (any, error) {
	roomID, created, err := env.Matrix.EnsureDM(ctx, r.user)
	if err != nil {
		return nil, err
	}
	env.Targets.Remember(r.user.String(), roomID)
	return RoomResult{RoomID: roomID, Key: env.Targets.Key(roomID), Created: &created}, nil
}
