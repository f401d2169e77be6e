package rooms_test

import (
	"context"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/actionstest"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// TestAdminPowerChecks: the bot refuses what its power level in the room does not allow before
// asking the homeserver, and does what it allows.
func TestAdminPowerChecks(t *testing.T) {
	const bot, mod, alice = id.UserID("@bot:hs"), id.UserID("@mod:hs"), id.UserID("@alice:hs")
	tests := []struct {
		name    string
		action  string
		payload string
		users   map[id.UserID]int
		code    string // empty: done
		mention string
		change  string
	}{
		{"kick a user below the bot", "kick", `{"room":"!r:hs","user":"@alice:hs"}`, map[id.UserID]int{bot: 50}, "", "", "kick @alice:hs"},
		{"kick an equal", "kick", `{"room":"!r:hs","user":"@mod:hs"}`, map[id.UserID]int{bot: 50, mod: 50}, wire.CodeNotAllowed, "not below the bot's 50", ""},
		{"kick without the kick level", "kick", `{"room":"!r:hs","user":"@alice:hs"}`, map[id.UserID]int{bot: 10}, wire.CodeNotAllowed, "kick needs 50", ""},
		{"invite at level 0", "invite", `{"room":"!r:hs","user":"@alice:hs"}`, nil, "", "", "invite @alice:hs"},
		{"ban an admin", "ban", `{"room":"!r:hs","user":"@mod:hs"}`, map[id.UserID]int{bot: 100, mod: 100}, wire.CodeNotAllowed, "not below", ""},
		{"unban", "unban", `{"room":"!r:hs","user":"@alice:hs"}`, map[id.UserID]int{bot: 100}, "", "", "unban @alice:hs"},
		{"moderator by role", "set_power_level", `{"room":"!r:hs","user":"@alice:hs","role":"moderator"}`, map[id.UserID]int{bot: 100}, "", "", "state m.room.power_levels"},
		{"above the bot", "set_power_level", `{"room":"!r:hs","user":"@alice:hs","level":75}`, map[id.UserID]int{bot: 50}, wire.CodeNotAllowed, "above the bot's own 50", ""},
		{"a user at the bot's level", "set_power_level", `{"room":"!r:hs","user":"@mod:hs","role":"user"}`, map[id.UserID]int{bot: 100, mod: 100}, wire.CodeNotAllowed, "cannot change it", ""},
		{"the bot itself", "set_power_level", `{"room":"!r:hs","user":"@bot:hs","role":"user"}`, map[id.UserID]int{bot: 100}, wire.CodeNotAllowed, "cannot change it", ""},
		{"set_room without power", "set_room", `{"room":"!r:hs","topic":"t"}`, nil, wire.CodeNotAllowed, "setting the topic needs 50", ""},
		{"set_room", "set_room", `{"room":"!r:hs","name":"n"}`, map[id.UserID]int{bot: 50}, "", "", "state m.room.name"},
		{"a room the bot is not in", "kick", `{"room":"!elsewhere:hs","user":"@alice:hs"}`, nil, wire.CodeUnknownTarget, "unknown target", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := &actionstest.Matrix{Admin: actionstest.Admin{Bot: bot, Power: map[id.RoomID]*event.PowerLevelsEventContent{
				"!r:hs": {Users: tc.users},
			}}}
			tg := targets.New(targets.Config{})
			req, werr := catalog.Default().Parse(tc.action, "", []byte(tc.payload), tg)
			if werr != nil {
				t.Fatal(werr)
			}
			_, err := req.(actions.Immediate).Run(context.Background(), &actions.Env{Matrix: hs, Targets: tg})
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if len(hs.Admin.Changes) != 1 || hs.Admin.Changes[0] != tc.change {
					t.Fatalf("changes = %v, want %q", hs.Admin.Changes, tc.change)
				}
				return
			}
			out := actions.Classify(err)
			if out.Err.Code != tc.code || !strings.Contains(out.Err.Message, tc.mention) {
				t.Fatalf("error = %v, want %s mentioning %q", out.Err, tc.code, tc.mention)
			}
			if len(hs.Admin.Changes) != 0 {
				t.Fatalf("changed %v despite the refusal", hs.Admin.Changes)
			}
		})
	}
}
