// Package havalidate checks Home Assistant MQTT device discovery messages against the rules
// Home Assistant documents (the "MQTT" integration page: discovery topic, device discovery
// payload, abbreviations, availability; and the binary_sensor, sensor, button, notify, event and
// device_trigger MQTT platform pages).
//
// Only tests import it (the discovery package's and the integration tests, which validate what
// the running bridge publishes), so it never ships in the binary. It is written from the
// documentation, independently of the discovery package, so that the two check each other.
package havalidate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// abbreviations is the part of Home Assistant's abbreviation table (abbreviations.py,
// ABBREVIATIONS) that covers the root of a device payload and the platforms used here.
var abbreviations = map[string]string{
	"atype":         "automation_type",
	"avty":          "availability",
	"avty_mode":     "availability_mode",
	"avty_t":        "availability_topic",
	"avty_tpl":      "availability_template",
	"cmd_t":         "command_topic",
	"cmd_tpl":       "command_template",
	"cmps":          "components",
	"def_ent_id":    "default_entity_id",
	"dev":           "device",
	"dev_cla":       "device_class",
	"e":             "encoding",
	"en":            "enabled_by_default",
	"ent_cat":       "entity_category",
	"ent_pic":       "entity_picture",
	"evt_typ":       "event_types",
	"exp_aft":       "expire_after",
	"frc_upd":       "force_update",
	"ic":            "icon",
	"json_attr_t":   "json_attributes_topic",
	"json_attr_tpl": "json_attributes_template",
	"lrst_val_tpl":  "last_reset_value_template",
	"migr_discvry":  "migrate_discovery",
	"name":          "name",
	"o":             "origin",
	"obj_id":        "object_id",
	"off_dly":       "off_delay",
	"ops":           "options",
	"p":             "platform",
	"pl":            "payload",
	"pl_avail":      "payload_available",
	"pl_not_avail":  "payload_not_available",
	"pl_off":        "payload_off",
	"pl_on":         "payload_on",
	"pl_prs":        "payload_press",
	"ret":           "retain",
	"stat_cla":      "state_class",
	"stat_t":        "state_topic",
	"stype":         "subtype",
	"sug_dsp_prc":   "suggested_display_precision",
	"t":             "topic",
	"uniq_id":       "unique_id",
	"unit_of_meas":  "unit_of_measurement",
	"val_tpl":       "value_template",
	// Entries for platforms not used here, so that a key meant for another platform is
	// recognised as an abbreviation and then rejected as an option this platform lacks.
	"bri_cmd_t": "brightness_command_topic",
	"fx_list":   "effect_list",
	"pos_t":     "position_topic",
	"temp_unit": "temperature_unit",
}

// deviceAbbreviations is DEVICE_ABBREVIATIONS: the keys of `dev`.
var deviceAbbreviations = map[string]string{
	"cns":    "connections",
	"cu":     "configuration_url",
	"hw":     "hw_version",
	"ids":    "identifiers",
	"mdl":    "model",
	"mdl_id": "model_id",
	"mf":     "manufacturer",
	"name":   "name",
	"sa":     "suggested_area",
	"sn":     "serial_number",
	"sw":     "sw_version",
}

// originAbbreviations is ORIGIN_ABBREVIATIONS: the keys of `o`.
var originAbbreviations = map[string]string{"name": "name", "sw": "sw_version", "url": "support_url"}

var deviceOptions = set("connections", "configuration_url", "hw_version", "identifiers", "manufacturer",
	"model", "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device")

var originOptions = set("name", "sw_version", "support_url")

// rootOptions are the options of a device payload's root: device, origin and components, and
// the shared options (availability, command and state topic, qos, encoding).
var rootOptions = set("device", "origin", "components", "availability", "availability_mode",
	"availability_template", "availability_topic", "payload_available", "payload_not_available",
	"command_topic", "state_topic", "qos", "encoding", "migrate_discovery", "~")

// sharedOptions are the root options that apply to every component that does not set them.
var sharedOptions = []string{"command_topic", "state_topic"}

// entityOptions are the options every MQTT entity platform has.
var entityOptions = []string{"platform", "availability", "availability_mode", "availability_template",
	"availability_topic", "payload_available", "payload_not_available", "device", "origin",
	"enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
	"json_attributes_template", "json_attributes_topic", "name", "object_id", "default_entity_id",
	"unique_id", "qos", "migrate_discovery"}

// platforms gives, per platform, its options beyond entityOptions (nil entity: its whole set)
// and those that are required.
var platforms = map[string]struct {
	entity   bool
	options  []string
	required []string
}{
	"binary_sensor": {true, []string{"state_topic", "value_template", "device_class", "expire_after",
		"force_update", "off_delay", "payload_on", "payload_off"}, []string{"state_topic"}},
	"sensor": {true, []string{"state_topic", "value_template", "device_class", "state_class",
		"unit_of_measurement", "expire_after", "force_update", "last_reset_value_template",
		"suggested_display_precision", "options"}, []string{"state_topic"}},
	"button": {true, []string{"command_topic", "command_template", "payload_press", "device_class",
		"retain"}, []string{"command_topic"}},
	"notify": {true, []string{"command_topic", "command_template", "retain"}, []string{"command_topic"}},
	"event": {true, []string{"state_topic", "value_template", "event_types", "device_class"},
		[]string{"state_topic", "event_types"}},
	"device_automation": {false, []string{"platform", "automation_type", "payload", "qos", "topic", "type",
		"subtype", "value_template", "device", "origin", "encoding", "migrate_discovery"},
		[]string{"automation_type", "topic", "type", "subtype"}},
}

// supportedPlatforms are the platforms MQTT discovery supports; the ones without an entry in
// platforms are accepted only as removals here.
var supportedPlatforms = set("alarm_control_panel", "binary_sensor", "button", "camera", "climate",
	"cover", "device_automation", "device_tracker", "event", "fan", "humidifier", "image",
	"lawn_mower", "light", "lock", "notify", "number", "scene", "select", "sensor", "siren",
	"switch", "tag", "text", "update", "vacuum", "valve", "water_heater")

var deviceClasses = map[string]map[string]bool{
	"binary_sensor": set("battery", "battery_charging", "carbon_monoxide", "cold", "connectivity",
		"door", "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
		"occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke",
		"sound", "tamper", "update", "vibration", "window"),
	"sensor": set("absolute_humidity", "apparent_power", "aqi", "area", "atmospheric_pressure",
		"battery", "blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide", "current",
		"data_rate", "data_size", "date", "distance", "duration", "energy", "energy_distance",
		"energy_storage", "enum", "frequency", "gas", "humidity", "illuminance", "irradiance",
		"moisture", "monetary", "nitrogen_dioxide", "nitrogen_monoxide", "nitrous_oxide", "ozone",
		"ph", "pm1", "pm10", "pm25", "power", "power_factor", "precipitation",
		"precipitation_intensity", "pressure", "reactive_energy", "reactive_power",
		"signal_strength", "sound_pressure", "speed", "sulphur_dioxide", "temperature",
		"temperature_delta", "timestamp", "volatile_organic_compounds",
		"volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate",
		"volume_storage", "water", "weight", "wind_direction", "wind_speed"),
	"button": set("identify", "restart", "update"),
	"event":  set("button", "doorbell", "motion"),
}

var stateClasses = set("measurement", "measurement_angle", "total", "total_increasing")

var entityCategories = set("config", "diagnostic")

// durationUnits are the units a duration sensor may have.
var durationUnits = set("d", "h", "min", "s", "ms", "µs")

// discoveryTopic is Home Assistant's discovery topic matcher, after the prefix.
var discoveryTopic = regexp.MustCompile(`^(\w+)/(?:([a-zA-Z0-9_-]+)/)?([a-zA-Z0-9_-]+)/config$`)

var componentID = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

func set(items ...string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, it := range items {
		m[it] = true
	}
	return m
}

// Validate checks a device discovery message published on topic, with prefix the discovery
// prefix, and returns every problem found.
func Validate(prefix, topic string, payload []byte) error {
	v := &validator{}
	v.topic(prefix, topic)
	var root map[string]any
	if err := json.Unmarshal(payload, &root); err != nil {
		v.fail("payload: not a JSON object: %v", err)
		return v.err()
	}
	root = v.expand("root", root, abbreviations, rootOptions)
	v.availability("root", root)
	for _, k := range []string{"device", "origin", "components"} {
		if _, ok := root[k]; !ok {
			v.fail("root: %s is required", k)
		}
	}
	if t, ok := root["state_topic"]; ok {
		v.subscribeTopic("root: state_topic", t)
	}
	if t, ok := root["command_topic"]; ok {
		v.publishTopic("root: command_topic", t)
	}
	if q, ok := root["qos"]; ok {
		v.qos("root", q)
	}
	if d, ok := root["device"]; ok {
		v.device(d)
	}
	if o, ok := root["origin"]; ok {
		v.origin(o)
	}
	comps, ok := root["components"].(map[string]any)
	if _, present := root["components"]; present && !ok {
		v.fail("root: components must be an object")
	}
	uniqueIDs := map[string]string{}
	for _, id := range sortedKeys(comps) {
		where := "components." + id
		if !componentID.MatchString(id) {
			v.fail("%s: the component ID must match [a-zA-Z0-9_-]+", where)
		}
		c, ok := comps[id].(map[string]any)
		if !ok {
			v.fail("%s: must be an object", where)
			continue
		}
		v.component(where, c, root, uniqueIDs)
	}
	return v.err()
}

type validator struct{ problems []string }

func (v *validator) fail(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

func (v *validator) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(v.problems, "; "))
}

func (v *validator) topic(prefix, topic string) {
	rest, ok := strings.CutPrefix(topic, prefix+"/")
	if !ok {
		v.fail("topic %q: does not start with the discovery prefix %q", topic, prefix)
		return
	}
	m := discoveryTopic.FindStringSubmatch(rest)
	if m == nil {
		v.fail("topic %q: not <prefix>/<component>/[<node_id>/]<object_id>/config with IDs of [a-zA-Z0-9_-]", topic)
		return
	}
	if m[1] != "device" {
		v.fail("topic %q: the component of a device discovery topic must be \"device\"", topic)
	}
}

// expand replaces abbreviations by the full option names and reports keys that are neither an
// option in allowed nor the abbreviation of one, and options given twice.
func (v *validator) expand(where string, m map[string]any, abbr map[string]string, allowed map[string]bool) map[string]any {
	out := make(map[string]any, len(m))
	for _, k := range sortedKeys(m) {
		full := k
		if f, ok := abbr[k]; ok {
			full = f
		}
		if !allowed[full] {
			if full != k {
				v.fail("%s: %q (%s) is not an option here", where, k, full)
			} else {
				v.fail("%s: unknown key %q", where, k)
			}
			continue
		}
		if _, dup := out[full]; dup {
			v.fail("%s: %s is given twice (abbreviated and in full)", where, full)
		}
		out[full] = m[k]
	}
	return out
}

func (v *validator) availability(where string, m map[string]any) {
	_, list := m["availability"]
	_, single := m["availability_topic"]
	if list && single {
		v.fail("%s: availability and availability_topic must not be used together", where)
	}
	if t, ok := m["availability_topic"]; ok {
		v.subscribeTopic(where+": availability_topic", t)
	}
	if l, ok := m["availability"]; ok {
		items, ok := l.([]any)
		if !ok {
			items = []any{l}
		}
		for i, it := range items {
			a, ok := it.(map[string]any)
			if !ok {
				v.fail("%s: availability[%d] must be an object", where, i)
				continue
			}
			a = v.expand(fmt.Sprintf("%s: availability[%d]", where, i), a, abbreviations,
				set("topic", "payload_available", "payload_not_available", "value_template"))
			if t, ok := a["topic"]; ok {
				v.subscribeTopic(fmt.Sprintf("%s: availability[%d].topic", where, i), t)
			} else {
				v.fail("%s: availability[%d]: topic is required", where, i)
			}
		}
	}
	if mode, ok := m["availability_mode"]; ok && !slices.Contains([]any{"all", "any", "latest"}, mode) {
		v.fail("%s: availability_mode %v is not all, any or latest", where, mode)
	}
	for _, k := range []string{"payload_available", "payload_not_available", "availability_template"} {
		if x, ok := m[k]; ok {
			v.str(where+": "+k, x)
		}
	}
}

func (v *validator) device(d any) {
	m, ok := d.(map[string]any)
	if !ok {
		v.fail("device: must be an object")
		return
	}
	m = v.expand("device", m, deviceAbbreviations, deviceOptions)
	ids := 0
	switch x := m["identifiers"].(type) {
	case string:
		if x != "" {
			ids++
		}
	case []any:
		for _, id := range x {
			if s, ok := id.(string); !ok || s == "" {
				v.fail("device: identifiers must be non-empty strings")
			}
		}
		ids += len(x)
	case nil:
	default:
		v.fail("device: identifiers must be a string or a list")
	}
	if c, ok := m["connections"].([]any); ok {
		ids += len(c)
	}
	if ids == 0 {
		v.fail("device: identifiers (ids) or connections (cns) are required")
	}
	for _, k := range []string{"name", "manufacturer", "model", "model_id", "sw_version", "hw_version", "serial_number", "suggested_area"} {
		if x, ok := m[k]; ok {
			v.str("device: "+k, x)
		}
	}
	if u, ok := m["configuration_url"]; ok {
		if s, ok := u.(string); !ok || validURL(s) != nil {
			v.fail("device: configuration_url %v is not an http, https or homeassistant URL", u)
		}
	}
}

func (v *validator) origin(o any) {
	m, ok := o.(map[string]any)
	if !ok {
		v.fail("origin: must be an object")
		return
	}
	m = v.expand("origin", m, originAbbreviations, originOptions)
	if s, ok := m["name"].(string); !ok || s == "" {
		v.fail("origin: name is required")
	}
	if x, ok := m["sw_version"]; ok {
		v.str("origin: sw_version", x)
	}
	if u, ok := m["support_url"]; ok {
		if s, ok := u.(string); !ok || validURL(s) != nil {
			v.fail("origin: support_url %v is not a valid URL", u)
		}
	}
}

func (v *validator) component(where string, c map[string]any, root map[string]any, uniqueIDs map[string]string) {
	p, ok := c["p"]
	if !ok {
		p = c["platform"]
	}
	platform, _ := p.(string)
	if platform == "" {
		v.fail("%s: platform (p) is required", where)
		return
	}
	if !supportedPlatforms[platform] {
		v.fail("%s: platform %q is not supported by MQTT discovery", where, platform)
		return
	}
	if len(c) == 1 {
		return // {"p": …} alone removes the component
	}
	spec, known := platforms[platform]
	if !known {
		v.fail("%s: platform %q is not checked by this validator", where, platform)
		return
	}
	allowed := set(spec.options...)
	if spec.entity {
		for _, o := range entityOptions {
			allowed[o] = true
		}
	}
	m := v.expand(where, c, abbreviations, allowed)
	v.availability(where, m)
	for _, r := range spec.required {
		if _, ok := m[r]; ok {
			continue
		}
		if _, ok := root[r]; ok && slices.Contains(sharedOptions, r) {
			continue
		}
		v.fail("%s: %s is required for %s", where, r, platform)
	}
	if t, ok := m["state_topic"]; ok {
		v.subscribeTopic(where+": state_topic", t)
	}
	if t, ok := m["topic"]; ok {
		v.subscribeTopic(where+": topic", t)
	}
	if t, ok := m["json_attributes_topic"]; ok {
		v.subscribeTopic(where+": json_attributes_topic", t)
	}
	if t, ok := m["command_topic"]; ok {
		v.publishTopic(where+": command_topic", t)
	}
	if q, ok := m["qos"]; ok {
		v.qos(where, q)
	}
	for _, k := range []string{"value_template", "command_template", "payload_on", "payload_off",
		"payload_press", "payload", "unit_of_measurement", "icon", "type", "subtype", "automation_type"} {
		if x, ok := m[k]; ok {
			v.str(where+": "+k, x)
		}
	}
	if _, ok := m["object_id"]; ok {
		v.fail("%s: object_id is deprecated (and no longer works since Home Assistant 2026.4); use default_entity_id", where)
	}
	if spec.entity {
		uid, _ := m["unique_id"].(string)
		if uid == "" {
			v.fail("%s: unique_id is required for entity components", where)
		} else if other, dup := uniqueIDs[uid]; dup {
			v.fail("%s: unique_id %q is also used by %s", where, uid, other)
		} else {
			uniqueIDs[uid] = where
		}
		if n, ok := m["name"]; ok && n != nil {
			v.str(where+": name", n)
		}
		if e, ok := m["default_entity_id"]; ok {
			s, _ := e.(string)
			if domain, object, ok := strings.Cut(s, "."); !ok || domain != platform || !validEntityObjectID(object) || len(s) > 255 {
				v.fail("%s: default_entity_id %v is not %s.<object_id> with [a-z0-9_] and no leading, trailing or double _", where, e, platform)
			}
		}
		if cat, ok := m["entity_category"]; ok {
			s, _ := cat.(string)
			switch {
			case !entityCategories[s]:
				v.fail("%s: entity_category %v is not config or diagnostic", where, cat)
			case s == "config" && (platform == "sensor" || platform == "binary_sensor"):
				v.fail("%s: entity_category config is invalid for %s", where, platform)
			}
		}
	}
	if dc, ok := m["device_class"]; ok && dc != nil {
		if s, _ := dc.(string); !deviceClasses[platform][s] {
			v.fail("%s: device_class %v is not valid for %s", where, dc, platform)
		}
	}
	if sc, ok := m["state_class"]; ok && sc != nil {
		if s, _ := sc.(string); !stateClasses[s] {
			v.fail("%s: state_class %v is not one of measurement, measurement_angle, total, total_increasing", where, sc)
		}
	}
	if m["device_class"] == "duration" {
		if u, _ := m["unit_of_measurement"].(string); !durationUnits[u] {
			v.fail("%s: a duration sensor needs a unit of d, h, min, s, ms or µs", where)
		}
	}
	if p, ok := m["suggested_display_precision"]; ok {
		if f, isNum := p.(float64); !isNum || f < 0 || f != float64(int(f)) {
			v.fail("%s: suggested_display_precision must be a non-negative integer", where)
		}
	}
	if et, ok := m["event_types"]; ok {
		list, ok := et.([]any)
		if !ok || len(list) == 0 {
			v.fail("%s: event_types must be a non-empty list", where)
		}
		for _, t := range list {
			if s, ok := t.(string); !ok || s == "" {
				v.fail("%s: event_types must hold non-empty strings", where)
			}
		}
	}
	if platform == "device_automation" {
		if m["automation_type"] != "trigger" {
			v.fail("%s: automation_type must be \"trigger\"", where)
		}
		for _, k := range []string{"type", "subtype"} {
			if s, _ := m[k].(string); s == "" && m[k] != nil {
				v.fail("%s: %s must not be empty", where, k)
			}
		}
	}
}

func (v *validator) str(where string, x any) {
	if _, ok := x.(string); !ok {
		v.fail("%s: must be a string, not %T", where, x)
	}
}

func (v *validator) qos(where string, q any) {
	if f, ok := q.(float64); !ok || (f != 0 && f != 1 && f != 2) {
		v.fail("%s: qos %v is not 0, 1 or 2", where, q)
	}
}

// subscribeTopic checks a topic Home Assistant subscribes to: wildcards only as whole levels.
func (v *validator) subscribeTopic(where string, t any) {
	s, ok := t.(string)
	if !ok || s == "" || strings.ContainsRune(s, 0) {
		v.fail("%s: %v is not a valid topic", where, t)
		return
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			v.fail("%s: %q: # must be the last level on its own", where, s)
		}
		if strings.Contains(l, "+") && l != "+" {
			v.fail("%s: %q: + must be a level on its own", where, s)
		}
	}
}

// publishTopic checks a topic Home Assistant publishes to: no wildcards.
func (v *validator) publishTopic(where string, t any) {
	s, ok := t.(string)
	if !ok || s == "" || strings.ContainsAny(s, "#+\x00") {
		v.fail("%s: %v is not a valid topic to publish to", where, t)
	}
}

// validEntityObjectID is Home Assistant's rule for the part of an entity ID after the dot.
func validEntityObjectID(s string) bool {
	if s == "" || s[0] == '_' || s[len(s)-1] == '_' || strings.Contains(s, "__") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
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
