// Package roomconf reads the room settings of the configuration: the create_room templates of
// ROOM_TEMPLATES_FILE, the broadcast groups of GROUPS and whether broadcast may reach every room.
package roomconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
)

// Config is the rooms' section of the configuration.
type Config struct {
	// TemplatesFile names a JSON (or, by its extension .yaml/.yml, YAML) file of create_room
	// templates.
	TemplatesFile string `env:"ROOM_TEMPLATES_FILE"`
	// Groups are named lists of targets for broadcast.
	Groups Groups `env:"GROUPS"`
	// BroadcastAll lets broadcast take "*", every joined room.
	BroadcastAll bool `env:"BROADCAST_ALL" envDefault:"false"`
}

// Validate reads the templates and checks them and the groups against the friendly names.
func (c Config) Validate(names targets.Names) error {
	if _, err := c.Templates(names); err != nil {
		return err
	}
	for _, g := range slices.Sorted(maps.Keys(c.Groups)) {
		for _, m := range c.Groups[g] {
			if _, friendly := names[m]; friendly {
				continue
			}
			if err := targets.ValidateID(m); err != nil {
				return fmt.Errorf("GROUPS: group %s: %w, and not a friendly name from TARGETS", g, err)
			}
		}
	}
	return nil
}

// Templates reads and checks ROOM_TEMPLATES_FILE; none when it is not set.
func (c Config) Templates(names targets.Names) (Templates, error) {
	if c.TemplatesFile == "" {
		return Templates{}, nil
	}
	data, err := os.ReadFile(c.TemplatesFile)
	if err != nil {
		return nil, fmt.Errorf("ROOM_TEMPLATES_FILE: %w", err)
	}
	if ext := strings.ToLower(filepath.Ext(c.TemplatesFile)); ext == ".yaml" || ext == ".yml" {
		if data, err = YAMLToJSON(data); err != nil {
			return nil, fmt.Errorf("ROOM_TEMPLATES_FILE %s: %w", c.TemplatesFile, err)
		}
	}
	t, err := ParseTemplates(data)
	if err != nil {
		return nil, fmt.Errorf("ROOM_TEMPLATES_FILE %s: %w", c.TemplatesFile, err)
	}
	for _, name := range slices.Sorted(maps.Keys(t)) {
		if err := t[name].checkUsers(names); err != nil {
			return nil, fmt.Errorf("ROOM_TEMPLATES_FILE %s: template %q: %w", c.TemplatesFile, name, err)
		}
	}
	return t, nil
}

// Presets are the create_room presets.
var Presets = []string{"private_chat", "public_chat", "trusted_private_chat"}

// PowerLevels are the power levels a new room gets besides the homeserver's defaults: users
// (user IDs or friendly names of users) and the levels events and actions need.
type PowerLevels struct {
	Users         map[string]int `json:"users,omitempty"`
	Events        map[string]int `json:"events,omitempty"`
	UsersDefault  *int           `json:"users_default,omitempty"`
	EventsDefault *int           `json:"events_default,omitempty"`
	StateDefault  *int           `json:"state_default,omitempty"`
	Invite        *int           `json:"invite,omitempty"`
	Kick          *int           `json:"kick,omitempty"`
	Ban           *int           `json:"ban,omitempty"`
	Redact        *int           `json:"redact,omitempty"`
}

// Template is a room as create_room makes it; a request's own fields override a template's.
type Template struct {
	Name        *string      `json:"name,omitempty"`
	Topic       *string      `json:"topic,omitempty"`
	Alias       string       `json:"alias,omitempty"`
	Preset      string       `json:"preset,omitempty"`
	Invite      []string     `json:"invite,omitempty"`
	Moderators  []string     `json:"moderators,omitempty"`
	Encrypted   *bool        `json:"encrypted,omitempty"`
	PowerLevels *PowerLevels `json:"power_levels,omitempty"`
	IsDM        *bool        `json:"is_dm,omitempty"`
	Avatar      string       `json:"avatar,omitempty"`
}

// Templates are named templates.
type Templates map[string]Template

// YAMLToJSON turns a YAML document into JSON, so that ParseTemplates checks a YAML file as
// strictly as a JSON one.
func YAMLToJSON(data []byte) ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("failed to parse templates as YAML: %w", err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("failed to parse templates as YAML: %w", err)
	}
	return out, nil
}

// ParseTemplates decodes a JSON object of templates by name, refusing unknown fields.
func ParseTemplates(data []byte) (Templates, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var t Templates
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("failed to parse templates (a JSON object of templates by name): %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("failed to parse templates: data after the JSON object")
	}
	if t == nil {
		return nil, errors.New("failed to parse templates: not a JSON object of templates by name")
	}
	for _, name := range slices.Sorted(maps.Keys(t)) {
		if name == "" || strings.ContainsAny(name, " /#+\x00") {
			return nil, fmt.Errorf("template name %q must not be empty nor contain spaces, /, # or +", name)
		}
		if err := t[name].Check(); err != nil {
			return nil, fmt.Errorf("template %q: %w", name, err)
		}
	}
	return t, nil
}

// Check checks the fields whose values are fixed sets or shapes.
func (t Template) Check() error {
	if t.Preset != "" && !slices.Contains(Presets, t.Preset) {
		return fmt.Errorf("preset %q is not one of %s", t.Preset, strings.Join(Presets, ", "))
	}
	if t.Alias != "" && (strings.ContainsAny(t.Alias, "#: /\x00") || len(t.Alias) > 200) {
		return fmt.Errorf("alias %q must be the local part only (no #, : or spaces)", t.Alias)
	}
	if t.Avatar != "" {
		if _, err := id.ContentURIString(t.Avatar).Parse(); err != nil {
			return fmt.Errorf("avatar %q is not an mxc:// URI", t.Avatar)
		}
	}
	if t.PowerLevels != nil {
		for _, l := range t.PowerLevels.levels() {
			if l > MaxPowerLevel || l < -MaxPowerLevel {
				return fmt.Errorf("power level %d is out of range", l)
			}
		}
	}
	return nil
}

// MaxPowerLevel is the largest power level Matrix accepts (canonical JSON integers).
const MaxPowerLevel = 1<<53 - 1

func (p *PowerLevels) levels() []int {
	var out []int
	for _, l := range p.Users {
		out = append(out, l)
	}
	for _, l := range p.Events {
		out = append(out, l)
	}
	for _, l := range []*int{p.UsersDefault, p.EventsDefault, p.StateDefault, p.Invite, p.Kick, p.Ban, p.Redact} {
		if l != nil {
			out = append(out, *l)
		}
	}
	return out
}

// Users lists every field of the template that names a user, with the user.
func (t Template) Users() []Field {
	var out []Field
	for _, u := range t.Invite {
		out = append(out, Field{"invite", u})
	}
	for _, u := range t.Moderators {
		out = append(out, Field{"moderators", u})
	}
	if t.PowerLevels != nil {
		for _, u := range slices.Sorted(maps.Keys(t.PowerLevels.Users)) {
			out = append(out, Field{"power_levels.users", u})
		}
	}
	return out
}

// Field is a field and one of its values.
type Field struct{ Name, Value string }

func (t Template) checkUsers(names targets.Names) error {
	for _, f := range t.Users() {
		target := f.Value
		if v, ok := names[target]; ok {
			target = v
		}
		if !strings.HasPrefix(target, "@") {
			return fmt.Errorf("%s: %q is not a user ID nor a friendly name of a user", f.Name, f.Value)
		}
		if err := targets.ValidateID(target); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
	}
	return nil
}

// Merge returns the template with the request's fields over it: fields the request sets win,
// invite and moderator lists are joined, and power levels are merged key by key.
func (t Template) Merge(req Template) Template {
	out := t
	if req.Name != nil {
		out.Name = req.Name
	}
	if req.Topic != nil {
		out.Topic = req.Topic
	}
	if req.Alias != "" {
		out.Alias = req.Alias
	}
	if req.Preset != "" {
		out.Preset = req.Preset
	}
	if req.Encrypted != nil {
		out.Encrypted = req.Encrypted
	}
	if req.IsDM != nil {
		out.IsDM = req.IsDM
	}
	if req.Avatar != "" {
		out.Avatar = req.Avatar
	}
	out.Invite = appendNew(slices.Clone(t.Invite), req.Invite...)
	out.Moderators = appendNew(slices.Clone(t.Moderators), req.Moderators...)
	out.PowerLevels = t.PowerLevels.merge(req.PowerLevels)
	return out
}

func appendNew(list []string, more ...string) []string {
	for _, m := range more {
		if !slices.Contains(list, m) {
			list = append(list, m)
		}
	}
	return list
}

func (p *PowerLevels) merge(over *PowerLevels) *PowerLevels {
	if p == nil {
		return over
	}
	if over == nil {
		return p
	}
	out := *p
	out.Users, out.Events = map[string]int{}, map[string]int{}
	for _, m := range []map[string]int{p.Users, over.Users} {
		for k, v := range m {
			out.Users[k] = v
		}
	}
	for _, m := range []map[string]int{p.Events, over.Events} {
		for k, v := range m {
			out.Events[k] = v
		}
	}
	for _, f := range []struct{ dst, src **int }{
		{&out.UsersDefault, &over.UsersDefault}, {&out.EventsDefault, &over.EventsDefault},
		{&out.StateDefault, &over.StateDefault}, {&out.Invite, &over.Invite}, {&out.Kick, &over.Kick},
		{&out.Ban, &over.Ban}, {&out.Redact, &over.Redact},
	} {
		if *f.src != nil {
			*f.dst = *f.src
		}
	}
	return &out
}

// Groups are named lists of targets: `announce=general,garden;family=kitchen,@alice:example.org`.
type Groups map[string][]string

// UnmarshalText parses `name=target,target;name=target`.
func (g *Groups) UnmarshalText(text []byte) error {
	out := Groups{}
	for _, group := range strings.Split(string(text), ";") {
		group = strings.TrimSpace(group)
		if group == "" {
			continue
		}
		name, list, ok := strings.Cut(group, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return fmt.Errorf("%q is not name=target,target", group)
		}
		if name == "*" || strings.ContainsAny(name, "#+/:!@,= \x00") {
			return fmt.Errorf("group name %q must not be * nor contain any of # + / : ! @ , = or spaces", name)
		}
		if _, dup := out[name]; dup {
			return fmt.Errorf("group %q is defined twice", name)
		}
		var members []string
		for _, m := range strings.Split(list, ",") {
			if m = strings.TrimSpace(m); m == "" {
				continue
			}
			if slices.Contains(members, m) {
				return fmt.Errorf("group %s lists %q twice", name, m)
			}
			members = append(members, m)
		}
		if len(members) == 0 {
			return fmt.Errorf("group %s is empty", name)
		}
		out[name] = members
	}
	*g = out
	return nil
}
