// Package actions holds every request the bridge takes over MQTT: one type per action, one file
// per family (messages, rooms, lookups, outbox), and the registry that maps names to them.
package actions

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Request is one action's payload; its exported fields are the request's JSON fields.
type Request interface {
	// RequestID is the "id" that the response echoes.
	RequestID() string
	// Validate checks the fields once they decoded, and expands and checks every field that
	// names a room or a user with t.
	Validate(t Targets) *wire.Error
}

// Immediate is a request carried out at once, within REQUEST_TIMEOUT, and not kept across a
// restart.
type Immediate interface {
	Request
	Run(ctx context.Context, env *Env) (any, error)
}

// Durable is a request committed to the outbox before its MQTT message is acknowledged, and
// delivered in order with the other requests of its lane until it succeeds, fails for good or
// expires.
type Durable interface {
	Request
	// Lane is the expanded target whose requests keep their order; valid after Validate.
	Lane() string
	// Deliver carries the request out. After a failure that may pass it is called again with
	// the same transaction ID and the progress saved so far.
	Deliver(ctx context.Context, d *Delivery) (any, error)
}

// Expiring is a durable request with a deadline of its own (`expire_s`).
type Expiring interface {
	// ExpireAfter is how long after receipt the request is answered `expired` instead of
	// delivered; 0 means OUTBOX_MAX_AGE alone.
	ExpireAfter() time.Duration
}

// Common are the fields of every request.
type Common struct {
	ID string `json:"id,omitempty"`
}

// RequestID returns the request's id.
func (c Common) RequestID() string { return c.ID }

// Spec registers one action.
type Spec struct {
	// Name is the last segment of `<base>/bridge/request/<name>`.
	Name string
	// Help says in one line what the action does.
	Help string
	// New returns an empty payload.
	New func() Request
	// Internal actions are queued by the bridge itself (never from MQTT) and answered to nobody.
	Internal bool
	// Scheduled entries wait for a time and count as scheduled in the stats, not as pending.
	Scheduled bool
	// Local actions need no Matrix login.
	Local bool
	// Once marks an immediate action that changes Matrix (create_room, invite…): like a durable
	// one, it runs once per request id within a day, and a repeat gets the first's response.
	Once bool
	// LargePayload actions carry a file: their payload may be as large as MEDIA_MAX_BYTES
	// allows (base64 included) instead of MAX_PAYLOAD_BYTES.
	LargePayload bool
	// Shortcut, when set, takes `<base>/<name>/<target>`: it makes a request of the payload.
	Shortcut func(target string, payload []byte) (Request, *wire.Error)
}

// Registry maps action names to their specs.
type Registry struct {
	specs map[string]Spec
}

// NewRegistry registers the given families of actions.
func NewRegistry(families ...[]Spec) *Registry {
	r := &Registry{specs: map[string]Spec{}}
	for _, family := range families {
		for _, s := range family {
			if _, dup := r.specs[s.Name]; dup {
				panic("action registered twice: " + s.Name)
			}
			r.specs[s.Name] = s
		}
	}
	return r
}

// Spec returns the spec of action.
func (r *Registry) Spec(action string) (Spec, bool) {
	s, ok := r.specs[action]
	return s, ok
}

// Public lists the actions that MQTT clients can request, sorted.
func (r *Registry) Public() []Spec {
	var out []Spec
	for _, s := range r.specs {
		if !s.Internal {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Spec) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Shortcuts lists the actions that have a `<base>/<name>/<target>` topic.
func (r *Registry) Shortcuts() []string {
	var out []string
	for _, s := range r.Public() {
		if s.Shortcut != nil {
			out = append(out, s.Name)
		}
	}
	return out
}

// Parse decodes and validates a request for action from MQTT; target is set for a shortcut
// topic.
func (r *Registry) Parse(action, target string, payload []byte, t Targets) (Request, *wire.Error) {
	spec, ok := r.specs[action]
	if !ok || spec.Internal {
		return nil, wire.Errorf(wire.CodeUnknownAction, "action %q is not known; see docs/mqtt-api.md", action)
	}
	var req Request
	if target != "" {
		if spec.Shortcut == nil {
			return nil, wire.Errorf(wire.CodeUnknownAction, "action %q has no shortcut topic", action)
		}
		var err *wire.Error
		if req, err = spec.Shortcut(target, payload); err != nil {
			return nil, err
		}
	} else {
		req = spec.New()
		if err := wire.Decode(payload, req); err != nil {
			return nil, err
		}
	}
	if err := req.Validate(t); err != nil {
		return nil, err
	}
	return req, nil
}

// Stored decodes a durable request from the outbox.
func (r *Registry) Stored(action string, raw json.RawMessage) (Durable, error) {
	spec, ok := r.specs[action]
	if !ok {
		return nil, fmt.Errorf("failed to decode stored request: unknown action %q", action)
	}
	req, ok := spec.New().(Durable)
	if !ok {
		return nil, fmt.Errorf("failed to decode stored request: action %q is not durable", action)
	}
	if err := json.Unmarshal(raw, req); err != nil {
		return nil, fmt.Errorf("failed to decode stored %s request: %w", action, err)
	}
	return req, nil
}

// Preparer is a durable request with work to do after Validate and before it is committed,
// such as keeping the file it carries.
type Preparer interface {
	Prepare(env *Env) *wire.Error
}

// Finisher is a durable request that cleans up once it was answered and left the outbox.
type Finisher interface {
	Finished(env *Env) error
}

// isJSONObject tells a JSON object payload from plain text.
func isJSONObject(payload []byte) bool {
	trimmed := bytes.TrimSpace(payload)
	return len(trimmed) > 0 && trimmed[0] == '{'
}

// Targets expands and checks the fields that name rooms and users, and learns the rooms that
// targets resolve to.
type Targets interface {
	Check(field, target string) (string, *wire.Error)
	CheckRoom(field, room string) (string, *wire.Error)
	CheckUser(field, user string) (id.UserID, *wire.Error)
	Remember(target string, roomID id.RoomID)
	Key(roomID id.RoomID) string
	Annotate(rooms []wire.Room) []wire.RoomInfo
	// CheckKey and Define give new rooms friendly names at runtime (create_room's key).
	CheckKey(field, name string) *wire.Error
	Define(name string, roomID id.RoomID) bool
	// Group and BroadcastAll are broadcast's GROUPS and BROADCAST_ALL.
	Group(name string) ([]string, bool)
	BroadcastAll() bool
	// Follow returns the room that replaced a room through upgrades, or the room itself.
	Follow(roomID id.RoomID) id.RoomID
}
