package inbound

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// FuzzParseCommand parses arbitrary chat messages with every valid COMMAND_PREFIX: it never
// panics; only a plain text message that is not an edit and starts with the prefix and a name
// right after it is a command; the name is lower case, valid as a command name and as a topic
// segment (it becomes `<base>/command/<name>`), and is the first word after the prefix; the
// arguments are the other words, none empty or with a space.
func FuzzParseCommand(f *testing.F) {
	msgtypes := []string{"m.text", "m.notice", "m.emote", "m.image", ""}
	f.Add("!", "!lights off", uint8(0), false)
	f.Add("!", "!Lights Kitchen  OFF\nnow", uint8(0), false)
	f.Add("bot:", "bot:küche an", uint8(0), false)
	f.Add("!", "! lights", uint8(0), false)
	f.Add("!", "!a/b +", uint8(0), false)
	f.Add("!", "!lights off", uint8(1), false)
	f.Add("!", "!lights off", uint8(0), true)
	f.Add("!", "!\u0130stanbul x", uint8(0), false)
	f.Add("!", "!\xffbad", uint8(0), false)
	f.Add("!", "!a\u00a0b\u2003c", uint8(2), false)
	f.Fuzz(func(t *testing.T, prefix, body string, msgtype uint8, edit bool) {
		if (CommandConfig{Prefix: prefix}).Validate(nil) != nil {
			return // COMMAND_PREFIX is checked at load
		}
		msg := &wire.Message{MsgType: msgtypes[int(msgtype)%len(msgtypes)], Body: body}
		if edit {
			msg.EditOf = "$old"
		}
		name, args, ok := parseCommand(prefix, msg)
		if !ok {
			if name != "" || args != nil {
				t.Fatalf("not a command, yet %q %q", name, args)
			}
			return
		}
		if msg.MsgType != "m.text" || edit {
			t.Fatalf("a %s message (edit %v) is a command", msg.MsgType, edit)
		}
		rest, found := strings.CutPrefix(body, prefix)
		if !found || rest == "" || unicode.IsSpace([]rune(rest)[0]) {
			t.Fatalf("%q is a command without the prefix %q and a name right after it", body, prefix)
		}
		words := strings.Fields(rest)
		if strings.ToLower(words[0]) != name {
			t.Fatalf("name %q, first word %q", name, words[0])
		}
		if !ValidCommandName(name) || strings.ToLower(name) != name || !utf8.ValidString(name) {
			t.Fatalf("name %q is not a lower case command name", name)
		}
		if err := mqtt.ValidateSegment(name); err != nil {
			t.Fatalf("name %q is no topic segment: %v", name, err)
		}
		if args == nil || len(args) != len(words)-1 {
			t.Fatalf("args %q, words %q", args, words)
		}
		for i, a := range args {
			if a != words[i+1] || a == "" || strings.ContainsFunc(a, unicode.IsSpace) {
				t.Fatalf("argument %d %q of %q", i, a, words)
			}
		}
	})
}
