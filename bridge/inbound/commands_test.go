package inbound

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		name      string
		prefix    string
		msg       wire.Message
		command   string
		args      []string
		isCommand bool
	}{
		{"plain", "!", wire.Message{MsgType: "m.text", Body: "!lights off"}, "lights", []string{"off"}, true},
		{"no args", "!", wire.Message{MsgType: "m.text", Body: "!status"}, "status", []string{}, true},
		{"lower-cased name, args kept", "!", wire.Message{MsgType: "m.text", Body: "!Lights Kitchen  OFF"}, "lights", []string{"Kitchen", "OFF"}, true},
		{"multi-line", "!", wire.Message{MsgType: "m.text", Body: "!alarm arm\nnow"}, "alarm", []string{"arm", "now"}, true},
		{"long prefix", "bot:", wire.Message{MsgType: "m.text", Body: "bot:lights on"}, "lights", []string{"on"}, true},
		{"unicode name", "!", wire.Message{MsgType: "m.text", Body: "!küche an"}, "küche", []string{"an"}, true},
		{"no prefix", "!", wire.Message{MsgType: "m.text", Body: "lights off"}, "", nil, false},
		{"prefix alone", "!", wire.Message{MsgType: "m.text", Body: "!"}, "", nil, false},
		{"space after prefix", "!", wire.Message{MsgType: "m.text", Body: "! lights"}, "", nil, false},
		{"punctuation", "!", wire.Message{MsgType: "m.text", Body: "!!!"}, "", nil, false},
		{"topic character", "!", wire.Message{MsgType: "m.text", Body: "!a/b"}, "", nil, false},
		{"wildcard", "!", wire.Message{MsgType: "m.text", Body: "!lights+"}, "", nil, false},
		{"notice", "!", wire.Message{MsgType: "m.notice", Body: "!lights off"}, "", nil, false},
		{"emote", "!", wire.Message{MsgType: "m.emote", Body: "!lights off"}, "", nil, false},
		{"edit", "!", wire.Message{MsgType: "m.text", Body: "!lights off", EditOf: "$old"}, "", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			command, args, ok := parseCommand(tc.prefix, &tc.msg)
			if ok != tc.isCommand || command != tc.command || !slices.Equal(args, tc.args) || (ok && args == nil) {
				t.Fatalf("parseCommand(%q) = %q %#v %v, want %q %#v %v", tc.msg.Body, command, args, ok, tc.command, tc.args, tc.isCommand)
			}
		})
	}
}

func TestCommandConfigValidate(t *testing.T) {
	names := targets.Names{"kitchen": "!k:hs", "alice": "@alice:hs"}
	good := CommandConfig{Prefix: "!", Senders: []string{"@alice:hs"}, Rooms: []string{"kitchen", "!r:hs", "#a:hs", "@bob:hs"}, Names: []string{"lights", "alarm-2", "tv.off"}}
	tests := []struct {
		name    string
		mutate  func(*CommandConfig)
		setting string // the error must name it; empty means valid
	}{
		{"valid", func(*CommandConfig) {}, ""},
		{"empty allowlists", func(c *CommandConfig) { c.Senders, c.Rooms = nil, nil }, ""},
		{"empty prefix", func(c *CommandConfig) { c.Prefix = "" }, "COMMAND_PREFIX"},
		{"prefix with space", func(c *CommandConfig) { c.Prefix = "hey bot" }, "COMMAND_PREFIX"},
		{"sender without @", func(c *CommandConfig) { c.Senders = []string{"alice"} }, "COMMAND_SENDERS"},
		{"sender without server", func(c *CommandConfig) { c.Senders = []string{"@alice"} }, "COMMAND_SENDERS"},
		{"unknown room name", func(c *CommandConfig) { c.Rooms = []string{"garage"} }, "COMMAND_ROOMS"},
		{"upper-case command", func(c *CommandConfig) { c.Names = []string{"Lights"} }, "COMMANDS"},
		{"command with slash", func(c *CommandConfig) { c.Names = []string{"a/b"} }, "COMMANDS"},
		{"command starting with _", func(c *CommandConfig) { c.Names = []string{"_x"} }, "COMMANDS"},
		{"duplicate command", func(c *CommandConfig) { c.Names = []string{"a", "a"} }, "COMMANDS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			err := c.Validate(names)
			if tc.setting == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.setting) {
				t.Fatalf("validate() = %v, want an error naming %s", err, tc.setting)
			}
		})
	}
}

// fakeAliases resolves aliases from a map.
type fakeAliases map[string]id.RoomID

func (f fakeAliases) Resolve(_ context.Context, target string) (id.RoomID, error) {
	if r, ok := f[target]; ok {
		return r, nil
	}
	return "", errors.New("unknown alias")
}

func TestCommandFilterCheck(t *testing.T) {
	names := targets.Names{"kitchen": "!kitchen:hs", "hall": "#hall:hs", "alice": "@alice:hs"}
	aliases := fakeAliases{"#hall:hs": "!hall:hs", "#porch:hs": "!porch:hs"}
	joined := []wire.Room{{ID: "!dm:hs", IsDM: true, DMUser: "@alice:hs"}, {ID: "!hall:hs"}, {ID: "!porch:hs"}}
	cfg := CommandConfig{Prefix: "!", Senders: []string{"@alice:hs", "@bob:hs"}, Rooms: []string{"kitchen", "hall", "alice", "#porch:hs", "!garage:hs"}}
	msg := func(room id.RoomID, sender id.UserID, body string, verified bool) matrix.Event {
		return matrix.Event{Kind: wire.KindMessage, RoomID: room, ID: "$e", Payload: &wire.Message{
			EventID: "$e", RoomID: room, Sender: sender, SenderName: "Name", MsgType: "m.text", Body: body, SenderVerified: verified, Timestamp: 42,
		}}
	}
	tests := []struct {
		name string
		cfg  func(*CommandConfig)
		ev   matrix.Event
		want verdict
	}{
		{"friendly room ID", nil, msg("!kitchen:hs", "@alice:hs", "!lights off", false), accepted},
		{"friendly alias", nil, msg("!hall:hs", "@bob:hs", "!lights off", false), accepted},
		{"friendly user: the DM", nil, msg("!dm:hs", "@alice:hs", "!lights off", false), accepted},
		{"raw alias", nil, msg("!porch:hs", "@alice:hs", "!lights off", false), accepted},
		{"raw room ID", nil, msg("!garage:hs", "@alice:hs", "!lights off", false), accepted},
		{"other room", nil, msg("!cellar:hs", "@alice:hs", "!lights off", false), notCommand},
		{"other sender", nil, msg("!kitchen:hs", "@eve:hs", "!lights off", false), refusedSender},
		{"not a command", nil, msg("!kitchen:hs", "@eve:hs", "lights off", false), notCommand},
		{"unverified", func(c *CommandConfig) { c.VerifiedOnly = true }, msg("!kitchen:hs", "@alice:hs", "!lights off", false), refusedUnverified},
		{"verified", func(c *CommandConfig) { c.VerifiedOnly = true }, msg("!kitchen:hs", "@alice:hs", "!lights off", true), accepted},
		{"other sender, verified only", func(c *CommandConfig) { c.VerifiedOnly = true }, msg("!kitchen:hs", "@eve:hs", "!lights off", true), refusedSender},
		{"no senders: off", func(c *CommandConfig) { c.Senders = nil }, msg("!kitchen:hs", "@alice:hs", "!lights off", false), notCommand},
		{"no rooms: off", func(c *CommandConfig) { c.Rooms = nil }, msg("!kitchen:hs", "@alice:hs", "!lights off", false), notCommand},
		{"reaction", nil, matrix.Event{Kind: wire.KindReaction, RoomID: "!kitchen:hs", Payload: &wire.Reaction{Key: "!x"}}, notCommand},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			tg := targets.New(targets.Config{Names: names}, c.Rooms...)
			tg.Learn(context.Background(), joined, aliases)
			cmd, v := NewCommands(c, tg).check(tc.ev)
			if v != tc.want {
				t.Fatalf("verdict = %d, want %d", v, tc.want)
			}
			if v != notCommand && (cmd == nil || cmd.Command != "lights" || cmd.RoomID != tc.ev.RoomID || cmd.EventID != "$e") {
				t.Fatalf("command = %+v", cmd)
			}
		})
	}
}

func TestCommandReaction(t *testing.T) {
	cmd := &wire.Command{RoomID: "!r:hs", EventID: "$e"}
	f := NewCommands(CommandConfig{React: true}, nil)
	tests := []struct {
		v   verdict
		key string
	}{{accepted, "✅"}, {refusedSender, "⛔"}, {refusedUnverified, "⛔"}, {notCommand, ""}}
	for _, tc := range tests {
		job, ok := f.reaction(cmd, tc.v)
		if tc.key == "" {
			if ok {
				t.Fatalf("reaction to a non-command: %+v", job)
			}
			continue
		}
		r := job.Request.(*actions.CommandReact)
		if job.Action != actions.ActionCommandReact || r.Lane() != "!r:hs" || r.Key != tc.key || r.EventID != "$e" || r.ExpireAfter() == 0 {
			t.Fatalf("verdict %d: job %+v request %+v", tc.v, job, r)
		}
		if again, _ := f.reaction(cmd, tc.v); again.TxnID != job.TxnID {
			t.Fatal("the transaction ID differs between two hand-overs of the same event")
		}
	}
	if _, ok := NewCommands(CommandConfig{}, nil).reaction(cmd, accepted); ok {
		t.Fatal("reaction with COMMAND_REACT off")
	}
}

func TestEntityEvent(t *testing.T) {
	msg := &wire.Message{EventID: "$m", RoomID: "!r:hs", Sender: "@a:hs", MsgType: "m.text", Body: "hi"}
	tests := []struct {
		name string
		ev   matrix.Event
		cmd  *wire.Command
		cb   *wire.Callback
		want string // fields the payload starts with
	}{
		{"message", matrix.Event{Kind: wire.KindMessage, Payload: msg}, nil, nil, `{"event_type":"message","event_id":"$m","room_id":"!r:hs"`},
		{"command", matrix.Event{Kind: wire.KindMessage, Payload: msg}, &wire.Command{Command: "lights", Args: []string{}}, nil, `{"event_type":"command","command":"lights","args":[]`},
		{"reaction", matrix.Event{Kind: wire.KindReaction, Payload: &wire.Reaction{EventID: "$x", Key: "👍"}}, nil, nil, `{"event_type":"reaction","event_id":"$x"`},
		{"redaction", matrix.Event{Kind: wire.KindRedaction, Payload: &wire.Redaction{EventID: "$x"}}, nil, nil, `null`},
		{"callback", matrix.Event{Kind: wire.KindReaction, Payload: &wire.Reaction{EventID: "$x", Key: "👍"}}, nil,
			&wire.Callback{EventID: "$m", Option: "👍"}, `{"event_type":"callback","event_id":"$m"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(entityEvent(tc.ev, tc.cmd, tc.cb))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(got), tc.want) {
				t.Fatalf("payload = %s, want it to start with %s", got, tc.want)
			}
		})
	}
}
