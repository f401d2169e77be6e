package matrix

import (
	"encoding/json"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix/e2ee"
)

func parse(t *testing.T, typ event.Type, raw string) *event.Event {
	t.Helper()
	evt := &event.Event{Type: typ, ID: "$e", RoomID: "!r:hs", Sender: "@alice:hs", Timestamp: 1700000000000}
	if err := json.Unmarshal([]byte(raw), &evt.Content); err != nil {
		t.Fatal(err)
	}
	if err := evt.Content.ParseRaw(typ); err != nil {
		t.Fatal(err)
	}
	return evt
}

func TestNormalise(t *testing.T) {
	tests := []struct {
		name  string
		typ   event.Type
		raw   string
		check func(t *testing.T, ev Event)
	}{
		{"text", event.EventMessage, `{"msgtype":"m.text","body":"hi","format":"org.matrix.custom.html","formatted_body":"<b>hi</b>"}`, func(t *testing.T, ev Event) {
			m := ev.Payload.(*wire.Message)
			if ev.Kind != wire.KindMessage || m.Body != "hi" || m.FormattedBody != "<b>hi</b>" || m.MsgType != "m.text" || m.Timestamp != 1700000000000 {
				t.Fatalf("%+v", m)
			}
		}},
		{"reply", event.EventMessage, `{"msgtype":"m.text","body":"a","m.relates_to":{"m.in_reply_to":{"event_id":"$orig"}}}`, func(t *testing.T, ev Event) {
			if m := ev.Payload.(*wire.Message); m.ReplyTo != "$orig" || m.Thread != "" {
				t.Fatalf("%+v", m)
			}
		}},
		{"thread fallback is not a reply", event.EventMessage, `{"msgtype":"m.text","body":"a","m.relates_to":{"rel_type":"m.thread","event_id":"$root","is_falling_back":true,"m.in_reply_to":{"event_id":"$root"}}}`, func(t *testing.T, ev Event) {
			if m := ev.Payload.(*wire.Message); m.Thread != "$root" || m.ReplyTo != "" {
				t.Fatalf("%+v", m)
			}
		}},
		{"edit publishes the new content", event.EventMessage, `{"msgtype":"m.text","body":"* new","m.new_content":{"msgtype":"m.text","body":"new"},"m.relates_to":{"rel_type":"m.replace","event_id":"$old"}}`, func(t *testing.T, ev Event) {
			if m := ev.Payload.(*wire.Message); m.EditOf != "$old" || m.Body != "new" {
				t.Fatalf("%+v", m)
			}
		}},
		{"mentions", event.EventMessage, `{"msgtype":"m.text","body":"a","m.mentions":{"user_ids":["@bot:hs"],"room":true}}`, func(t *testing.T, ev Event) {
			if m := ev.Payload.(*wire.Message); len(m.Mentions) != 1 || !m.MentionsRoom {
				t.Fatalf("%+v", m)
			}
		}},
		{"image", event.EventMessage, `{"msgtype":"m.image","body":"cat.png","url":"mxc://hs/abc","info":{"mimetype":"image/png","size":123,"w":10,"h":20}}`, func(t *testing.T, ev Event) {
			m := ev.Payload.(*wire.Message)
			if m.Media == nil || m.Media.MXC != "mxc://hs/abc" || m.Media.Filename != "cat.png" || m.Media.Width != 10 || m.Media.Size != 123 || m.Body != "" {
				t.Fatalf("%+v %+v", m, m.Media)
			}
		}},
		{"location", event.EventMessage, `{"msgtype":"m.location","body":"home","geo_uri":"geo:1,2"}`, func(t *testing.T, ev Event) {
			if m := ev.Payload.(*wire.Message); m.GeoURI != "geo:1,2" || m.Media != nil {
				t.Fatalf("%+v", m)
			}
		}},
		{"reaction", event.EventReaction, `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$t","key":"👍"}}`, func(t *testing.T, ev Event) {
			r := ev.Payload.(*wire.Reaction)
			if ev.Kind != wire.KindReaction || r.RelatesTo != "$t" || r.Key != "👍" {
				t.Fatalf("%+v", r)
			}
		}},
		{"redaction", event.EventRedaction, `{"redacts":"$t","reason":"spam"}`, func(t *testing.T, ev Event) {
			r := ev.Payload.(*wire.Redaction)
			if ev.Kind != wire.KindRedaction || r.Redacts != "$t" || r.Reason != "spam" {
				t.Fatalf("%+v", r)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, ok := normalise(parse(t, tc.typ, tc.raw))
			if !ok {
				t.Fatal("not normalised")
			}
			tc.check(t, ev)
		})
	}
	if _, ok := normalise(parse(t, event.StateRoomName, `{"name":"x"}`)); ok {
		t.Fatal("state event normalised")
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Homeserver: "https://hs", UserID: "@bot:hs", Password: "pw", SyncTimeout: 30 * time.Second, E2EE: e2ee.Config{ShareKeysWith: "all"}}
	tests := []struct {
		name    string
		mutate  func(*Config)
		setting string
	}{
		{"valid", func(*Config) {}, ""},
		{"token only", func(c *Config) { c.Password, c.AccessToken = "", "tok" }, ""},
		{"auto join", func(c *Config) { c.AutoJoin = []string{"@a:hs", ":hs", "*"} }, ""},
		{"no homeserver", func(c *Config) { c.Homeserver = "" }, "MATRIX_HOMESERVER"},
		{"no scheme", func(c *Config) { c.Homeserver = "hs.example" }, "MATRIX_HOMESERVER"},
		{"no user", func(c *Config) { c.UserID = "" }, "MATRIX_USER_ID"},
		{"bad user", func(c *Config) { c.UserID = "bot" }, "MATRIX_USER_ID"},
		{"no secret", func(c *Config) { c.Password = "" }, "MATRIX_PASSWORD"},
		{"sync timeout", func(c *Config) { c.SyncTimeout = time.Millisecond }, "MATRIX_SYNC_TIMEOUT"},
		{"bad auto join", func(c *Config) { c.AutoJoin = []string{"alice"} }, "AUTO_JOIN"},
		{"bad share keys", func(c *Config) { c.E2EE.ShareKeysWith = "friends" }, "E2EE_SHARE_KEYS_WITH"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			err := c.Validate()
			if tc.setting == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.setting) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.setting)
			}
		})
	}
}

func TestAcceptsInviteFrom(t *testing.T) {
	c := Config{AutoJoin: []string{"@alice:a.org", ":b.org"}}
	for sender, want := range map[id.UserID]bool{"@alice:a.org": true, "@bob:a.org": false, "@carol:b.org": true, "@x:evil.b.org": false} {
		if got := c.acceptsInviteFrom(sender); got != want {
			t.Errorf("acceptsInviteFrom(%s) = %v", sender, got)
		}
	}
	if (Config{}).acceptsInviteFrom("@alice:a.org") {
		t.Error("empty AUTO_JOIN accepts invites")
	}
	if !(Config{AutoJoin: []string{"*"}}).acceptsInviteFrom("@x:y") {
		t.Error("* does not accept invites")
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{0: time.Second, 1: 2 * time.Second, 3: 8 * time.Second, 20: time.Minute} {
		for range 20 {
			if d := Backoff(n, time.Second, time.Minute); d < want*8/10 || d > want*12/10 {
				t.Fatalf("Backoff(%d) = %s, want %s ±20%%", n, d, want)
			}
		}
	}
}
