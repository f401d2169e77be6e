// Package discovery builds Home Assistant MQTT discovery messages for the bridge.
//
// It uses device-based discovery (Home Assistant 2024.11 and later): one retained message on
// `<prefix>/device/<node_id>/config` describes the bridge's device (`dev`), the software that
// announced it (`o`) and every component (`cmps`): entities and device triggers alike. Keys are
// written with the abbreviations Home Assistant defines (`stat_t`, `cmd_t`, `uniq_id`…).
//
// The functions here are pure: they build topics and payloads and leave publishing to the caller.
// The caller publishes [Payload] retained at QoS 1 at start, again whenever Home Assistant's
// birth message (`online` on [Config.StatusTopic]) arrives, and whenever the announced targets,
// rooms or commands change. Components that disappeared (see [Stale]) are removed with
// [Removal] followed by [Payload] again, which is the order Home Assistant documents. An empty
// retained payload on [Topic] removes the device with everything on it.
package discovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"hash/fnv"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// Config is the discovery section of the bridge configuration.
type Config struct {
	// Enabled turns discovery on.
	Enabled bool `env:"HA_DISCOVERY" envDefault:"true"`
	// Prefix is Home Assistant's discovery prefix.
	Prefix string `env:"HA_DISCOVERY_PREFIX" envDefault:"homeassistant"`
	// StatusTopic is where Home Assistant publishes its birth message (`online`); discovery is
	// published again when it arrives. Home Assistant's default does not follow the prefix.
	StatusTopic string `env:"HA_STATUS_TOPIC" envDefault:"homeassistant/status"`
}

// Validate reports a setting that cannot work, naming it. The topics are checked even when
// discovery is off, so that turning it on later does not reveal an old mistake.
func (c Config) Validate() error {
	if err := validTopic(c.Prefix); err != nil {
		return fmt.Errorf("HA_DISCOVERY_PREFIX: %w", err)
	}
	if err := validTopic(c.StatusTopic); err != nil {
		return fmt.Errorf("HA_STATUS_TOPIC: %w", err)
	}
	return nil
}

// Bridge is what is announced: the bridge as one device.
type Bridge struct {
	// Prefix is the discovery prefix; empty means "homeassistant".
	Prefix string
	// BaseTopic is the bridge's base topic, e.g. "matrix2mqtt".
	BaseTopic string
	// NodeID identifies the device; it must match [a-zA-Z0-9_-]+. Use [ObjectID] of the bot's
	// user ID so that it stays the same across restarts and differs between bridges.
	NodeID string
	// Name is the device name, e.g. "matrix2mqtt @bot:example.org"; empty means "matrix2mqtt".
	Name string
	// Version is the bridge's version, shown as the device's and the origin's software version.
	Version string
	// ConfigurationURL, when set, is the device's link (http, https or homeassistant scheme).
	ConfigurationURL string
	// Targets are friendly-name targets; each gets a notify entity whose command topic is
	// `<base>/send/<target>`.
	Targets []string
	// Rooms are room keys; each gets an event entity on `<base>/room/<key>/event`, where the
	// bridge publishes {"event_type": EventMessage|EventReaction|EventCommand|EventCallback, ...},
	// and a device trigger (type "callback", subtype the key) fired by `<base>/room/<key>/callback`.
	Rooms []string
	// Commands are inbound command names; each gets a device trigger (type "command", subtype
	// the name) fired by any message on `<base>/command/<name>`.
	Commands []string
}

// Component names one entry of the device config's components: its key and its platform.
type Component struct {
	ID       string // the key in cmps, e.g. "notify_alice"
	Platform string // e.g. "notify"
}

// DefaultPrefix is Home Assistant's default discovery prefix.
const DefaultPrefix = "homeassistant"

const (
	origin     = "matrix2mqtt"
	supportURL = "https://github.com/matrix2mqtt/matrix2mqtt"
	nodePrefix = "matrix2mqtt"
)

// The event_type values of the room event entities: the bridge publishes
// {"event_type": EventMessage, ...} and so on to `<base>/room/<key>/event`.
const (
	EventMessage  = "message"
	EventReaction = "reaction"
	EventCommand  = "command"
	// EventCallback is an answer to a message sent with options.
	EventCallback = "callback"
)

// ObjectID turns a Matrix user ID into a node ID for [Bridge.NodeID]: "matrix2mqtt_" followed by
// the user ID with every run of characters outside [a-zA-Z0-9_-] replaced by one "_",
// e.g. "@bot:example.org" gives "matrix2mqtt_bot_example_org".
func ObjectID(userID string) string {
	var sb strings.Builder
	sb.WriteString(nodePrefix)
	sep := true // a "_" is due before the next kept character
	for _, r := range userID {
		if !idChar(r) {
			sep = true
			continue
		}
		if sep {
			sb.WriteByte('_')
			sep = false
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// Topic is the device discovery topic `<prefix>/device/<nodeID>/config`.
func Topic(prefix, nodeID string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return prefix + "/device/" + nodeID + "/config"
}

// Payload returns the retained device discovery message for b.
func Payload(b Bridge) (topic string, payload []byte, err error) {
	msg, err := build(b)
	if err != nil {
		return "", nil, err
	}
	payload, err = encode(msg)
	return Topic(b.Prefix, b.NodeID), payload, err
}

// Removal returns the device discovery message that removes components from b's device, as Home
// Assistant documents it: the full config of b with each removed component reduced to its
// platform ({"p": "sensor"}). Publish it retained, then publish [Payload] of b, which leaves the
// removed components out. Removing a component that b still announces is an error.
func Removal(b Bridge, removed []Component) (topic string, payload []byte, err error) {
	msg, err := build(b)
	if err != nil {
		return "", nil, err
	}
	for _, c := range removed {
		if !validID(c.ID) {
			return "", nil, fmt.Errorf("component ID %q must match [a-zA-Z0-9_-]+", c.ID)
		}
		if !validID(c.Platform) {
			return "", nil, fmt.Errorf("component %q: platform %q is not valid", c.ID, c.Platform)
		}
		if _, ok := msg.Components[c.ID]; ok {
			return "", nil, fmt.Errorf("component %q is still announced and cannot be removed", c.ID)
		}
		msg.Components[c.ID] = &component{Platform: c.Platform}
	}
	payload, err = encode(msg)
	return Topic(b.Prefix, b.NodeID), payload, err
}

// Stale returns the components that previous, a device discovery payload published earlier (the
// retained message read back from the broker), announces and b no longer does, sorted by ID;
// pass them to [Removal]. An empty previous payload has none. Components that previous
// already reduced to their platform are not returned again.
func Stale(b Bridge, previous []byte) ([]Component, error) {
	if len(bytes.TrimSpace(previous)) == 0 {
		return nil, nil
	}
	current, err := build(b)
	if err != nil {
		return nil, err
	}
	var old map[string]json.RawMessage
	if err := json.Unmarshal(previous, &old); err != nil {
		return nil, fmt.Errorf("previous discovery payload: %w", err)
	}
	raw, ok := old["cmps"]
	if !ok {
		raw = old["components"]
	}
	var comps map[string]map[string]json.RawMessage
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &comps); err != nil {
			return nil, fmt.Errorf("previous discovery payload: components: %w", err)
		}
	}
	var stale []Component
	for id, fields := range comps {
		p, ok := fields["p"]
		if !ok {
			p = fields["platform"]
		}
		var platform string
		if err := json.Unmarshal(p, &platform); err != nil || platform == "" {
			return nil, fmt.Errorf("previous discovery payload: component %q has no platform", id)
		}
		if len(fields) == 1 {
			continue // already a removal
		}
		if cur, ok := current.Components[id]; ok && cur.Platform == platform {
			continue
		}
		stale = append(stale, Component{ID: id, Platform: platform})
	}
	slices.SortFunc(stale, func(a, b Component) int { return strings.Compare(a.ID, b.ID) })
	return stale, nil
}

// message is a device discovery payload.
type message struct {
	Device     device                `json:"dev"`
	Origin     originInfo            `json:"o"`
	Components map[string]*component `json:"cmps"`
	// Availability is shared by every entity component.
	AvailabilityTopic   string `json:"avty_t"`
	PayloadAvailable    string `json:"pl_avail"`
	PayloadNotAvailable string `json:"pl_not_avail"`
}

type device struct {
	Identifiers      []string `json:"ids"`
	Name             string   `json:"name"`
	Manufacturer     string   `json:"mf"`
	Model            string   `json:"mdl"`
	SWVersion        string   `json:"sw,omitempty"`
	ConfigurationURL string   `json:"cu,omitempty"`
}

type originInfo struct {
	Name       string `json:"name"`
	SWVersion  string `json:"sw,omitempty"`
	SupportURL string `json:"url"`
}

// component is one entry of cmps; empty fields are left out, so a removal is just {"p": …}.
type component struct {
	Platform        string `json:"p"`
	Name            string `json:"name,omitempty"`
	UniqueID        string `json:"uniq_id,omitempty"`
	DefaultEntityID string `json:"def_ent_id,omitempty"`
	DeviceClass     string `json:"dev_cla,omitempty"`
	StateClass      string `json:"stat_cla,omitempty"`
	EntityCategory  string `json:"ent_cat,omitempty"`
	Icon            string `json:"ic,omitempty"`
	Unit            string `json:"unit_of_meas,omitempty"`
	Precision       *int   `json:"sug_dsp_prc,omitempty"`

	StateTopic    string `json:"stat_t,omitempty"`
	ValueTemplate string `json:"val_tpl,omitempty"`
	PayloadOn     string `json:"pl_on,omitempty"`
	PayloadOff    string `json:"pl_off,omitempty"`

	CommandTopic    string `json:"cmd_t,omitempty"`
	CommandTemplate string `json:"cmd_tpl,omitempty"`
	PayloadPress    string `json:"pl_prs,omitempty"`

	EventTypes []string `json:"evt_typ,omitempty"`

	AutomationType string `json:"atype,omitempty"`
	Topic          string `json:"t,omitempty"`
	Type           string `json:"type,omitempty"`
	Subtype        string `json:"stype,omitempty"`

	QoS int `json:"qos,omitempty"`
}

// Templates for the bridge's JSON topics. A missing field renders "None", which Home Assistant
// takes as "unknown"; a sensor's text state is limited to 255 characters.
const (
	tplConnected = "{{ 'None' if value_json.matrix_connected is not defined else ('ON' if value_json.matrix_connected else 'OFF') }}"
	tplLastError = "{{ (value_json.last_error | default('None', true))[:255] }}"
	tplE2EE      = "{{ value_json.e2ee.status if value_json.e2ee is defined and value_json.e2ee.status is defined else 'None' }}"
	// tplRoomCount counts the joined rooms of `<base>/bridge/rooms` (a JSON list).
	tplRoomCount = "{{ value_json | count }}"
	// tplNotify sends the message as a JSON send request, so that a message that happens to
	// start with "{" is still sent as text.
	tplNotify = "{{ {'text': value} | to_json }}"
)

func statsField(field string) string { return "{{ value_json." + field + " }}" }

func build(b Bridge) (*message, error) {
	if err := validTopic(b.BaseTopic); err != nil {
		return nil, fmt.Errorf("base topic: %w", err)
	}
	if !validID(b.NodeID) {
		return nil, fmt.Errorf("node ID %q must match [a-zA-Z0-9_-]+", b.NodeID)
	}
	if b.Prefix != "" {
		if err := validTopic(b.Prefix); err != nil {
			return nil, fmt.Errorf("discovery prefix: %w", err)
		}
	}
	if b.ConfigurationURL != "" {
		if err := validURL(b.ConfigurationURL); err != nil {
			return nil, fmt.Errorf("configuration URL: %w", err)
		}
	}
	name := b.Name
	if name == "" {
		name = origin
	}
	topics := wire.Topics{Base: b.BaseTopic}
	msg := &message{
		Device: device{
			Identifiers:      []string{b.NodeID},
			Name:             name,
			Manufacturer:     origin,
			Model:            "Matrix to MQTT bridge",
			SWVersion:        b.Version,
			ConfigurationURL: b.ConfigurationURL,
		},
		Origin:              originInfo{Name: origin, SWVersion: b.Version, SupportURL: supportURL},
		Components:          map[string]*component{},
		AvailabilityTopic:   topics.State(),
		PayloadAvailable:    "online",
		PayloadNotAvailable: "offline",
	}
	add := func(id string, c *component) error {
		if _, dup := msg.Components[id]; dup {
			return fmt.Errorf("two components would have the ID %q", id)
		}
		if c.Platform != "device_automation" {
			c.UniqueID = b.NodeID + "_" + id
			if slug := entitySlug(c.UniqueID); slug != "" {
				c.DefaultEntityID = c.Platform + "." + slug
			}
		}
		c.QoS = 1
		msg.Components[id] = c
		return nil
	}

	stats := topics.Stats()
	zero := 0
	fixed := []struct {
		id string
		c  *component
	}{
		{"connectivity", &component{Platform: "binary_sensor", Name: "Matrix connection",
			DeviceClass: "connectivity", EntityCategory: "diagnostic",
			StateTopic: stats, ValueTemplate: tplConnected, PayloadOn: "ON", PayloadOff: "OFF"}},
		{"outbox_pending", &component{Platform: "sensor", Name: "Outbox pending", Icon: "mdi:tray-full",
			StateClass: "measurement", StateTopic: stats, ValueTemplate: statsField("outbox_pending")}},
		{"oldest_pending_age", &component{Platform: "sensor", Name: "Oldest pending age",
			DeviceClass: "duration", StateClass: "measurement", Unit: "s", Precision: &zero,
			EntityCategory: "diagnostic", StateTopic: stats, ValueTemplate: statsField("oldest_pending_age_s")}},
		{"sent", &component{Platform: "sensor", Name: "Messages sent", Icon: "mdi:send",
			StateClass: "total_increasing", StateTopic: stats, ValueTemplate: statsField("sent")}},
		{"failed", &component{Platform: "sensor", Name: "Messages failed", Icon: "mdi:alert-circle",
			StateClass: "total_increasing", StateTopic: stats, ValueTemplate: statsField("failed")}},
		{"expired", &component{Platform: "sensor", Name: "Messages expired", Icon: "mdi:timer-sand",
			StateClass: "total_increasing", StateTopic: stats, ValueTemplate: statsField("expired")}},
		{"inbound", &component{Platform: "sensor", Name: "Messages received", Icon: "mdi:message-text",
			StateClass: "total_increasing", StateTopic: stats, ValueTemplate: statsField("inbound")}},
		{"last_error", &component{Platform: "sensor", Name: "Last error", Icon: "mdi:alert-circle",
			EntityCategory: "diagnostic", StateTopic: stats, ValueTemplate: tplLastError}},
		{"joined_rooms", &component{Platform: "sensor", Name: "Joined rooms", Icon: "mdi:forum",
			StateClass: "measurement", StateTopic: topics.Rooms(), ValueTemplate: tplRoomCount}},
		{"e2ee_status", &component{Platform: "sensor", Name: "E2EE status", Icon: "mdi:lock",
			EntityCategory: "diagnostic", StateTopic: topics.Info(), ValueTemplate: tplE2EE}},
		{"flush_outbox", &component{Platform: "button", Name: "Flush outbox", EntityCategory: "config",
			CommandTopic: topics.Request("outbox_flush"), PayloadPress: `{"id":"ha_flush"}`}},
	}
	for _, f := range fixed {
		if err := add(f.id, f.c); err != nil {
			return nil, err
		}
	}
	lists := []struct {
		what, kind string
		names      []string
		make       func(name string) *component
	}{
		{"target", "notify", b.Targets, func(t string) *component {
			return &component{Platform: "notify", Name: "Send to " + t,
				CommandTopic: topics.Send(t), CommandTemplate: tplNotify}
		}},
		{"room", "room", b.Rooms, func(k string) *component {
			return &component{Platform: "event", Name: "Room " + k,
				StateTopic: topics.Room(k, wire.KindEvent), EventTypes: []string{EventMessage, EventReaction, EventCommand, EventCallback}}
		}},
		{"room", "callback", b.Rooms, func(k string) *component {
			return &component{Platform: "device_automation", AutomationType: "trigger",
				Topic: topics.Room(k, wire.KindCallback), Type: "callback", Subtype: k}
		}},
		{"command", "command", b.Commands, func(n string) *component {
			return &component{Platform: "device_automation", AutomationType: "trigger",
				Topic: topics.Command(n), Type: "command", Subtype: n}
		}},
	}
	for _, l := range lists {
		seen := map[string]bool{}
		for _, n := range l.names {
			if err := validSegment(n); err != nil {
				return nil, fmt.Errorf("%s %q: %w", l.what, n, err)
			}
			if seen[n] {
				return nil, fmt.Errorf("%s %q is listed twice", l.what, n)
			}
			seen[n] = true
			if err := add(l.kind+"_"+componentKey(n), l.make(n)); err != nil {
				return nil, err
			}
		}
	}
	return msg, nil
}

func encode(msg *message) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(msg); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func idChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

// validID reports whether s matches [a-zA-Z0-9_-]+, the ID syntax of discovery topics.
func validID(s string) bool {
	for _, r := range s {
		if !idChar(r) {
			return false
		}
	}
	return s != ""
}

// componentKey turns a name into a component ID part: the name itself when it is a valid ID,
// else the name with other characters replaced by "_" and a hash of the name appended, so that
// different names never share an ID.
func componentKey(name string) string {
	if validID(name) {
		return name
	}
	key := []byte{}
	for _, r := range name {
		if idChar(r) {
			key = utf8.AppendRune(key, r)
		} else {
			key = append(key, '_')
		}
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("%s_%08x", key, h.Sum32())
}

// entitySlug turns s into the object part of an entity ID: [a-z0-9_], no leading, trailing or
// doubled "_", at most 200 characters.
func entitySlug(s string) string {
	var sb strings.Builder
	sep := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			if sep && sb.Len() > 0 {
				sb.WriteByte('_')
			}
			sep = false
			sb.WriteRune(r)
			continue
		}
		sep = true
	}
	out := sb.String()
	if len(out) > 200 {
		out = strings.TrimRight(out[:200], "_")
	}
	return out
}

// validSegment checks one topic level that the bridge builds from a name.
func validSegment(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if !utf8.ValidString(s) {
		return errors.New("is not UTF-8")
	}
	if i := strings.IndexAny(s, "#+/\x00"); i >= 0 {
		return fmt.Errorf("must not contain %q", s[i])
	}
	return nil
}

// validTopic checks a topic name (or prefix) that is published to: no wildcards, no empty level.
func validTopic(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case !utf8.ValidString(s):
		return errors.New("is not UTF-8")
	case len(s) > 65535:
		return errors.New("is longer than MQTT allows")
	case strings.ContainsAny(s, "#+"):
		return fmt.Errorf("%q must not contain the wildcards # or +", s)
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%q must not contain NUL", s)
	case strings.HasPrefix(s, "$"):
		return fmt.Errorf("%q must not start with $ (reserved for the broker)", s)
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//"):
		return fmt.Errorf("%q must not have an empty level (leading, trailing or double /)", s)
	}
	return nil
}

// validURL accepts what Home Assistant accepts as a device's configuration URL.
func validURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Errorf("%q has no host", s)
		}
	case "homeassistant":
	default:
		return fmt.Errorf("%q must be an http, https or homeassistant URL", s)
	}
	return nil
}
