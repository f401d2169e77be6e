package actions_test

import (
	"context"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/actionstest"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

func TestParseLive(t *testing.T) {
	tests := []struct {
		name, action, payload string
		code                  string // empty: valid
		mention               string
	}{
		{"tag", "send", `{"to":"k","text":"a","tag":"washer.1:x-y_z"}`, "", ""},
		{"edit last", "send", `{"to":"k","text":"a","edit":"last"}`, "", ""},
		{"priorities", "send", `{"to":"k","text":"a","priority":"urgent"}`, "", ""},
		{"tag with a slash", "send", `{"to":"k","text":"a","tag":"a/b"}`, wire.CodeInvalidRequest, "'tag' may hold"},
		{"tag with a space", "send", `{"to":"k","text":"a","tag":"a b"}`, wire.CodeInvalidRequest, "'tag' may hold"},
		{"tag too long", "send", `{"to":"k","text":"a","tag":"` + strings.Repeat("t", 65) + `"}`, wire.CodeInvalidRequest, "longer than 64"},
		{"tag and edit", "send", `{"to":"k","text":"a","tag":"t","edit":"$e"}`, wire.CodeInvalidRequest, "'tag' cannot be combined"},
		{"tag and options", "send", `{"to":"k","text":"a","tag":"t","options":[{"key":"👍","label":"a"}]}`, wire.CodeInvalidRequest, "'options' cannot"},
		{"edit neither an event nor last", "send", `{"to":"k","text":"a","edit":"latest"}`, wire.CodeInvalidRequest, "'edit'"},
		{"bad priority", "send", `{"to":"k","text":"a","priority":"loud"}`, wire.CodeInvalidRequest, "'priority'"},
		{"at", "send", `{"to":"k","text":"a","at":"2030-01-01T07:00:00+01:00"}`, "", ""},
		{"delay_s", "send", `{"to":"k","text":"a","delay_s":30}`, "", ""},
		{"at not RFC 3339", "send", `{"to":"k","text":"a","at":"tomorrow 7am"}`, wire.CodeInvalidRequest, "RFC 3339"},
		{"at and delay_s", "send", `{"to":"k","text":"a","at":"2030-01-01T07:00:00Z","delay_s":5}`, wire.CodeInvalidRequest, "cannot be combined"},
		{"negative delay_s", "send", `{"to":"k","text":"a","delay_s":-1}`, wire.CodeInvalidRequest, "'delay_s'"},
		{"outbox_cancel", "outbox_cancel", `{"request_id":"x"}`, "", ""},
		{"outbox_cancel without request_id", "outbox_cancel", `{}`, wire.CodeInvalidRequest, "'request_id' is required"},
		{"clear_tag", "clear_tag", `{"to":"k","tag":"washer"}`, "", ""},
		{"clear_tag without tag", "clear_tag", `{"to":"k"}`, wire.CodeInvalidRequest, "'tag' is required"},
		{"clear_tag with a plus", "clear_tag", `{"to":"k","tag":"a+"}`, wire.CodeInvalidRequest, "'tag' may hold"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := catalog.Default().Parse(tc.action, "", []byte(tc.payload), optionTargets)
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

// liveEnv delivers requests like the outbox does, one entry (transaction ID, progress) each.
type liveEnv struct {
	t    *testing.T
	hs   *actionstest.Matrix
	mem  *actionstest.Memory
	now  time.Time
	n    int
	live actions.LiveConfig
}

func newLiveEnv(t *testing.T) *liveEnv {
	return &liveEnv{t: t, hs: &actionstest.Matrix{MemberList: []id.UserID{"@a:hs", "@b:hs"}}, mem: &actionstest.Memory{},
		now: time.Unix(1700000000, 0), live: actions.LiveConfig{TagMaxAge: time.Hour,
			PriorityLow: []string{"notice"}, PriorityHigh: []string{"members"}, PriorityUrgent: []string{"room"}}}
}

func (e *liveEnv) deliver(action, payload string) (any, error) {
	e.t.Helper()
	req, perr := catalog.Default().Parse(action, "", []byte(payload), optionTargets)
	if perr != nil {
		e.t.Fatal(perr)
	}
	e.n++
	d := &actions.Delivery{Env: actions.Env{Matrix: e.hs, Targets: optionTargets, Options: e.mem, Tags: e.mem, Live: e.live},
		Target: req.(actions.Durable).Lane(), TxnID: "t" + string(rune('0'+e.n)), Now: e.now, Progress: &memProgress{}}
	data, err := req.(actions.Durable).Deliver(context.Background(), d)
	for _, sent := range d.Sent() { // as the outbox's Finish does
		_ = e.mem.RecordSent(context.Background(), sent.RoomID, sent.EventID, sent.RequestID, sent.SentAt)
	}
	return data, err
}

func (e *liveEnv) lastContent() *event.MessageEventContent {
	return e.hs.Contents[len(e.hs.Contents)-1].(*event.MessageEventContent)
}

// TestTagEditsInPlace: the first send with a tag is a new message, the next ones edit it until
// TAG_MAX_AGE passed; another room or tag has its own message; "edit": "last" edits the last
// new message; clear_tag redacts the tag's message and forgets it.
func TestTagEditsInPlace(t *testing.T) {
	e := newLiveEnv(t)
	steps := []struct {
		name, action, payload string
		advance               time.Duration
		editOf                id.EventID // the edit's target; empty: a new message
	}{
		{"first", "send", `{"to":"k","text":"1","tag":"w"}`, 0, ""},
		{"second edits it", "send", `{"to":"k","text":"2","tag":"w"}`, time.Minute, "$t1"},
		{"another tag", "send", `{"to":"k","text":"x","tag":"v"}`, 0, ""},
		{"another room", "send", `{"to":"!other:hs","text":"x","tag":"w"}`, 0, ""},
		{"third edits the first", "send", `{"to":"k","text":"3","tag":"w"}`, 0, "$t1"},
		{"too old: a new message", "send", `{"to":"k","text":"4","tag":"w"}`, time.Hour, ""},
		{"then edits that one", "send", `{"to":"k","text":"5","tag":"w"}`, 0, "$t6"},
		{"edit last", "send", `{"to":"k","text":"6","edit":"last"}`, 0, "$t6"},
		{"explicit edit", "send", `{"to":"k","text":"6","edit":"$x"}`, 0, "$x"},
	}
	for _, s := range steps {
		e.now = e.now.Add(s.advance)
		data, err := e.deliver(s.action, s.payload)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		res := data.(actions.LiveResult)
		c := e.lastContent()
		if res.EditOf != s.editOf || c.RelatesTo.GetReplaceID() != s.editOf {
			t.Fatalf("%s: edit_of %q / relation %q, want %q", s.name, res.EditOf, c.RelatesTo.GetReplaceID(), s.editOf)
		}
		if s.editOf != "" && (c.NewContent == nil || c.NewContent.NewContent != nil || c.NewContent.Body != strings.TrimPrefix(c.Body, "* ")) {
			t.Fatalf("%s: not one edit: %+v", s.name, c)
		}
	}
	data, err := e.deliver("clear_tag", `{"to":"k","tag":"w"}`)
	if err != nil || data.(actions.ClearResult).Redacted != "$t6" || e.hs.Redacted[0] != "$t6" {
		t.Fatalf("clear_tag: %+v, %v, redacted %v", data, err, e.hs.Redacted)
	}
	if data, err := e.deliver("clear_tag", `{"to":"k","tag":"w"}`); err != nil || data.(actions.ClearResult).Cleared {
		t.Fatalf("clear_tag again: %+v, %v", data, err)
	}
	if data, _ := e.deliver("send", `{"to":"k","text":"7","tag":"w"}`); data.(actions.LiveResult).EditOf != "" {
		t.Fatal("a cleared tag was edited")
	}
}

func TestEditLastWithoutMessage(t *testing.T) {
	e := newLiveEnv(t)
	_, err := e.deliver("send", `{"to":"k","text":"a","edit":"last"}`)
	if out := actions.Classify(err); out.Retry || out.Err.Code != wire.CodeInvalidRequest {
		t.Fatalf("error %v classified %+v", err, out)
	}
}

func TestPriority(t *testing.T) {
	tests := []struct {
		name, payload string
		msgtype       event.MessageType
		users         []id.UserID
		room          bool
	}{
		{"none", `{"to":"k","text":"a"}`, event.MsgText, nil, false},
		{"low", `{"to":"k","text":"a","priority":"low"}`, event.MsgNotice, nil, false},
		{"low emote stays emote", `{"to":"k","text":"a","priority":"low","msgtype":"emote"}`, event.MsgEmote, nil, false},
		{"high", `{"to":"k","text":"a","priority":"high","mentions":["@a:hs"]}`, event.MsgText, []id.UserID{"@a:hs", "@b:hs"}, false},
		{"high with options_from", `{"to":"k","text":"a","priority":"high","options":[{"key":"👍","label":"y"}],"options_from":["bob"]}`, event.MsgText, []id.UserID{"@bob:hs"}, false},
		{"urgent", `{"to":"k","text":"a","priority":"urgent"}`, event.MsgText, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newLiveEnv(t)
			if _, err := e.deliver("send", tc.payload); err != nil {
				t.Fatal(err)
			}
			c := e.hs.Contents[0].(*event.MessageEventContent)
			if c.MsgType != tc.msgtype || c.Mentions.Room != tc.room || strings.Join(idStrings(c.Mentions.UserIDs), ",") != strings.Join(idStrings(tc.users), ",") {
				t.Fatalf("msgtype %s, mentions %+v", c.MsgType, c.Mentions)
			}
		})
	}
}

func idStrings(ids []id.UserID) []string {
	out := make([]string, len(ids))
	for i, u := range ids {
		out[i] = u.String()
	}
	return out
}

func TestLiveConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  actions.LiveConfig
		want string // empty: valid
	}{
		{"defaults", actions.LiveConfig{TagMaxAge: time.Hour, PriorityHigh: []string{"members", "room"}}, ""},
		{"unknown effect", actions.LiveConfig{TagMaxAge: time.Hour, PriorityUrgent: []string{"siren"}}, "PRIORITY_URGENT"},
		{"zero age", actions.LiveConfig{}, "TAG_MAX_AGE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestScheduleDue(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		s    actions.Schedule
		want time.Time // zero: refused
	}{
		{"delay", actions.Schedule{DelayS: 90}, now.Add(90 * time.Second)},
		{"no time", actions.Schedule{}, now},
		{"at ahead", actions.Schedule{At: "2030-01-01T13:00:00+01:00"}, now},
		{"at later", actions.Schedule{At: "2030-01-01T14:30:00Z"}, now.Add(150 * time.Minute)},
		{"at within the tolerance", actions.Schedule{At: "2030-01-01T11:59:30Z"}, now.Add(-30 * time.Second)},
		{"at beyond the tolerance", actions.Schedule{At: "2030-01-01T11:58:00Z"}, time.Time{}},
		{"at over a year ahead", actions.Schedule{At: "2031-06-01T00:00:00Z"}, time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.s.Due(now)
			if tc.want.IsZero() {
				if err == nil || err.Code != wire.CodeInvalidRequest {
					t.Fatalf("due %s, error %v; want invalid_request", got, err)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("due %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func FuzzScheduleDue(f *testing.F) {
	for _, at := range []string{"2030-01-01T12:00:00Z", "2030-01-01T13:00:00+01:00", "2029-12-31T23:59:59.999999999-00:00", "tomorrow", ""} {
		f.Add(at, 0.0)
	}
	f.Add("", 90.5)
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, at string, delay float64) {
		s := actions.Schedule{At: at, DelayS: delay}
		if s.At != "" {
			s.DelayS = 0
		}
		due, werr := s.Due(now)
		if werr != nil {
			if werr.Code != wire.CodeInvalidRequest || werr.Message == "" {
				t.Fatalf("error %+v", werr)
			}
			return
		}
		if s.At != "" && (due.Before(now.Add(-actions.PastTolerance)) || due.After(now.Add(366*24*time.Hour))) {
			t.Fatalf("at %q accepted as %s", at, due)
		}
	})
}
