// Package targets knows where requests may go: friendly names (TARGETS), the shape of room IDs,
// aliases and user IDs, the ALLOWED_TARGETS allowlist, and the topic key of each room.
package targets

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// Config is the targets' section of the configuration.
type Config struct {
	// Names are friendly names for rooms and users: kitchen=!abc:hs,alice=@alice:hs.
	Names Names `env:"TARGETS"`
	// Allowed, when set, limits which targets requests may reach.
	Allowed []string `env:"ALLOWED_TARGETS"`
	// Groups are broadcast's named lists of targets and BroadcastAll lets it take "*": GROUPS and
	// BROADCAST_ALL, read with the room settings (roomconf) and handed over here.
	Groups       map[string][]string
	BroadcastAll bool
}

// Validate reports the first entry that cannot work, naming the setting.
func (c Config) Validate() error {
	for _, a := range c.Allowed {
		if _, friendly := c.Names[a]; friendly {
			continue
		}
		if err := ValidateID(a); err != nil {
			return fmt.Errorf("ALLOWED_TARGETS: %w", err)
		}
	}
	return nil
}

// Names maps friendly names to room IDs, aliases or user IDs.
type Names map[string]string

// UnmarshalText parses `name=target,name=target`.
func (n *Names) UnmarshalText(text []byte) error {
	out := Names{}
	for _, pair := range strings.Split(string(text), ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, target, ok := strings.Cut(pair, "=")
		name, target = strings.TrimSpace(name), strings.TrimSpace(target)
		if !ok || name == "" || target == "" {
			return fmt.Errorf("%q is not name=target", pair)
		}
		if err := ValidName(name); err != nil {
			return err
		}
		if err := ValidateID(target); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, dup := out[name]; dup {
			return fmt.Errorf("%q is defined twice", name)
		}
		out[name] = target
	}
	*n = out
	return nil
}

// ValidName checks that a friendly name can be a topic segment and is not taken for an ID.
func ValidName(name string) error {
	if name == "" || strings.ContainsAny(name, "#+/:!@ \x00") {
		return fmt.Errorf("friendly name %q must not be empty nor contain any of # + / : ! @ or spaces", name)
	}
	return nil
}

// ValidateID checks the shape of a room ID, alias or user ID.
func ValidateID(target string) error {
	switch {
	case strings.HasPrefix(target, "!"):
		if len(target) < 2 {
			return fmt.Errorf("%q is not a valid room ID", target)
		}
	case strings.HasPrefix(target, "#"):
		if !strings.Contains(target, ":") || len(target) < 4 {
			return fmt.Errorf("%q is not a valid room alias (#name:server)", target)
		}
	case strings.HasPrefix(target, "@"):
		if _, _, err := id.UserID(target).ParseAndValidateRelaxed(); err != nil {
			return fmt.Errorf("%q is not a valid user ID: %w", target, err)
		}
	default:
		return fmt.Errorf("%q is not a room ID (!…), alias (#…) or user ID (@…)", target)
	}
	if strings.ContainsAny(target, " \x00") {
		return fmt.Errorf("%q contains a space or NUL", target)
	}
	return nil
}

// Targets expands and checks the targets of requests, and knows which room each friendly name
// and watched target stands for.
type Targets struct {
	cfg   Config
	names []string // friendly names, sorted
	watch []string // targets resolved on Learn besides the friendly names (COMMAND_ROOMS)

	mu       sync.Mutex
	byRoom   map[id.RoomID]string    // room → friendly name (its topic key)
	resolved map[string]id.RoomID    // target (room ID, alias, user ID) → room, as last learned
	keys     map[string]id.RoomID    // friendly names given at runtime (create_room's key)
	upgrades map[id.RoomID]id.RoomID // room → the room that replaced it
}

// New prepares the targets of cfg; watch lists more targets (room IDs, aliases, user IDs or
// friendly names) whose rooms Learn finds. Learn finds the rooms of ALLOWED_TARGETS too, so that
// the rooms they stand for are allowed by room ID from the start.
func New(cfg Config, watch ...string) *Targets {
	t := &Targets{cfg: cfg, watch: slices.Concat(watch, cfg.Allowed), byRoom: map[id.RoomID]string{}, resolved: map[string]id.RoomID{}, keys: map[string]id.RoomID{},
		upgrades: map[id.RoomID]id.RoomID{}}
	for name := range cfg.Names {
		t.names = append(t.names, name)
	}
	slices.Sort(t.names)
	for _, target := range cfg.Names {
		if strings.HasPrefix(target, "!") {
			t.Remember(target, id.RoomID(target))
		}
	}
	return t
}

// Expand returns the Matrix target a friendly name stands for, or target itself.
func (t *Targets) Expand(target string) (string, bool) {
	if v, ok := t.cfg.Names[target]; ok {
		return v, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if roomID, ok := t.keys[target]; ok {
		return roomID.String(), true
	}
	return target, false
}

// CheckKey checks a friendly name to be given to a new room: its shape, and that neither TARGETS
// nor an earlier room has it.
func (t *Targets) CheckKey(field, name string) *wire.Error {
	if err := ValidName(name); err != nil {
		return wire.Errorf(wire.CodeInvalidRequest, "field '%s': %v", field, err)
	}
	if _, ok := t.cfg.Names[name]; ok {
		return wire.Errorf(wire.CodeInvalidRequest, "field '%s': %q is a friendly name from TARGETS already", field, name)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if roomID, ok := t.keys[name]; ok {
		return wire.Errorf(wire.CodeInvalidRequest, "field '%s': %q names room %s already", field, name, roomID)
	}
	return nil
}

// Define makes name a friendly name of roomID and its topic key, unless TARGETS has the name
// (TARGETS wins) or names the room already; it reports whether the name was taken.
func (t *Targets) Define(name string, roomID id.RoomID) bool {
	if _, ok := t.cfg.Names[name]; ok {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keys[name] = roomID
	if old, ok := t.byRoom[roomID]; !ok || t.keys[old] != "" {
		t.byRoom[roomID] = name
	}
	return true
}

// Check expands a target given in field (a friendly name, room ID, alias or user ID), checks its
// shape and the allowlist, and returns the expanded target.
func (t *Targets) Check(field, target string) (string, *wire.Error) {
	if target == "" {
		return "", wire.Errorf(wire.CodeInvalidRequest, "field '%s' is required (a room ID, alias, user ID or friendly name)", field)
	}
	expanded, friendly := t.Expand(target)
	if !friendly {
		if err := ValidateID(target); err != nil {
			return "", wire.Errorf(wire.CodeUnknownTarget, "field '%s': %v, and not a friendly name from TARGETS", field, err)
		}
	}
	if len(t.cfg.Allowed) > 0 && !t.allowed(target, expanded) {
		return "", wire.Errorf(wire.CodeNotAllowed, "field '%s': target %q is not in ALLOWED_TARGETS", field, target)
	}
	return expanded, nil
}

// CheckRoom is Check for a field that must name a room: not a user.
func (t *Targets) CheckRoom(field, room string) (string, *wire.Error) {
	expanded, err := t.Check(field, room)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(expanded, "@") {
		return "", wire.Errorf(wire.CodeInvalidRequest, "field '%s' must be a room ID, alias or friendly name of a room, not the user %q", field, expanded)
	}
	return expanded, nil
}

// CheckUser is Check for a field that must name a user.
func (t *Targets) CheckUser(field, user string) (id.UserID, *wire.Error) {
	if expanded, _ := t.Expand(user); user != "" && !strings.HasPrefix(expanded, "@") {
		return "", wire.Errorf(wire.CodeInvalidRequest, "field '%s' must be a user ID or a friendly name of one, not %q", field, user)
	}
	expanded, err := t.Check(field, user)
	if err != nil {
		return "", err
	}
	return id.UserID(expanded), nil
}

func (t *Targets) allowed(target, expanded string) bool {
	for _, a := range t.cfg.Allowed {
		if a == target || a == expanded {
			return true
		}
		if v, ok := t.Expand(a); ok && v == expanded {
			return true
		}
	}
	// A room ID is allowed when an allowed name or alias stands for that room, or for the room it
	// replaced in an upgrade.
	if strings.HasPrefix(expanded, "!") {
		for _, a := range t.cfg.Allowed {
			if room := t.roomOfAllowed(a); room != "" && t.Follow(room) == id.RoomID(expanded) {
				return true
			}
		}
	}
	return false
}

// roomOfAllowed is the room an ALLOWED_TARGETS entry stands for, as far as it is known yet.
func (t *Targets) roomOfAllowed(a string) id.RoomID {
	v, _ := t.Expand(a)
	if strings.HasPrefix(v, "!") {
		return id.RoomID(v)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resolved[v]
}

// Remember records that target resolved to roomID: the room of a friendly name gets that name as
// its topic key (the first in sort order when several stand for one room).
func (t *Targets) Remember(target string, roomID id.RoomID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resolved[target] = roomID
	for _, name := range t.names {
		if t.cfg.Names[name] == target {
			if old, ok := t.byRoom[roomID]; !ok || name < old {
				t.byRoom[roomID] = name
			}
			return
		}
	}
}

// Resolver finds the room of an alias.
type Resolver interface {
	Resolve(ctx context.Context, target string) (id.RoomID, error)
}

// Learn finds the rooms of the friendly names and watched targets in the joined rooms: room IDs
// stand for themselves, user IDs for their DM, and aliases are resolved (a failure keeps what was
// learned before). It creates nothing.
func (t *Targets) Learn(ctx context.Context, rooms []wire.Room, resolver Resolver) {
	targets := make([]string, 0, len(t.names)+len(t.watch))
	for _, name := range t.names {
		targets = append(targets, t.cfg.Names[name])
	}
	for _, w := range t.watch {
		expanded, _ := t.Expand(w)
		targets = append(targets, expanded)
	}
	for _, target := range targets {
		switch target[0] {
		case '!':
			t.Remember(target, id.RoomID(target))
		case '#':
			if roomID, err := resolver.Resolve(ctx, target); err == nil {
				t.Remember(target, roomID)
			}
		case '@':
			for _, r := range rooms {
				if r.IsDM && r.DMUser == id.UserID(target) {
					t.Remember(target, r.ID)
					break
				}
			}
		}
	}
}

// RoomOf returns the room a target (or friendly name) was last learned or resolved to, or the
// room that replaced it.
func (t *Targets) RoomOf(target string) (id.RoomID, bool) {
	expanded, _ := t.Expand(target)
	if strings.HasPrefix(expanded, "!") {
		return t.Follow(id.RoomID(expanded)), true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	roomID, ok := t.resolved[expanded]
	return roomID, ok
}

// Key is the topic segment of roomID: its friendly name, else the room ID made topic-safe.
func (t *Targets) Key(roomID id.RoomID) string {
	if name, ok := t.Name(roomID); ok {
		return name
	}
	return mqtt.SafeSegment(string(roomID))
}

// Name returns roomID's friendly name, if it has one.
func (t *Targets) Name(roomID id.RoomID) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	name, ok := t.byRoom[roomID]
	return name, ok
}

// Names returns the friendly names, sorted.
func (t *Targets) Names() []string { return slices.Clone(t.names) }

// Annotate adds the topic keys to rooms, leaving out the rooms that were upgraded: the bot
// stays in them to read stragglers, but their requests, key and place in the list belong to
// the replacement room.
func (t *Targets) Annotate(rooms []wire.Room) []wire.RoomInfo {
	out := make([]wire.RoomInfo, 0, len(rooms))
	for _, r := range rooms {
		if t.Follow(r.ID) != r.ID {
			continue
		}
		out = append(out, wire.RoomInfo{Room: r, Key: t.Key(r.ID)})
	}
	return out
}

// Group returns the members of a broadcast group.
func (t *Targets) Group(name string) ([]string, bool) {
	members, ok := t.cfg.Groups[name]
	return members, ok
}

// BroadcastAll tells whether broadcast may take "*".
func (t *Targets) BroadcastAll() bool { return t.cfg.BroadcastAll }

// maxUpgrades bounds the chain of upgrades Follow walks (and so a cycle).
const maxUpgrades = 16

// Upgrade records that newRoom replaced oldRoom: requests for oldRoom go to newRoom (Follow),
// which takes over its topic key and runtime keys.
func (t *Targets) Upgrade(oldRoom, newRoom id.RoomID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.upgrades[oldRoom] = newRoom
	if name, ok := t.byRoom[oldRoom]; ok {
		if _, named := t.byRoom[newRoom]; !named {
			t.byRoom[newRoom] = name
		}
	}
	for k, roomID := range t.keys {
		if roomID == oldRoom {
			t.keys[k] = newRoom
		}
	}
	for target, roomID := range t.resolved {
		if roomID == oldRoom {
			t.resolved[target] = newRoom
		}
	}
}

// Follow returns the room that replaced roomID, through every upgrade, or roomID itself.
func (t *Targets) Follow(roomID id.RoomID) id.RoomID {
	t.mu.Lock()
	defer t.mu.Unlock()
	for range maxUpgrades {
		next, ok := t.upgrades[roomID]
		if !ok {
			break
		}
		roomID = next
	}
	return roomID
}
