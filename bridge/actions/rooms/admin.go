package rooms

import (
	"context"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"math"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// Admin are the actions that moderate a room: its members, their power levels, its name, topic
// and avatar. They run at once (not kept across a restart): each is one state change that the
// caller sees answered, and the bot's power is checked before the homeserver is asked.
var Admin = []actions.Spec{
	{Name: "invite", Once: true, Help: "invites a user to a room", New: func() actions.Request { return &Invite{} }},
	{Name: "kick", Once: true, Help: "removes a user from a room", New: func() actions.Request { return &Kick{} }},
	{Name: "ban", Once: true, Help: "bans a user from a room", New: func() actions.Request { return &Ban{} }},
	{Name: "unban", Once: true, Help: "lifts a user's ban from a room", New: func() actions.Request { return &Unban{} }},
	{Name: "set_power_level", Once: true, Help: "sets a user's power level (or role) in a room", New: func() actions.Request { return &SetPowerLevel{} }},
	{Name: "set_room", Once: true, Help: "sets a room's name, topic or avatar (an mxc:// URI or any send_media source)",
		New: func() actions.Request { return &SetRoom{} }, LargePayload: true},
	{Name: "members", Help: "lists a room's members with their membership and power level", New: func() actions.Request { return &Members{} }},
}

// maxReason bounds the reason of a membership change: it goes into the member event.
const maxReason = 1000

// maxPowerLevel is the largest power level actions.Matrix accepts (canonical JSON integers).
const maxPowerLevel = 1<<53 - 1

// Roles are the named power levels of set_power_level.
var Roles = map[string]int{"user": 0, "moderator": 50, "admin": 100}

// AdminResult is the data of invite, kick, ban, unban, set_power_level and set_room.
type AdminResult struct {
	RoomID id.RoomID `json:"room_id"`
	User   id.UserID `json:"user,omitempty"`
	// Level is the user's power level after set_power_level.
	Level *int `json:"level,omitempty"`
	// EventIDs are the state events set_room sent, by field.
	EventIDs map[string]id.EventID `json:"event_ids,omitempty"`
}

// MemberChange are the fields of invite, kick, ban and unban.
type MemberChange struct {
	actions.Common
	Room
	User   string `json:"user"`
	Reason string `json:"reason,omitempty"`
	user   id.UserID
}

// Validate checks the room, the user and the reason.
func (r *MemberChange) Validate(t actions.Targets) *wire.Error {
	if err := r.Room.Check(t); err != nil {
		return err
	}
	var err *wire.Error
	if r.user, err = t.CheckUser("user", r.User); err != nil {
		return err
	}
	if len(r.Reason) > maxReason {
		return wire.Errorf(wire.CodeTooLarge, "field 'reason' is longer than %d bytes", maxReason)
	}
	return nil
}

// change carries out a membership change after checking that the bot may make it: it needs the
// power level the room asks for, and, to kick, ban or unban, more power than the user.
func (r *MemberChange) change(ctx context.Context, env *actions.Env, change matrix.MembershipChange) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	pl, err := env.Matrix.PowerLevels(ctx, roomID)
	if err != nil {
		return nil, err
	}
	bot := pl.GetUserLevel(env.Matrix.UserID())
	needs := map[matrix.MembershipChange][]int{
		matrix.Invite: {pl.Invite()}, matrix.Kick: {pl.Kick()}, matrix.Ban: {pl.Ban()}, matrix.Unban: {pl.Ban(), pl.Kick()},
	}[change]
	for _, need := range needs {
		if bot < need {
			return nil, wire.Errorf(wire.CodeNotAllowed, "the bot's power level in %s is %d; %s needs %d", roomID, bot, change, need)
		}
	}
	if change != matrix.Invite {
		if level := pl.GetUserLevel(r.user); level >= bot {
			return nil, wire.Errorf(wire.CodeNotAllowed, "%s has power level %d in %s, not below the bot's %d: the bot cannot %s them", r.user, level, roomID, bot, change)
		}
	} else if err := env.Matrix.CheckUser(ctx, r.user); err != nil {
		return nil, err
	}
	if err := env.Matrix.ChangeMembership(ctx, roomID, change, r.user, r.Reason); err != nil {
		return nil, err
	}
	return AdminResult{RoomID: roomID, User: r.user}, nil
}

// Invite is the `invite` action.
type Invite struct{ MemberChange }

// Run invites the user.
func (r *Invite) Run(ctx context.Context, env *actions.Env) (any, error) {
	return r.change(ctx, env, matrix.Invite)
}

// Kick is the `kick` action.
type Kick struct{ MemberChange }

// Run kicks the user.
func (r *Kick) Run(ctx context.Context, env *actions.Env) (any, error) {
	return r.change(ctx, env, matrix.Kick)
}

// Ban is the `ban` action.
type Ban struct{ MemberChange }

// Run bans the user.
func (r *Ban) Run(ctx context.Context, env *actions.Env) (any, error) {
	return r.change(ctx, env, matrix.Ban)
}

// Unban is the `unban` action.
type Unban struct{ MemberChange }

// Run lifts the ban.
func (r *Unban) Run(ctx context.Context, env *actions.Env) (any, error) {
	return r.change(ctx, env, matrix.Unban)
}

// SetPowerLevel is the `set_power_level` action.
type SetPowerLevel struct {
	actions.Common
	Room
	User  string   `json:"user"`
	Level *float64 `json:"level,omitempty"`
	Role  string   `json:"role,omitempty"`
	user  id.UserID
	level int
}

// Validate checks the room, the user and the level or role.
func (r *SetPowerLevel) Validate(t actions.Targets) *wire.Error {
	if err := r.Room.Check(t); err != nil {
		return err
	}
	var err *wire.Error
	if r.user, err = t.CheckUser("user", r.User); err != nil {
		return err
	}
	switch {
	case (r.Level == nil) == (r.Role == ""):
		return wire.Errorf(wire.CodeInvalidRequest, "exactly one of 'level' (a number) or 'role' (user, moderator or admin) is required")
	case r.Role != "":
		level, ok := Roles[r.Role]
		if !ok {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'role' must be user, moderator or admin, not %q", r.Role)
		}
		r.level = level
	default:
		l := *r.Level
		if l != math.Trunc(l) || math.Abs(l) > maxPowerLevel {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'level' must be a whole number between -%d and %d, not %v", maxPowerLevel, maxPowerLevel, l)
		}
		r.level = int(l)
	}
	return nil
}

// Run sets the level, unless the bot may not: it cannot change a user at or above its own level
// (itself included) nor give more than its own level.
func (r *SetPowerLevel) Run(ctx context.Context, env *actions.Env) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	pl, err := env.Matrix.PowerLevels(ctx, roomID)
	if err != nil {
		return nil, err
	}
	bot := pl.GetUserLevel(env.Matrix.UserID())
	if need := pl.GetEventLevel(event.StatePowerLevels); bot < need {
		return nil, wire.Errorf(wire.CodeNotAllowed, "the bot's power level in %s is %d; changing power levels needs %d", roomID, bot, need)
	}
	if current := pl.GetUserLevel(r.user); current >= bot {
		return nil, wire.Errorf(wire.CodeNotAllowed, "%s has power level %d in %s, not below the bot's %d: the bot cannot change it", r.user, current, roomID, bot)
	}
	if r.level > bot {
		return nil, wire.Errorf(wire.CodeNotAllowed, "level %d is above the bot's own %d in %s", r.level, bot, roomID)
	}
	if err := env.Matrix.CheckUser(ctx, r.user); err != nil {
		return nil, err
	}
	pl.SetUserLevel(r.user, r.level)
	if _, err := env.Matrix.SetState(ctx, roomID, event.StatePowerLevels, "", pl); err != nil {
		return nil, err
	}
	return AdminResult{RoomID: roomID, User: r.user, Level: &r.level}, nil
}

// SetRoom is the `set_room` action.
type SetRoom struct {
	actions.Common
	Room
	Name  *string `json:"name,omitempty"`
	Topic *string `json:"topic,omitempty"`
	// Avatar is an mxc:// URI or a send_media source, uploaded before it is set.
	Avatar *Avatar `json:"avatar,omitempty"`
}

// maxRoomText bounds a room's name and topic.
const maxRoomText = 10000

// Validate checks that something is set and the avatar's shape.
func (r *SetRoom) Validate(t actions.Targets) *wire.Error {
	if err := r.Room.Check(t); err != nil {
		return err
	}
	if r.Name == nil && r.Topic == nil && r.Avatar == nil {
		return wire.Errorf(wire.CodeInvalidRequest, "at least one of 'name', 'topic' or 'avatar' is required")
	}
	for _, f := range []struct {
		name  string
		value *string
	}{{"name", r.Name}, {"topic", r.Topic}} {
		if f.value != nil && len(*f.value) > maxRoomText {
			return wire.Errorf(wire.CodeTooLarge, "field '%s' is longer than %d bytes", f.name, maxRoomText)
		}
	}
	if r.Avatar != nil {
		return r.Avatar.Check()
	}
	return nil
}

// checkMXC checks an mxc:// URI; an empty one removes an avatar.
func checkMXC(field, uri string) *wire.Error {
	if uri == "" {
		return nil
	}
	if _, err := id.ContentURIString(uri).Parse(); err != nil {
		return wire.Errorf(wire.CodeInvalidRequest, "field '%s' must be an mxc:// URI (mxc://server/media), not %q", field, uri)
	}
	return nil
}

// Run sends a state event for each field given, after checking the bot may send them all.
func (r *SetRoom) Run(ctx context.Context, env *actions.Env) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	pl, err := env.Matrix.PowerLevels(ctx, roomID)
	if err != nil {
		return nil, err
	}
	type change struct {
		field   string
		typ     event.Type
		content any
	}
	var changes []change
	if r.Name != nil {
		changes = append(changes, change{"name", event.StateRoomName, &event.RoomNameEventContent{Name: *r.Name}})
	}
	if r.Topic != nil {
		changes = append(changes, change{"topic", event.StateTopic, &event.TopicEventContent{Topic: *r.Topic}})
	}
	if r.Avatar != nil {
		changes = append(changes, change{"avatar", event.StateRoomAvatar, &event.RoomAvatarEventContent{}})
	}
	bot := pl.GetUserLevel(env.Matrix.UserID())
	for _, c := range changes {
		if need := pl.GetEventLevel(c.typ); bot < need {
			return nil, wire.Errorf(wire.CodeNotAllowed, "the bot's power level in %s is %d; setting the %s needs %d", roomID, bot, c.field, need)
		}
	}
	if r.Avatar != nil {
		// Uploaded only once the bot is known to be allowed to set it.
		uri, err := r.Avatar.Upload(ctx, env)
		if err != nil {
			return nil, err
		}
		changes[len(changes)-1].content = &event.RoomAvatarEventContent{URL: uri}
	}
	result := AdminResult{RoomID: roomID, EventIDs: map[string]id.EventID{}}
	for _, c := range changes {
		evtID, err := env.Matrix.SetState(ctx, roomID, c.typ, "", c.content)
		if err != nil {
			return nil, fmt.Errorf("failed to set the %s: %w", c.field, err)
		}
		result.EventIDs[c.field] = evtID
	}
	return result, nil
}

// Members is the `members` action.
type Members struct {
	actions.Common
	Room
	// Membership keeps only members with this membership: join, invite, leave, ban or knock.
	Membership string `json:"membership,omitempty"`
}

// Validate checks the room and the filter.
func (r *Members) Validate(t actions.Targets) *wire.Error {
	if err := r.Room.Check(t); err != nil {
		return err
	}
	switch event.Membership(r.Membership) {
	case "", event.MembershipJoin, event.MembershipInvite, event.MembershipLeave, event.MembershipBan, event.MembershipKnock:
		return nil
	}
	return wire.Errorf(wire.CodeInvalidRequest, "field 'membership' must be join, invite, leave, ban or knock, not %q", r.Membership)
}

// MemberList is the data of members.
type MemberList struct {
	RoomID  id.RoomID     `json:"room_id"`
	Members []wire.Member `json:"members"`
}

// Run lists the members with their power levels.
func (r *Members) Run(ctx context.Context, env *actions.Env) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	pl, err := env.Matrix.PowerLevels(ctx, roomID)
	if err != nil {
		return nil, err
	}
	members, err := env.Matrix.Members(ctx, roomID, event.Membership(r.Membership))
	if err != nil {
		return nil, err
	}
	for i := range members {
		members[i].PowerLevel = pl.GetUserLevel(members[i].UserID)
	}
	return MemberList{RoomID: roomID, Members: members}, nil
}
