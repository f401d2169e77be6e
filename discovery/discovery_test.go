package discovery

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func fullBridge() Bridge {
	return Bridge{
		BaseTopic:        "matrix2mqtt",
		NodeID:           ObjectID("@bot:example.org"),
		Name:             "matrix2mqtt @bot:example.org",
		Version:          "1.2.3",
		ConfigurationURL: "http://localhost:8080/",
		Targets:          []string{"alice", "kitchen.display", "küche"},
		Rooms:            []string{"kitchen", "!abc:example.org"},
		Commands:         []string{"lights", "status"},
	}
}

func decode(t *testing.T, payload []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatalf("payload is not JSON: %v\n%s", err, payload)
	}
	return m
}

func cmps(t *testing.T, payload []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for id, c := range decode(t, payload)["cmps"].(map[string]any) {
		out[id] = c.(map[string]any)
	}
	return out
}

func TestPayloadValidates(t *testing.T) {
	for name, b := range map[string]Bridge{
		"full":    fullBridge(),
		"minimal": {BaseTopic: "m2m", NodeID: "n"},
		"prefix":  {Prefix: "ha/discovery", BaseTopic: "a/b", NodeID: "x-1", Targets: []string{"bob"}},
	} {
		t.Run(name, func(t *testing.T) {
			topic, payload, err := Payload(b)
			if err != nil {
				t.Fatal(err)
			}
			prefix := b.Prefix
			if prefix == "" {
				prefix = DefaultPrefix
			}
			if err := validateDiscovery(prefix, topic, payload); err != nil {
				t.Fatalf("%v\n%s", err, payload)
			}
		})
	}
}

func TestPayloadContent(t *testing.T) {
	b := fullBridge()
	topic, payload, err := Payload(b)
	if err != nil {
		t.Fatal(err)
	}
	if topic != "homeassistant/device/matrix2mqtt_bot_example_org/config" {
		t.Errorf("topic = %q", topic)
	}
	root := decode(t, payload)
	if root["avty_t"] != "matrix2mqtt/bridge/state" || root["pl_avail"] != "online" || root["pl_not_avail"] != "offline" {
		t.Errorf("availability = %v %v %v", root["avty_t"], root["pl_avail"], root["pl_not_avail"])
	}
	dev := root["dev"].(map[string]any)
	if ids := dev["ids"].([]any); len(ids) != 1 || ids[0] != "matrix2mqtt_bot_example_org" {
		t.Errorf("dev.ids = %v", ids)
	}
	o := root["o"].(map[string]any)
	if o["name"] != "matrix2mqtt" || o["sw"] != "1.2.3" || o["url"] != "https://github.com/matrix2mqtt/matrix2mqtt" {
		t.Errorf("o = %v", o)
	}
	c := cmps(t, payload)
	want := map[string]map[string]any{
		"connectivity": {"p": "binary_sensor", "dev_cla": "connectivity", "ent_cat": "diagnostic",
			"stat_t": "matrix2mqtt/bridge/stats", "pl_on": "ON", "pl_off": "OFF",
			"uniq_id":    "matrix2mqtt_bot_example_org_connectivity",
			"def_ent_id": "binary_sensor.matrix2mqtt_bot_example_org_connectivity"},
		"outbox_pending": {"p": "sensor", "stat_cla": "measurement", "val_tpl": "{{ value_json.outbox_pending }}"},
		"sent":           {"p": "sensor", "stat_cla": "total_increasing", "val_tpl": "{{ value_json.sent }}"},
		"failed":         {"p": "sensor", "stat_cla": "total_increasing", "val_tpl": "{{ value_json.failed }}"},
		"expired":        {"p": "sensor", "stat_cla": "total_increasing", "val_tpl": "{{ value_json.expired }}"},
		"inbound":        {"p": "sensor", "stat_cla": "total_increasing", "val_tpl": "{{ value_json.inbound }}"},
		"last_error":     {"p": "sensor", "ent_cat": "diagnostic", "stat_t": "matrix2mqtt/bridge/stats"},
		"e2ee_status":    {"p": "sensor", "ent_cat": "diagnostic", "stat_t": "matrix2mqtt/bridge/info"},
		"joined_rooms":   {"p": "sensor", "stat_cla": "measurement", "stat_t": "matrix2mqtt/bridge/rooms", "val_tpl": "{{ value_json | count }}"},
		"flush_outbox": {"p": "button", "cmd_t": "matrix2mqtt/bridge/request/outbox_flush",
			"pl_prs": `{"id":"ha_flush"}`},
		"notify_alice": {"p": "notify", "cmd_t": "matrix2mqtt/send/alice",
			"uniq_id": "matrix2mqtt_bot_example_org_notify_alice"},
		"room_kitchen": {"p": "event", "stat_t": "matrix2mqtt/room/kitchen/event",
			"evt_typ": []any{"message", "reaction", "command", "callback"}},
		"callback_kitchen": {"p": "device_automation", "atype": "trigger", "t": "matrix2mqtt/room/kitchen/callback",
			"type": "callback", "stype": "kitchen"},
		"command_lights": {"p": "device_automation", "atype": "trigger", "t": "matrix2mqtt/command/lights",
			"type": "command", "stype": "lights"},
	}
	for id, fields := range want {
		got, ok := c[id]
		if !ok {
			t.Errorf("component %q missing", id)
			continue
		}
		for k, v := range fields {
			if g, _ := json.Marshal(got[k]); string(g) != mustJSON(t, v) {
				t.Errorf("%s.%s = %s, want %s", id, k, g, mustJSON(t, v))
			}
		}
		if got["qos"] != 1.0 {
			t.Errorf("%s.qos = %v, want 1", id, got["qos"])
		}
	}
	if _, ok := c["command_lights"]["uniq_id"]; ok {
		t.Error("a device trigger is not an entity and has no unique_id")
	}
	// Names that are not valid IDs get a sanitised key with a hash, and still their own topic.
	var weird []string
	for id, comp := range c {
		if strings.HasPrefix(id, "notify_k") && comp["cmd_t"] != "matrix2mqtt/send/alice" {
			weird = append(weird, id+"="+comp["cmd_t"].(string))
		}
	}
	slices.Sort(weird)
	if len(weird) != 2 || !regexp.MustCompile(`^notify_k_che_[0-9a-f]{8}=matrix2mqtt/send/küche$`).MatchString(weird[0]) ||
		!regexp.MustCompile(`^notify_kitchen_display_[0-9a-f]{8}=matrix2mqtt/send/kitchen\.display$`).MatchString(weird[1]) {
		t.Errorf("sanitised targets = %v", weird)
	}
	if len(c) != 11+3+2+2+2 {
		t.Errorf("%d components, want 20", len(c))
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPayloadDeterministic(t *testing.T) {
	_, a, _ := Payload(fullBridge())
	_, b, _ := Payload(fullBridge())
	if string(a) != string(b) {
		t.Error("two calls gave different payloads")
	}
}

func TestPayloadErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		mod  func(*Bridge)
		want string
	}{
		"empty base":       {func(b *Bridge) { b.BaseTopic = "" }, "base topic"},
		"wildcard base":    {func(b *Bridge) { b.BaseTopic = "m/#" }, "base topic"},
		"bad node":         {func(b *Bridge) { b.NodeID = "bot:example.org" }, "node ID"},
		"empty node":       {func(b *Bridge) { b.NodeID = "" }, "node ID"},
		"bad prefix":       {func(b *Bridge) { b.Prefix = "ha/+" }, "discovery prefix"},
		"slash target":     {func(b *Bridge) { b.Targets = []string{"a/b"} }, `target "a/b"`},
		"empty room":       {func(b *Bridge) { b.Rooms = []string{""} }, "room"},
		"plus command":     {func(b *Bridge) { b.Commands = []string{"x+"} }, "command"},
		"duplicate target": {func(b *Bridge) { b.Targets = []string{"a", "a"} }, "twice"},
		"bad url":          {func(b *Bridge) { b.ConfigurationURL = "ftp://x" }, "configuration URL"},
		"url without host": {func(b *Bridge) { b.ConfigurationURL = "http://" }, "configuration URL"},
	} {
		t.Run(name, func(t *testing.T) {
			b := fullBridge()
			tc.mod(&b)
			_, _, err := Payload(b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestValidatorRejects proves that the validator can fail: each case breaks one rule.
func TestValidatorRejects(t *testing.T) {
	topic, payload, err := Payload(fullBridge())
	if err != nil {
		t.Fatal(err)
	}
	comp := func(m map[string]any, id string) map[string]any {
		return m["cmps"].(map[string]any)[id].(map[string]any)
	}
	for name, tc := range map[string]struct {
		topic string
		mod   func(m map[string]any)
		want  string
	}{
		"missing unique_id": {mod: func(m map[string]any) { delete(comp(m, "sent"), "uniq_id") }, want: "unique_id is required"},
		"duplicate unique_id": {mod: func(m map[string]any) {
			comp(m, "sent")["uniq_id"] = comp(m, "failed")["uniq_id"]
		}, want: "also used by"},
		"unknown key":                      {mod: func(m map[string]any) { comp(m, "sent")["stat_topic"] = "x" }, want: `unknown key "stat_topic"`},
		"option of other platform":         {mod: func(m map[string]any) { comp(m, "sent")["bri_cmd_t"] = "x" }, want: "not an option here"},
		"button option on sensor":          {mod: func(m map[string]any) { comp(m, "sent")["pl_prs"] = "x" }, want: "not an option here"},
		"abbreviated and full":             {mod: func(m map[string]any) { comp(m, "sent")["state_topic"] = "x" }, want: "given twice"},
		"unknown root key":                 {mod: func(m map[string]any) { m["devices"] = m["dev"] }, want: `unknown key "devices"`},
		"bad device_class":                 {mod: func(m map[string]any) { comp(m, "connectivity")["dev_cla"] = "connected" }, want: "device_class"},
		"sensor class on binary sensor":    {mod: func(m map[string]any) { comp(m, "connectivity")["dev_cla"] = "temperature" }, want: "device_class"},
		"bad state_class":                  {mod: func(m map[string]any) { comp(m, "sent")["stat_cla"] = "increasing" }, want: "state_class"},
		"state_class on binary sensor":     {mod: func(m map[string]any) { comp(m, "connectivity")["stat_cla"] = "measurement" }, want: "not an option here"},
		"bad entity_category":              {mod: func(m map[string]any) { comp(m, "last_error")["ent_cat"] = "system" }, want: "entity_category"},
		"config sensor":                    {mod: func(m map[string]any) { comp(m, "last_error")["ent_cat"] = "config" }, want: "invalid for sensor"},
		"bad topic":                        {topic: "homeassistant/device/bot:example.org/config", want: "topic"},
		"component topic":                  {topic: "homeassistant/sensor/matrix2mqtt_bot_example_org/config", want: `must be "device"`},
		"other prefix":                     {topic: "ha/device/x/config", want: "discovery prefix"},
		"notify without cmd_t":             {mod: func(m map[string]any) { delete(comp(m, "notify_alice"), "cmd_t") }, want: "command_topic is required"},
		"button without cmd_t":             {mod: func(m map[string]any) { delete(comp(m, "flush_outbox"), "cmd_t") }, want: "command_topic is required"},
		"sensor without stat_t":            {mod: func(m map[string]any) { delete(comp(m, "sent"), "stat_t") }, want: "state_topic is required"},
		"event without types":              {mod: func(m map[string]any) { delete(comp(m, "room_kitchen"), "evt_typ") }, want: "event_types is required"},
		"event empty types":                {mod: func(m map[string]any) { comp(m, "room_kitchen")["evt_typ"] = []any{} }, want: "non-empty list"},
		"trigger without stype":            {mod: func(m map[string]any) { delete(comp(m, "command_lights"), "stype") }, want: "subtype is required"},
		"trigger wrong atype":              {mod: func(m map[string]any) { comp(m, "command_lights")["atype"] = "action" }, want: `"trigger"`},
		"trigger with uniq_id":             {mod: func(m map[string]any) { comp(m, "command_lights")["uniq_id"] = "x" }, want: "not an option here"},
		"missing dev.ids":                  {mod: func(m map[string]any) { delete(m["dev"].(map[string]any), "ids") }, want: "identifiers"},
		"missing dev":                      {mod: func(m map[string]any) { delete(m, "dev") }, want: "device is required"},
		"missing origin":                   {mod: func(m map[string]any) { delete(m, "o") }, want: "origin is required"},
		"origin without name":              {mod: func(m map[string]any) { delete(m["o"].(map[string]any), "name") }, want: "origin: name"},
		"missing platform":                 {mod: func(m map[string]any) { delete(comp(m, "sent"), "p") }, want: "platform (p) is required"},
		"unsupported platform":             {mod: func(m map[string]any) { comp(m, "sent")["p"] = "gauge" }, want: "not supported"},
		"wildcard command":                 {mod: func(m map[string]any) { comp(m, "notify_alice")["cmd_t"] = "m/send/+" }, want: "publish to"},
		"bad wildcard state":               {mod: func(m map[string]any) { comp(m, "sent")["stat_t"] = "m/#/x" }, want: "last level"},
		"bad qos":                          {mod: func(m map[string]any) { comp(m, "sent")["qos"] = 3 }, want: "qos"},
		"deprecated object_id":             {mod: func(m map[string]any) { comp(m, "sent")["obj_id"] = "sent" }, want: "deprecated"},
		"default_entity_id without domain": {mod: func(m map[string]any) { comp(m, "sent")["def_ent_id"] = "sent" }, want: "default_entity_id"},
		"default_entity_id other domain":   {mod: func(m map[string]any) { comp(m, "sent")["def_ent_id"] = "binary_sensor.sent" }, want: "default_entity_id"},
		"default_entity_id uppercase":      {mod: func(m map[string]any) { comp(m, "sent")["def_ent_id"] = "sensor.Sent" }, want: "default_entity_id"},
		"bad component id":                 {mod: func(m map[string]any) { m["cmps"].(map[string]any)["a b"] = map[string]any{"p": "sensor"} }, want: "component ID"},
		"duration without unit":            {mod: func(m map[string]any) { delete(comp(m, "oldest_pending_age"), "unit_of_meas") }, want: "duration"},
		"bad config url":                   {mod: func(m map[string]any) { m["dev"].(map[string]any)["cu"] = "localhost:8080" }, want: "configuration_url"},
		"both availabilities": {mod: func(m map[string]any) {
			m["avty"] = []any{map[string]any{"t": "m/bridge/state"}}
		}, want: "must not be used together"},
	} {
		t.Run(name, func(t *testing.T) {
			m := decode(t, payload)
			if tc.mod != nil {
				tc.mod(m)
			}
			tp := topic
			if tc.topic != "" {
				tp = tc.topic
			}
			p, _ := json.Marshal(m)
			err := validateDiscovery(DefaultPrefix, tp, p)
			if err == nil {
				t.Fatal("the validator accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	if err := validateDiscovery(DefaultPrefix, topic, []byte(`[1]`)); err == nil {
		t.Error("the validator accepted a JSON array")
	}
}

func TestRemoval(t *testing.T) {
	old := fullBridge()
	_, before, err := Payload(old)
	if err != nil {
		t.Fatal(err)
	}
	cur := old
	cur.Targets = []string{"alice"}
	cur.Rooms = nil
	cur.Commands = []string{"status"}

	stale, err := Stale(cur, before)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range stale {
		ids = append(ids, c.ID+":"+c.Platform)
	}
	if len(ids) != 7 || !strings.HasPrefix(ids[0], "callback__abc_example_org_") || ids[1] != "callback_kitchen:device_automation" ||
		ids[2] != "command_lights:device_automation" ||
		!strings.HasPrefix(ids[3], "notify_k_che_") || !strings.HasPrefix(ids[4], "notify_kitchen_display_") ||
		!strings.HasPrefix(ids[5], "room__abc_example_org_") || ids[6] != "room_kitchen:event" {
		t.Fatalf("stale = %v", ids)
	}

	topic, removal, err := Removal(cur, stale)
	if err != nil {
		t.Fatal(err)
	}
	if err := validateDiscovery(DefaultPrefix, topic, removal); err != nil {
		t.Fatalf("%v\n%s", err, removal)
	}
	c := cmps(t, removal)
	for _, s := range stale {
		if got := mustJSON(t, c[s.ID]); got != `{"p":"`+s.Platform+`"}` {
			t.Errorf("removed %s = %s, want only its platform", s.ID, got)
		}
	}
	// Everything still announced is in the removal message in full.
	_, after, _ := Payload(cur)
	for id, want := range cmps(t, after) {
		if mustJSON(t, c[id]) != mustJSON(t, want) {
			t.Errorf("%s differs between the removal and the payload", id)
		}
	}
	if len(c) != len(cmps(t, after))+len(stale) {
		t.Errorf("removal has %d components", len(c))
	}

	// Read back after the removal message, nothing is stale any more.
	if again, err := Stale(cur, removal); err != nil || len(again) != 0 {
		t.Errorf("Stale after removal = %v, %v", again, err)
	}
	if again, err := Stale(cur, after); err != nil || len(again) != 0 {
		t.Errorf("Stale of the current payload = %v, %v", again, err)
	}
	if none, err := Stale(cur, nil); err != nil || none != nil {
		t.Errorf("Stale of nothing = %v, %v", none, err)
	}
	if _, err := Stale(cur, []byte("{")); err == nil {
		t.Error("Stale accepted broken JSON")
	}
	if _, err := Stale(cur, []byte(`{"cmps":{"x":{"name":"no platform"}}}`)); err == nil {
		t.Error("Stale accepted a component without platform")
	}
	// A component whose platform changed is stale under its old platform.
	if s, err := Stale(cur, []byte(`{"cmps":{"sent":{"p":"binary_sensor","stat_t":"x"}}}`)); err != nil ||
		len(s) != 1 || s[0] != (Component{"sent", "binary_sensor"}) {
		t.Errorf("Stale with changed platform = %v, %v", s, err)
	}

	for name, bad := range map[string][]Component{
		"still announced": {{ID: "sent", Platform: "sensor"}},
		"bad id":          {{ID: "a/b", Platform: "sensor"}},
		"no platform":     {{ID: "gone"}},
	} {
		if _, _, err := Removal(cur, bad); err == nil {
			t.Errorf("Removal accepted %s", name)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Enabled: true, Prefix: "homeassistant", StatusTopic: "homeassistant/status"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	nested := ok
	nested.Prefix = "site1/homeassistant"
	if err := nested.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		prefix, status, want string
	}{
		{"", "homeassistant/status", "HA_DISCOVERY_PREFIX"},
		{"home/+", "homeassistant/status", "HA_DISCOVERY_PREFIX"},
		{"home/#", "homeassistant/status", "HA_DISCOVERY_PREFIX"},
		{"home/", "homeassistant/status", "HA_DISCOVERY_PREFIX"},
		{"/home", "homeassistant/status", "HA_DISCOVERY_PREFIX"},
		{"a//b", "homeassistant/status", "HA_DISCOVERY_PREFIX"},
		{"$SYS", "homeassistant/status", "HA_DISCOVERY_PREFIX"},
		{"a\x00b", "homeassistant/status", "HA_DISCOVERY_PREFIX"},
		{"\xff", "homeassistant/status", "HA_DISCOVERY_PREFIX"},
		{"homeassistant", "", "HA_STATUS_TOPIC"},
		{"homeassistant", "homeassistant/+", "HA_STATUS_TOPIC"},
	} {
		c := Config{Prefix: tc.prefix, StatusTopic: tc.status}
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
			t.Errorf("Validate(%q, %q) = %v, want an error naming %s", tc.prefix, tc.status, err, tc.want)
		}
	}
}

func TestObjectID(t *testing.T) {
	for in, want := range map[string]string{
		"@bot:example.org":         "matrix2mqtt_bot_example_org",
		"@my-bot_1:matrix.example": "matrix2mqtt_my-bot_1_matrix_example",
		"@bot:example.org:8448":    "matrix2mqtt_bot_example_org_8448",
		"":                         "matrix2mqtt",
		"@@@":                      "matrix2mqtt",
		"@bøt:exämple.org":         "matrix2mqtt_b_t_ex_mple_org",
		"@Bot:Example.ORG":         "matrix2mqtt_Bot_Example_ORG",
	} {
		if got := ObjectID(in); got != want {
			t.Errorf("ObjectID(%q) = %q, want %q", in, got, want)
		}
	}
}

var nodeIDSyntax = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

func FuzzObjectID(f *testing.F) {
	for _, s := range []string{"@bot:example.org", "", "@@", "@b\x00t:x", "@bøt:ex/ample#+", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, userID string) {
		id := ObjectID(userID)
		if !nodeIDSyntax.MatchString(id) {
			t.Fatalf("ObjectID(%q) = %q, not [a-zA-Z0-9_-]+", userID, id)
		}
		if !strings.HasPrefix(id, "matrix2mqtt") || len(id) > len("matrix2mqtt")+2*len(userID) {
			t.Fatalf("ObjectID(%q) = %q", userID, id)
		}
		if ObjectID(userID) != id {
			t.Fatal("not deterministic")
		}
		// Whatever the user ID, the payload built on it is valid.
		b := Bridge{BaseTopic: "m", NodeID: id, Name: userID, Version: userID}
		topic, payload, err := Payload(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := validateDiscovery(DefaultPrefix, topic, payload); err != nil {
			t.Fatalf("%v\n%s", err, payload)
		}
	})
}

func FuzzNames(f *testing.F) {
	f.Add("alice", "kitchen", "lights")
	f.Add("küche", "!abc:example.org", "a.b")
	f.Fuzz(func(t *testing.T, target, room, command string) {
		b := Bridge{BaseTopic: "m", NodeID: "n", Targets: []string{target}, Rooms: []string{room}, Commands: []string{command}}
		topic, payload, err := Payload(b)
		if err != nil {
			return // not a valid topic segment
		}
		if err := validateDiscovery(DefaultPrefix, topic, payload); err != nil {
			t.Fatalf("%v\n%s", err, payload)
		}
	})
}
