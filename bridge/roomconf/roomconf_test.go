package roomconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
)

func TestParseTemplates(t *testing.T) {
	tests := []struct {
		name, json string
		err        string // empty: valid
	}{
		{"full", `{"guests":{"name":"Guests","topic":"t","alias":"guests","preset":"private_chat","invite":["@a:hs"],
			"moderators":["partner"],"encrypted":true,"power_levels":{"users":{"@b:hs":20},"events":{"m.room.name":50},"invite":0,"kick":50},
			"is_dm":false,"avatar":"mxc://hs/abc"}}`, ""},
		{"empty object", `{}`, ""},
		{"unknown field", `{"guests":{"nmae":"x"}}`, "nmae"},
		{"bad preset", `{"guests":{"preset":"secret"}}`, "preset"},
		{"alias with server", `{"guests":{"alias":"#g:hs"}}`, "alias"},
		{"avatar not mxc", `{"guests":{"avatar":"http://x/a.png"}}`, "avatar"},
		{"level out of range", `{"guests":{"power_levels":{"kick":9007199254740992}}}`, "out of range"},
		{"not an object", `[1]`, "JSON object"},
		{"null", `null`, "JSON object"},
		{"trailing", `{} {}`, "after"},
		{"bad template name", `{"a b":{}}`, "template name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTemplates([]byte(tc.json))
			if tc.err == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error = %v, want one mentioning %q", err, tc.err)
			}
		})
	}
}

// TestTemplatesFile: the setting is named in every error, and users must be user IDs or
// friendly names of users.
func TestTemplatesFile(t *testing.T) {
	names := targets.Names{"partner": "@p:hs", "kitchen": "!k:hs"}
	tests := []struct {
		name, json, err string
	}{
		{"friendly name of a user", `{"g":{"moderators":["partner"]}}`, ""},
		{"friendly name of a room", `{"g":{"invite":["kitchen"]}}`, "invite"},
		{"not a user", `{"g":{"power_levels":{"users":{"bob":50}}}}`, "power_levels.users"},
		{"bad json", `{`, "ROOM_TEMPLATES_FILE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.json")
			if err := os.WriteFile(path, []byte(tc.json), 0o600); err != nil {
				t.Fatal(err)
			}
			err := Config{TemplatesFile: path}.Validate(names)
			if tc.err == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "ROOM_TEMPLATES_FILE")) {
				t.Fatalf("error = %v, want one naming ROOM_TEMPLATES_FILE and %q", err, tc.err)
			}
		})
	}
	if err := (Config{TemplatesFile: "/nonexistent/t.json"}).Validate(names); err == nil || !strings.Contains(err.Error(), "ROOM_TEMPLATES_FILE") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestMerge(t *testing.T) {
	name, other := "Template", "Request"
	five, nine := 5, 9
	tpl := Template{Name: &name, Preset: "private_chat", Invite: []string{"@a:hs"}, Moderators: []string{"@m:hs"},
		PowerLevels: &PowerLevels{Users: map[string]int{"@a:hs": 10}, Kick: &five}}
	req := Template{Name: &other, Invite: []string{"@a:hs", "@b:hs"}, PowerLevels: &PowerLevels{Users: map[string]int{"@b:hs": 20}, Kick: &nine}}
	m := tpl.Merge(req)
	if *m.Name != "Request" || m.Preset != "private_chat" || strings.Join(m.Invite, ",") != "@a:hs,@b:hs" || len(m.Moderators) != 1 {
		t.Fatalf("merged %+v", m)
	}
	if m.PowerLevels.Users["@a:hs"] != 10 || m.PowerLevels.Users["@b:hs"] != 20 || *m.PowerLevels.Kick != 9 {
		t.Fatalf("merged power levels %+v", m.PowerLevels)
	}
	if len(tpl.Invite) != 1 || tpl.PowerLevels.Users["@b:hs"] != 0 {
		t.Fatal("merging changed the template")
	}
}

func TestGroups(t *testing.T) {
	tests := []struct {
		name, text string
		want       map[string]string // group → members joined by ","
		err        string
	}{
		{"two groups", "announce=general, garden ; family=kitchen,@a:hs", map[string]string{"announce": "general,garden", "family": "kitchen,@a:hs"}, ""},
		{"trailing separators", "a=x,;", map[string]string{"a": "x"}, ""},
		{"empty", "", map[string]string{}, ""},
		{"no =", "announce", nil, "name=target"},
		{"empty group", "a=", nil, "empty"},
		{"star", "*=x", nil, "must not be *"},
		{"twice", "a=x;a=y", nil, "twice"},
		{"member twice", "a=x,x", nil, "twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var g Groups
			err := g.UnmarshalText([]byte(tc.text))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(g) != len(tc.want) {
				t.Fatalf("groups = %v", g)
			}
			for k, v := range tc.want {
				if strings.Join(g[k], ",") != v {
					t.Fatalf("group %s = %v, want %s", k, g[k], v)
				}
			}
		})
	}
	names := targets.Names{"general": "!g:hs"}
	if err := (Config{Groups: Groups{"a": {"general", "nonsense"}}}).Validate(names); err == nil || !strings.Contains(err.Error(), "GROUPS") {
		t.Fatalf("a member that is neither a name nor an ID: %v", err)
	}
}

func FuzzParseTemplates(f *testing.F) {
	f.Add(`{"g":{"name":"x","preset":"public_chat","power_levels":{"users":{"@a:hs":50}}}}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, data string) {
		tpls, err := ParseTemplates([]byte(data))
		if err != nil {
			return
		}
		for name, tpl := range tpls {
			if tpl.Check() != nil || name == "" {
				t.Fatalf("accepted an invalid template %q: %+v", name, tpl)
			}
			_ = tpl.Merge(tpl)
		}
	})
}

func FuzzGroups(f *testing.F) {
	f.Add("announce=general,garden;family=kitchen")
	f.Fuzz(func(t *testing.T, text string) {
		var g Groups
		if g.UnmarshalText([]byte(text)) != nil {
			return
		}
		for name, members := range g {
			if name == "" || name == "*" || len(members) == 0 {
				t.Fatalf("accepted group %q = %v", name, members)
			}
			for _, m := range members {
				if m == "" || strings.ContainsAny(m, ",;") {
					t.Fatalf("member %q of %q", m, name)
				}
			}
		}
	})
}

// TestYAMLTemplates: a .yaml file is read with the same strict checks as JSON.
func TestYAMLTemplates(t *testing.T) {
	tests := []struct {
		name, yaml, err string
	}{
		{"valid", "guests:\n  name: Guests\n  preset: private_chat\n  moderators: ['@p:hs']\n  power_levels:\n    users: {'@b:hs': 20}\n    kick: 50\n", ""},
		{"unknown field", "guests:\n  modrators: ['@p:hs']\n", "modrators"},
		{"bad preset", "guests:\n  preset: secret\n", "preset"},
		{"not YAML", "guests: [", "YAML"},
		{"a number key", "1: {}\n", "template"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			tpls, err := Config{TemplatesFile: path}.Templates(nil)
			if tc.err == "" {
				if err != nil || tpls["guests"].PowerLevels.Users["@b:hs"] != 20 || len(tpls["guests"].Moderators) != 1 {
					t.Fatalf("templates = %+v, %v", tpls, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "ROOM_TEMPLATES_FILE") {
				t.Fatalf("error = %v, want one naming ROOM_TEMPLATES_FILE and %q", err, tc.err)
			}
		})
	}
}

func FuzzYAMLTemplates(f *testing.F) {
	f.Add("guests:\n  name: Guests\n  invite: ['@a:hs']\n")
	f.Add("{}")
	f.Fuzz(func(t *testing.T, data string) {
		j, err := YAMLToJSON([]byte(data))
		if err != nil {
			return
		}
		if tpls, err := ParseTemplates(j); err == nil {
			for name, tpl := range tpls {
				if tpl.Check() != nil {
					t.Fatalf("accepted an invalid template %q", name)
				}
			}
		}
	})
}
