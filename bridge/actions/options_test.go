package actions_test

import (
	"context"
	"encoding/json"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/actionstest"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

var optionTargets = targets.New(targets.Config{Names: targets.Names{"k": "!k:hs", "bob": "@bob:hs"}})

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name, payload string
		code          string // empty: valid
		mention       string
	}{
		{"two options", `{"to":"k","text":"Close?","options":[{"key":"👍","label":"Yes"},{"key":"👎","label":"No"}],"single_use":true}`, "", ""},
		{"options_from by friendly name", `{"to":"k","text":"?","options":[{"key":"✅","label":"Yes"}],"options_from":["bob","@carol:hs"]}`, "", ""},
		{"ZWJ, skin tone, flag and keycap keys", `{"to":"k","text":"?","options":[{"key":"👩‍🚒","label":"a"},{"key":"👍🏽","label":"b"},{"key":"🇳🇱","label":"c"},{"key":"1️⃣","label":"d"},{"key":"❤️","label":"e"}]}`, "", ""},
		{"key not an emoji", `{"to":"k","text":"?","options":[{"key":"yes","label":"Yes"}]}`, wire.CodeInvalidRequest, "options[0].key' must be a single emoji"},
		{"two emoji in a key", `{"to":"k","text":"?","options":[{"key":"👍👍","label":"Yes"}]}`, wire.CodeInvalidRequest, "single emoji"},
		{"empty key", `{"to":"k","text":"?","options":[{"label":"Yes"}]}`, wire.CodeInvalidRequest, "single emoji"},
		{"repeated key", `{"to":"k","text":"?","options":[{"key":"👍","label":"Yes"},{"key":"👍","label":"Sure"}]}`, wire.CodeInvalidRequest, "repeats"},
		{"no label", `{"to":"k","text":"?","options":[{"key":"👍"}]}`, wire.CodeInvalidRequest, "options[0].label"},
		{"label with a newline", `{"to":"k","text":"?","options":[{"key":"👍","label":"a\nb"}]}`, wire.CodeInvalidRequest, "one line"},
		{"label too long", `{"to":"k","text":"?","options":[{"key":"👍","label":"` + strings.Repeat("x", actions.MaxOptionLabel+1) + `"}]}`, wire.CodeTooLarge, "label"},
		{"too many", `{"to":"k","text":"?","options":[` + strings.TrimSuffix(strings.Repeat(`{"key":"👍","label":"x"},`, actions.MaxOptions+1), ",") + `]}`, wire.CodeInvalidRequest, "at most 10"},
		{"options not a list", `{"to":"k","text":"?","options":"👍"}`, wire.CodeInvalidRequest, "'options'"},
		{"options_from without options", `{"to":"k","text":"?","options_from":["@a:hs"]}`, wire.CodeInvalidRequest, "need 'options'"},
		{"single_use without options", `{"to":"k","text":"?","single_use":true}`, wire.CodeInvalidRequest, "need 'options'"},
		{"options_from not a user", `{"to":"k","text":"?","options":[{"key":"👍","label":"a"}],"options_from":["!room:hs"]}`, wire.CodeInvalidRequest, "'options_from'"},
		{"options with edit", `{"to":"k","text":"?","edit":"$e","options":[{"key":"👍","label":"a"}]}`, wire.CodeInvalidRequest, "'edit'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := catalog.Default().Parse("send", "", []byte(tc.payload), optionTargets)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || err.Code != tc.code || !strings.Contains(err.Message, tc.mention) {
				t.Fatalf("error = %v, want %s mentioning %q", err, tc.code, tc.mention)
			}
		})
	}
}

func TestIsSingleEmoji(t *testing.T) {
	tests := []struct {
		name, key string
		want      bool
	}{
		{"thumbs up", "👍", true},
		{"heart with selector", "❤️", true},
		{"check mark", "✅", true},
		{"skin tone", "👍🏿", true},
		{"ZWJ family", "👨‍👩‍👧", true},
		{"flag", "🇩🇪", true},
		{"subdivision flag", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", true},
		{"keycap", "#️⃣", true},
		{"letters", "ok", false},
		{"digit", "1", false},
		{"two emoji", "👍👎", false},
		{"emoji and text", "👍 yes", false},
		{"dangling ZWJ", "👍\u200d", false},
		{"lone skin tone", "🏽", false},
		{"one regional indicator", "🇩", false},
		{"empty", "", false},
		{"invalid UTF-8", "\xff", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := actions.IsSingleEmoji(tc.key); got != tc.want {
				t.Fatalf("IsSingleEmoji(%q) = %v", tc.key, got)
			}
		})
	}
}

func FuzzIsSingleEmoji(f *testing.F) {
	for _, s := range []string{"👍", "❤️", "👨‍👩‍👧", "🇩🇪", "#️⃣", "ok", "👍👎"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if actions.IsSingleEmoji(s) && (strings.ContainsAny(s, " \n/#+") && !strings.HasPrefix(s, "#") || len(s) > 64) {
			t.Fatalf("accepted %q", s)
		}
	})
}

// memProgress keeps a delivery's progress in memory.
type memProgress struct{ raw []byte }

func (p *memProgress) Load(v any) (bool, error) {
	if p.raw == nil {
		return false, nil
	}
	return true, json.Unmarshal(p.raw, v)
}

func (p *memProgress) Save(_ context.Context, v any) (err error) {
	p.raw, err = json.Marshal(v)
	return err
}

// TestSendWithOptions: the message lists the options, is remembered before the bot reacts with
// each key, and a retry after a failed reaction neither sends the message again nor reacts twice.
func TestSendWithOptions(t *testing.T) {
	req, perr := catalog.Default().Parse("send", "", []byte(`{"id":"q","to":"!k:hs","markdown":"Garage **open**","options":[{"key":"👍","label":"Close it"},{"key":"👎","label":"Leave <it>"}],"options_from":["bob"],"single_use":true}`), optionTargets)
	if perr != nil {
		t.Fatal(perr)
	}
	send := req.(actions.Durable)
	fake := &actionstest.Matrix{Errs: []error{nil, nil, context.DeadlineExceeded}}
	opts := &actionstest.Memory{}
	progress := &memProgress{}
	d := func() *actions.Delivery {
		return &actions.Delivery{Env: actions.Env{Matrix: fake, Targets: optionTargets, Options: opts, Tags: opts},
			Target: send.Lane(), TxnID: "t", Now: time.Now(), Progress: progress}
	}
	if _, err := send.Deliver(context.Background(), d()); err == nil {
		t.Fatal("the scripted failure of the second reaction did not fail the delivery")
	}
	data, err := send.Deliver(context.Background(), d())
	if err != nil {
		t.Fatal(err)
	}
	if got := data.(actions.SendResult).EventID; got != "$t" {
		t.Fatalf("event_id = %s", got)
	}
	if got := strings.Join(fake.Sent, ","); got != "t,t.1,t.2" {
		t.Fatalf("sent %s, want the message once and each reaction once", got)
	}
	msg := fake.Contents[0].(*event.MessageEventContent)
	if !strings.HasSuffix(msg.Body, "\n👍 Close it\n👎 Leave <it>") || !strings.Contains(msg.FormattedBody, "<li>👎 Leave &lt;it&gt;</li>") ||
		!strings.Contains(msg.FormattedBody, "<strong>open</strong>") {
		t.Fatalf("content %q / %q", msg.Body, msg.FormattedBody)
	}
	if r := fake.Contents[2].(*event.ReactionEventContent); r.RelatesTo.EventID != "$t" || r.RelatesTo.Key != "👎" {
		t.Fatalf("reaction %+v", r.RelatesTo)
	}
	last := opts.Saved[len(opts.Saved)-1]
	if opts.Saved[0].EventID != "$t" || last.Reactions["👍"] != "$t.1" || last.Reactions["👎"] != "$t.2" ||
		!last.SingleUse || last.RequestID != "q" || len(last.Allowed) != 1 || last.Allowed[0] != "@bob:hs" || last.Body != "Garage **open**" {
		t.Fatalf("saved %+v", opts.Saved)
	}
}

// TestCloseOptions: the bot's reactions are redacted once each, then the message is edited.
func TestCloseOptions(t *testing.T) {
	fake := &actionstest.Matrix{Errs: []error{nil, context.DeadlineExceeded}}
	progress := &memProgress{}
	req := &actions.CloseOptions{RoomID: "!k:hs", EventID: "$m", Reactions: []id.EventID{"$r1", "$r2"},
		Body: "Garage open", HTML: "Garage open", Closed: "✅ Closed by Bob: 👍 Close it"}
	d := &actions.Delivery{Env: actions.Env{Matrix: fake}, TxnID: "c", Progress: progress}
	if _, err := req.Deliver(context.Background(), d); err == nil {
		t.Fatal("the scripted failure did not fail the delivery")
	}
	if _, err := req.Deliver(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if got := fake.Redacted; len(got) != 2 || got[0] != "$r1" || got[1] != "$r2" {
		t.Fatalf("redacted %v", got)
	}
	edit := fake.Contents[0].(*event.MessageEventContent)
	if fake.Sent[0] != "c.2" || edit.RelatesTo.GetReplaceID() != "$m" || edit.NewContent.Body != "Garage open\n\n✅ Closed by Bob: 👍 Close it" {
		t.Fatalf("edit %s %+v", fake.Sent, edit.NewContent)
	}
}

// TestCloseOptionsKeepsMessage: the closing edit keeps the message's msgtype and file; one
// queued before the content was kept is a text message.
func TestCloseOptionsKeepsMessage(t *testing.T) {
	tests := []struct {
		name, body, content string
		msgtype             event.MessageType
		wantBody, wantURL   string
	}{
		{"queued before v7", "Garage open", "", event.MsgText, "Garage open\n\n✅ Closed", ""},
		{"notice", "Garage open", `{"msgtype":"m.notice","body":"Garage open","m.mentions":{"room":true}}`, event.MsgNotice, "Garage open\n\n✅ Closed", ""},
		{"image without caption", "", `{"msgtype":"m.image","body":"","filename":"door.jpg","url":"mxc://hs/door","info":{"mimetype":"image/jpeg"}}`,
			event.MsgImage, "✅ Closed", "mxc://hs/door"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := &actionstest.Matrix{}
			req := &actions.CloseOptions{RoomID: "!k:hs", EventID: "$m", Body: tc.body, Content: json.RawMessage(tc.content), Closed: "✅ Closed"}
			if _, err := req.Deliver(context.Background(), &actions.Delivery{Env: actions.Env{Matrix: fake}, TxnID: "c", Progress: &memProgress{}}); err != nil {
				t.Fatal(err)
			}
			nc := fake.Contents[0].(*event.MessageEventContent).NewContent
			if nc.MsgType != tc.msgtype || nc.Body != tc.wantBody || string(nc.URL) != tc.wantURL || nc.Mentions == nil || nc.Mentions.Room {
				t.Fatalf("new content %+v", nc)
			}
		})
	}
}
