package targets

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

func TestNamesUnmarshal(t *testing.T) {
	tests := []struct {
		name, text string
		want       Names
		fails      bool
	}{
		{"pairs", "kitchen=!k:hs, alice=@alice:hs,hall=#hall:hs", Names{"kitchen": "!k:hs", "alice": "@alice:hs", "hall": "#hall:hs"}, false},
		{"empty", "", Names{}, false},
		{"no equals", "kitchen", nil, true},
		{"bad target", "kitchen=abc", nil, true},
		{"topic character in name", "a/b=!x:hs", nil, true},
		{"twice", "a=!x:hs,a=!y:hs", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var n Names
			err := n.UnmarshalText([]byte(tc.text))
			if tc.fails != (err != nil) {
				t.Fatalf("UnmarshalText = %v", err)
			}
			if !tc.fails && len(n) != len(tc.want) {
				t.Fatalf("names = %v, want %v", n, tc.want)
			}
			for k, v := range tc.want {
				if n[k] != v {
					t.Fatalf("names = %v, want %v", n, tc.want)
				}
			}
		})
	}
}

func FuzzNamesUnmarshal(f *testing.F) {
	f.Add("kitchen=!k:hs,alice=@alice:hs")
	f.Fuzz(func(t *testing.T, text string) {
		var n Names
		if n.UnmarshalText([]byte(text)) != nil {
			return
		}
		for name, target := range n {
			if ValidateID(target) != nil || name == "" {
				t.Fatalf("accepted %q=%q", name, target)
			}
		}
	})
}

func TestCheck(t *testing.T) {
	open := New(Config{Names: Names{"kitchen": "!k:hs", "alice": "@alice:hs"}})
	locked := New(Config{Names: Names{"kitchen": "!k:hs", "alice": "@alice:hs", "cellar": "!c:hs"},
		Allowed: []string{"kitchen", "@alice:hs", "#hall:hs"}})
	locked.Remember("#hall:hs", "!h:hs") // the alias was resolved
	tests := []struct {
		name     string
		t        *Targets
		check    func(*Targets) (string, *wire.Error)
		expanded string
		code     string
	}{
		{"friendly name", open, func(t *Targets) (string, *wire.Error) { return t.Check("to", "kitchen") }, "!k:hs", ""},
		{"room ID", open, func(t *Targets) (string, *wire.Error) { return t.Check("to", "!x:hs") }, "!x:hs", ""},
		{"empty", open, func(t *Targets) (string, *wire.Error) { return t.Check("to", "") }, "", wire.CodeInvalidRequest},
		{"unknown name", open, func(t *Targets) (string, *wire.Error) { return t.Check("to", "garage") }, "", wire.CodeUnknownTarget},
		{"NUL", open, func(t *Targets) (string, *wire.Error) { return t.Check("to", "!a\x00:hs") }, "", wire.CodeUnknownTarget},
		{"room field with a user", open, func(t *Targets) (string, *wire.Error) { return t.CheckRoom("room", "alice") }, "", wire.CodeInvalidRequest},
		{"user field with a room", open, func(t *Targets) (string, *wire.Error) {
			u, err := t.CheckUser("user", "kitchen")
			return string(u), err
		}, "", wire.CodeInvalidRequest},
		{"user by name", open, func(t *Targets) (string, *wire.Error) {
			u, err := t.CheckUser("user", "alice")
			return string(u), err
		}, "@alice:hs", ""},
		{"allowed by name", locked, func(t *Targets) (string, *wire.Error) { return t.Check("to", "kitchen") }, "!k:hs", ""},
		{"allowed by what the name stands for", locked, func(t *Targets) (string, *wire.Error) { return t.Check("to", "!k:hs") }, "!k:hs", ""},
		{"allowed user through its name", locked, func(t *Targets) (string, *wire.Error) { return t.Check("to", "alice") }, "@alice:hs", ""},
		{"allowed alias", locked, func(t *Targets) (string, *wire.Error) { return t.CheckRoom("room", "#hall:hs") }, "#hall:hs", ""},
		{"allowed by the room an alias resolved to", locked, func(t *Targets) (string, *wire.Error) { return t.Check("to", "!h:hs") }, "!h:hs", ""},
		{"name not allowed", locked, func(t *Targets) (string, *wire.Error) { return t.Check("to", "cellar") }, "", wire.CodeNotAllowed},
		{"room not allowed", locked, func(t *Targets) (string, *wire.Error) { return t.Check("to", "!c:hs") }, "", wire.CodeNotAllowed},
		{"user not allowed", locked, func(t *Targets) (string, *wire.Error) {
			u, err := t.CheckUser("user", "@bob:hs")
			return string(u), err
		}, "", wire.CodeNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.check(tc.t)
			if tc.code != "" {
				if err == nil || err.Code != tc.code {
					t.Fatalf("error = %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil || got != tc.expanded {
				t.Fatalf("= %q, %v; want %q", got, err, tc.expanded)
			}
		})
	}
}

type aliases map[string]id.RoomID

func (a aliases) Resolve(_ context.Context, target string) (id.RoomID, error) {
	if r, ok := a[target]; ok {
		return r, nil
	}
	return "", errors.New("no such alias")
}

// TestLearnAndKeys: friendly names key their rooms (the first name in order when several share
// one), watched targets are found too, and what cannot be resolved is not made up.
func TestLearnAndKeys(t *testing.T) {
	tg := New(Config{Names: Names{"kitchen": "!k:hs", "cuisine": "!k:hs", "hall": "#hall:hs", "alice": "@alice:hs"}}, "#porch:hs", "@bob:hs", "#gone:hs")
	rooms := []wire.Room{{ID: "!dm:hs", IsDM: true, DMUser: "@alice:hs"}, {ID: "!h:hs"}}
	tg.Learn(context.Background(), rooms, aliases{"#hall:hs": "!h:hs", "#porch:hs": "!p:hs"})
	tests := []struct {
		room id.RoomID
		key  string
	}{{"!k:hs", "cuisine"}, {"!h:hs", "hall"}, {"!dm:hs", "alice"}, {"!p:hs", "!p:hs"}, {"!a/b+c:hs", "!a_b_c:hs"}}
	for _, tc := range tests {
		if got := tg.Key(tc.room); got != tc.key {
			t.Errorf("Key(%s) = %q, want %q", tc.room, got, tc.key)
		}
	}
	for target, want := range map[string]id.RoomID{"#porch:hs": "!p:hs", "hall": "!h:hs", "@alice:hs": "!dm:hs", "!x:hs": "!x:hs"} {
		if got, ok := tg.RoomOf(target); !ok || got != want {
			t.Errorf("RoomOf(%s) = %s, %v; want %s", target, got, ok, want)
		}
	}
	for _, target := range []string{"@bob:hs", "#gone:hs"} {
		if got, ok := tg.RoomOf(target); ok {
			t.Errorf("RoomOf(%s) = %s for a target with no room", target, got)
		}
	}

	// The rooms of ALLOWED_TARGETS are learned too: their room IDs are allowed before any
	// request named the alias or the user.
	locked := New(Config{Allowed: []string{"#porch:hs", "@alice:hs"}})
	locked.Learn(context.Background(), rooms, aliases{"#porch:hs": "!p:hs"})
	for _, room := range []string{"!p:hs", "!dm:hs"} {
		if _, err := locked.Check("to", room); err != nil {
			t.Errorf("the room %s of an ALLOWED_TARGETS entry is refused: %v", room, err)
		}
	}
}

// TestRuntimeKeys: a key given at runtime works like a friendly name and becomes the room's topic
// key, but never takes a TARGETS name nor one already given.
func TestRuntimeKeys(t *testing.T) {
	tg := New(Config{Names: Names{"kitchen": "!k:hs", "hall": "!h:hs"}})
	tests := []struct {
		name, key string
		code      string
	}{
		{"fresh", "guests", ""},
		{"a TARGETS name", "kitchen", wire.CodeInvalidRequest},
		{"bad shape", "a/b", wire.CodeInvalidRequest},
		{"empty", "", wire.CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tg.CheckKey("key", tc.key)
			if (err == nil) != (tc.code == "") || (err != nil && err.Code != tc.code) {
				t.Fatalf("CheckKey(%q) = %v, want %q", tc.key, err, tc.code)
			}
		})
	}
	if !tg.Define("guests", "!g:hs") {
		t.Fatal("guests not defined")
	}
	if tg.Define("kitchen", "!other:hs") {
		t.Fatal("a runtime key took a TARGETS name")
	}
	if got, _ := tg.Check("to", "kitchen"); got != "!k:hs" {
		t.Fatalf("kitchen = %s: TARGETS must win", got)
	}
	if got, err := tg.Check("to", "guests"); err != nil || got != "!g:hs" {
		t.Fatalf("guests = %s, %v", got, err)
	}
	if key := tg.Key("!g:hs"); key != "guests" {
		t.Fatalf("topic key = %s", key)
	}
	if err := tg.CheckKey("key", "guests"); err == nil {
		t.Fatal("a key given twice")
	}
	if tg.Define("hallway", "!h:hs"); tg.Key("!h:hs") != "hall" {
		t.Fatalf("a runtime key replaced the TARGETS topic key: %s", tg.Key("!h:hs"))
	}
}

// TestUpgrade: an upgraded room's requests, topic key and runtime keys go to its replacement,
// through a chain of upgrades, and a cycle does not hang.
func TestUpgrade(t *testing.T) {
	tg := New(Config{Names: Names{"garden": "!old:hs"}})
	tg.Define("patio", "!old:hs")
	tg.Upgrade("!old:hs", "!mid:hs")
	tg.Upgrade("!mid:hs", "!new:hs")
	if got := tg.Follow("!old:hs"); got != "!new:hs" {
		t.Fatalf("Follow(old) = %s", got)
	}
	if got := tg.Follow("!other:hs"); got != "!other:hs" {
		t.Fatalf("Follow(other) = %s", got)
	}
	if key := tg.Key("!new:hs"); key != "garden" {
		t.Fatalf("topic key of the new room = %s", key)
	}
	if got, _ := tg.Check("to", "patio"); got != "!new:hs" {
		t.Fatalf("runtime key = %s", got)
	}
	if room, _ := tg.RoomOf("garden"); room != "!new:hs" {
		t.Fatalf("RoomOf(garden) = %s", room)
	}
	listed := tg.Annotate([]wire.Room{{ID: "!old:hs"}, {ID: "!mid:hs"}, {ID: "!new:hs"}, {ID: "!other:hs"}})
	if len(listed) != 2 || listed[0].ID != "!new:hs" || listed[0].Key != "garden" || listed[1].ID != "!other:hs" {
		t.Fatalf("rooms listed after the upgrades: %+v", listed)
	}
	tg.Upgrade("!new:hs", "!old:hs") // a cycle
	_ = tg.Follow("!old:hs")

	allow := New(Config{Names: Names{"garden": "!a:hs"}, Allowed: []string{"garden", "!b:hs"}})
	allow.Upgrade("!a:hs", "!a2:hs")
	allow.Upgrade("!b:hs", "!b2:hs")
	for _, target := range []string{"!a2:hs", "!b2:hs"} {
		if _, err := allow.Check("to", target); err != nil {
			t.Fatalf("the replacement %s of an allowed room is refused: %v", target, err)
		}
	}
	if _, err := allow.Check("to", "!c:hs"); err == nil {
		t.Fatal("a room outside ALLOWED_TARGETS is allowed")
	}
}
