package rooms

import (
	"context"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"maps"
	"slices"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/roomconf"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Create is the create_room action, in a family of its own: it needs the templates and the
// store of room keys besides actions.Matrix.
var Create = []actions.Spec{
	{Name: "create_room", Once: true, Help: "creates a room (from a template), invites people and raises moderators",
		New: func() actions.Request { return &CreateRoom{} }, LargePayload: true},
}

// ModeratorLevel is the power level a template's or request's moderators get.
const ModeratorLevel = 50

// CreateRoom is the `create_room` action.
type CreateRoom struct {
	actions.Common
	// TemplateName names a template of ROOM_TEMPLATES_FILE; the request's fields override it.
	TemplateName string `json:"template,omitempty"`
	// Key is a friendly name for the new room, remembered across restarts.
	Key string `json:"key,omitempty"`
	// Avatar is an mxc:// URI or a send_media source, uploaded before the room is created; it
	// overrides the template's (an mxc:// URI).
	Avatar *Avatar `json:"avatar,omitempty"`
	roomconf.Template
}

// CreateResult is the data of create_room.
type CreateResult struct {
	RoomID id.RoomID    `json:"room_id"`
	Alias  id.RoomAlias `json:"alias,omitempty"`
	Key    string       `json:"key"`
}

// Validate checks the request's own fields; a template's are checked when the bridge starts.
func (r *CreateRoom) Validate(t actions.Targets) *wire.Error {
	if err := r.Template.Check(); err != nil {
		return wire.Errorf(wire.CodeInvalidRequest, "%v", err)
	}
	if r.Avatar != nil {
		if err := r.Avatar.Check(); err != nil {
			return err
		}
	}
	for _, f := range r.Template.Users() {
		if _, err := t.CheckUser(f.Name, f.Value); err != nil {
			return err
		}
	}
	if r.Key != "" {
		return t.CheckKey("key", r.Key)
	}
	return nil
}

// Run merges the template, creates the room with its invites and power levels, and remembers
// its key.
func (r *CreateRoom) Run(ctx context.Context, env *actions.Env) (any, error) {
	var tpl roomconf.Template
	if r.TemplateName != "" {
		var ok bool
		if tpl, ok = env.Templates[r.TemplateName]; !ok {
			known := slices.Sorted(maps.Keys(env.Templates))
			return nil, wire.Errorf(wire.CodeInvalidRequest, "field 'template': %q is not a template of ROOM_TEMPLATES_FILE (known: %s)", r.TemplateName, strings.Join(known, ", "))
		}
	}
	spec := tpl.Merge(r.Template)
	req, werr := r.request(spec, env)
	if werr != nil {
		return nil, werr
	}
	if r.Key != "" {
		if werr := env.Targets.CheckKey("key", r.Key); werr != nil {
			return nil, werr
		}
	}
	if r.Avatar != nil {
		uri, err := r.Avatar.Upload(ctx, env)
		if err != nil {
			return nil, err
		}
		setAvatar(req, uri)
	}
	roomID, err := env.Matrix.CreateRoom(ctx, req, spec.Encrypted)
	if err != nil {
		return nil, err
	}
	result := CreateResult{RoomID: roomID}
	if spec.Alias != "" {
		result.Alias = id.NewRoomAlias(spec.Alias, env.Matrix.UserID().Homeserver())
	}
	if r.Key != "" {
		if err := env.Keys.SaveRoomKey(ctx, r.Key, roomID); err != nil {
			return nil, fmt.Errorf("failed to remember key %q of the new room %s: %w", r.Key, roomID, err)
		}
		env.Targets.Define(r.Key, roomID)
	}
	result.Key = env.Targets.Key(roomID)
	return result, nil
}

// request builds the homeserver request: invitees and moderators are invited, moderators get
// ModeratorLevel unless power_levels names them, and the bot keeps 100.
func (r *CreateRoom) request(spec roomconf.Template, env *actions.Env) (*mautrix.ReqCreateRoom, *wire.Error) {
	req := &mautrix.ReqCreateRoom{Preset: spec.Preset, RoomAliasName: spec.Alias, IsDirect: spec.IsDM != nil && *spec.IsDM}
	if req.Preset == "" {
		req.Preset = "private_chat"
	}
	if spec.Name != nil {
		req.Name = *spec.Name
	}
	if spec.Topic != nil {
		req.Topic = *spec.Topic
	}
	users := map[id.UserID]int{}
	for _, f := range spec.Users() {
		user, werr := env.Targets.CheckUser(f.Name, f.Value)
		if werr != nil {
			return nil, werr
		}
		switch f.Name {
		case "invite", "moderators":
			if !slices.Contains(req.Invite, user) && user != env.Matrix.UserID() {
				req.Invite = append(req.Invite, user)
			}
			if f.Name == "moderators" {
				users[user] = ModeratorLevel
			}
		}
	}
	if pl := spec.PowerLevels; pl != nil {
		for name, level := range pl.Users {
			user, _ := env.Targets.CheckUser("power_levels.users", name) // checked above
			users[user] = level
		}
		req.PowerLevelOverride = &event.PowerLevelsEventContent{
			Events: pl.Events, StateDefaultPtr: pl.StateDefault,
			InvitePtr: pl.Invite, KickPtr: pl.Kick, BanPtr: pl.Ban, RedactPtr: pl.Redact,
		}
		if pl.UsersDefault != nil {
			req.PowerLevelOverride.UsersDefault = *pl.UsersDefault
		}
		if pl.EventsDefault != nil {
			req.PowerLevelOverride.EventsDefault = *pl.EventsDefault
		}
	}
	if len(users) > 0 {
		if req.PowerLevelOverride == nil {
			req.PowerLevelOverride = &event.PowerLevelsEventContent{}
		}
		// A users map replaces the homeserver's on some servers: the bot keeps its 100.
		users[env.Matrix.UserID()] = 100
		req.PowerLevelOverride.Users = users
	}
	if spec.Avatar != "" {
		setAvatar(req, id.ContentURIString(spec.Avatar))
	}
	return req, nil
}

// setAvatar puts the avatar into the room's initial state, replacing a template's; an empty
// URI leaves the room without one.
func setAvatar(req *mautrix.ReqCreateRoom, uri id.ContentURIString) {
	req.InitialState = slices.DeleteFunc(req.InitialState, func(e *event.Event) bool { return e.Type == event.StateRoomAvatar })
	if uri != "" {
		req.InitialState = append(req.InitialState, &event.Event{
			Type: event.StateRoomAvatar, Content: event.Content{Parsed: &event.RoomAvatarEventContent{URL: uri}},
		})
	}
}
