package catalog

import (
	"encoding/json"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"strings"
	"testing"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// testTargets has the friendly names the cases use.
var testTargets = func() *targets.Targets {
	return targets.New(targets.Config{Names: targets.Names{"k": "!k:hs", "kitchen": "!kitchen:hs", "hall": "!hall:hs"},
		Groups: map[string][]string{"announce": {"kitchen", "hall"}}})
}()

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		action  string
		target  string
		payload string
		code    string // empty: valid
		mention string
	}{
		{"text", "send", "", `{"to":"kitchen","text":"hi"}`, "", ""},
		{"all fields", "send", "", `{"id":"1","to":"!a:hs","markdown":"**x**","msgtype":"m.notice","reply_to":"$r","thread":"$t","mentions":["@a:hs","@room"],"expire_s":60,"redact_after_s":5}`, "", ""},
		{"unknown field", "send", "", `{"to":"k","txt":"hi"}`, wire.CodeInvalidRequest, "'txt'"},
		{"wrong type", "send", "", `{"to":"k","text":["hi"]}`, wire.CodeInvalidRequest, "'text' must be a string"},
		{"bool as string", "typing", "", `{"to":"k","typing":"true"}`, wire.CodeInvalidRequest, "'typing' must be true or false"},
		{"number as string", "send", "", `{"to":"k","text":"a","expire_s":"5"}`, wire.CodeInvalidRequest, "'expire_s' must be a number"},
		{"not json", "send", "", `hello`, wire.CodeInvalidRequest, "JSON object"},
		{"array", "send", "", `[1]`, wire.CodeInvalidRequest, "JSON object"},
		{"trailing data", "send", "", `{"to":"k","text":"a"} {}`, wire.CodeInvalidRequest, "after the JSON object"},
		{"truncated", "send", "", `{"to":"k"`, wire.CodeInvalidRequest, "not valid JSON"},
		{"missing to", "send", "", `{"text":"a"}`, wire.CodeInvalidRequest, "'to'"},
		{"no body", "send", "", `{"to":"k"}`, wire.CodeInvalidRequest, "exactly one"},
		{"two bodies", "send", "", `{"to":"k","text":"a","markdown":"b"}`, wire.CodeInvalidRequest, "exactly one"},
		{"too large", "send", "", `{"to":"k","text":"` + strings.Repeat("x", actions.MaxBodyBytes+1) + `"}`, wire.CodeTooLarge, "60000"},
		{"bad msgtype", "send", "", `{"to":"k","text":"a","msgtype":"image"}`, wire.CodeInvalidRequest, "'msgtype'"},
		{"bad reply_to", "send", "", `{"to":"k","text":"a","reply_to":"nope"}`, wire.CodeInvalidRequest, "'reply_to'"},
		{"edit and reply", "send", "", `{"to":"k","text":"a","edit":"$e","reply_to":"$r"}`, wire.CodeInvalidRequest, "'edit'"},
		{"bad mention", "send", "", `{"to":"k","text":"a","mentions":["bob"]}`, wire.CodeInvalidRequest, "'mentions'"},
		{"negative expiry", "send", "", `{"to":"k","text":"a","expire_s":-1}`, wire.CodeInvalidRequest, "'expire_s'"},
		{"unknown action", "explode", "", `{}`, wire.CodeUnknownAction, "explode"},
		{"location", "send_location", "", `{"id":"l","to":"k","lat":52.37,"lon":4.89,"description":"Home","thread":"$t","expire_s":30,"redact_after_s":60}`, "", ""},
		{"location at 0,0", "send_location", "", `{"to":"k","lat":0,"lon":0}`, "", ""},
		{"location without lon", "send_location", "", `{"to":"k","lat":52.37}`, wire.CodeInvalidRequest, "'lon'"},
		{"location lat out of range", "send_location", "", `{"to":"k","lat":91,"lon":0}`, wire.CodeInvalidRequest, "'lat' must be between -90 and 90"},
		{"location lon out of range", "send_location", "", `{"to":"k","lat":0,"lon":-180.5}`, wire.CodeInvalidRequest, "'lon' must be between -180 and 180"},
		{"location as string", "send_location", "", `{"to":"k","lat":"52.37","lon":4.89}`, wire.CodeInvalidRequest, "'lat' must be a number"},
		{"location text field", "send_location", "", `{"to":"k","lat":1,"lon":2,"text":"x"}`, wire.CodeInvalidRequest, "'text'"},
		{"location negative expiry", "send_location", "", `{"to":"k","lat":1,"lon":2,"expire_s":-5}`, wire.CodeInvalidRequest, "'expire_s'"},
		{"location description too long", "send_location", "", `{"to":"k","lat":1,"lon":2,"description":"` + strings.Repeat("x", actions.MaxBodyBytes/4+1) + `"}`, wire.CodeTooLarge, "15000"},
		{"media data", "send_media", "", `{"to":"k","data":"aGk=","caption":"hi","kind":"file"}`, "", ""},
		{"media unpadded base64", "send_media", "", `{"to":"k","data":"aGk"}`, "", ""},
		{"media binary shortcut", "send_media", "k", "\xff\xd8\xff raw", "", ""},
		{"media empty shortcut", "send_media", "k", "", wire.CodeInvalidRequest, "empty"},
		{"media no source", "send_media", "", `{"to":"k"}`, wire.CodeInvalidRequest, "exactly one"},
		{"media two sources", "send_media", "", `{"to":"k","data":"aGk=","url":"http://x/"}`, wire.CodeInvalidRequest, "exactly one"},
		{"media broken base64", "send_media", "", `{"to":"k","data":"***"}`, wire.CodeInvalidRequest, "base64"},
		{"media bad mxc", "send_media", "", `{"to":"k","mxc":"http://x/y"}`, wire.CodeInvalidRequest, "'mxc'"},
		{"media unknown kind", "send_media", "", `{"to":"k","data":"aGk=","kind":"hologram"}`, wire.CodeInvalidRequest, "'kind'"},
		{"media bad mimetype", "send_media", "", `{"to":"k","data":"aGk=","mimetype":"jpeg"}`, wire.CodeInvalidRequest, "'mimetype'"},
		{"media filename with directory", "send_media", "", `{"to":"k","data":"aGk=","filename":"../x.jpg"}`, wire.CodeInvalidRequest, "'filename'"},
		{"media two captions", "send_media", "", `{"to":"k","data":"aGk=","caption":"a","caption_html":"b"}`, wire.CodeInvalidRequest, "at most one"},
		{"media spooled from outside", "send_media", "", `{"to":"k","data":"aGk=","spooled":"0123456789abcdef01234567"}`, wire.CodeInvalidRequest, "'spooled'"},
		{"media bad waveform", "send_media", "", `{"to":"k","data":"aGk=","kind":"voice","waveform":[2000]}`, wire.CodeInvalidRequest, "'waveform'"},
		{"media bad mention", "send_media", "", `{"to":"k","data":"aGk=","mentions":["bob"]}`, wire.CodeInvalidRequest, "'mentions'"},
		{"media width without height", "send_media", "", `{"to":"k","data":"aGk=","width":640}`, wire.CodeInvalidRequest, "both or neither"},
		{"media height out of range", "send_media", "", `{"to":"k","data":"aGk=","width":640,"height":-1}`, wire.CodeInvalidRequest, "'height'"},
		{"media thumbnail", "send_media", "", `{"to":"k","data":"aGk=","thumbnail":{"data":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="}}`, "", ""},
		{"media thumbnail by url", "send_media", "", `{"to":"k","data":"aGk=","thumbnail":{"url":"http://cam/snap.jpg"}}`, "", ""},
		{"media thumbnail not a picture", "send_media", "", `{"to":"k","data":"aGk=","thumbnail":{"data":"aGk="}}`, wire.CodeInvalidRequest, "'thumbnail' must be a PNG"},
		{"media thumbnail broken base64", "send_media", "", `{"to":"k","data":"aGk=","thumbnail":{"data":"***"}}`, wire.CodeInvalidRequest, "'thumbnail.data' is not base64"},
		{"media thumbnail without source", "send_media", "", `{"to":"k","data":"aGk=","thumbnail":{}}`, wire.CodeInvalidRequest, "'thumbnail' takes exactly one"},
		{"media thumbnail unknown field", "send_media", "", `{"to":"k","data":"aGk=","thumbnail":{"mxc":"mxc://a/b"}}`, wire.CodeInvalidRequest, "mxc"},
		{"media thumbnail case variant", "send_media", "", `{"to":"k","data":"aGk=","thumbnail":{"URL":"http://cam/snap.jpg"}}`, wire.CodeInvalidRequest, "field 'thumbnail.URL' is not known; 'thumbnail' takes data, path, url"},
		{"option key case variant", "send", "", `{"to":"k","text":"a","options":[{"key":"👍","label":"y"},{"Key":"👎","label":"n"}]}`, wire.CodeInvalidRequest, "field 'options[1].Key' is not known"},
		{"broadcast media key twice", "broadcast", "", `{"to":"hall","media":{"data":"aGk=","caption":"a","caption":"b"}}`, wire.CodeInvalidRequest, "field 'media.caption' is given twice"},
		{"react", "react", "", `{"to":"k","event_id":"$e","key":"👍"}`, "", ""},
		{"react no key", "react", "", `{"to":"k","event_id":"$e"}`, wire.CodeInvalidRequest, "'key'"},
		{"redact bad id", "redact", "", `{"to":"k","event_id":"e"}`, wire.CodeInvalidRequest, "'event_id'"},
		{"read receipt", "read_receipt", "", `{"to":"k","event_id":"$e"}`, "", ""},
		{"typing timeout", "typing", "", `{"to":"k","timeout_ms":700000}`, wire.CodeInvalidRequest, "'timeout_ms'"},
		{"join", "join", "", `{"room":"#a:hs"}`, "", ""},
		{"join wrong field", "join", "", `{"to":"#a:hs"}`, wire.CodeInvalidRequest, "'to'"},
		{"ensure_dm", "ensure_dm", "", `{"user":"@a:hs"}`, "", ""},
		{"list_rooms extra", "list_rooms", "", `{"id":"x","all":true}`, wire.CodeInvalidRequest, "'all'"},
		{"case-variant keys", "send", "", `{"TO":"k","Text":"hi"}`, wire.CodeInvalidRequest, "'TO'"},
		{"duplicated key", "send", "", `{"to":"k","text":"a","text":"b"}`, wire.CodeInvalidRequest, "'text' is given twice"},
		{"expire_s overflows a duration", "send", "", `{"to":"k","text":"a","expire_s":1e10}`, wire.CodeInvalidRequest, "'expire_s' must be at most"},
		{"redact_after_s over a year", "send", "", `{"to":"k","text":"a","redact_after_s":31536001}`, wire.CodeInvalidRequest, "'redact_after_s' must be at most"},
		{"redact_after_s a year", "send", "", `{"to":"k","text":"a","redact_after_s":31536000}`, "", ""},
		{"number too large for JSON", "send", "", `{"to":"k","text":"a","expire_s":1e400}`, wire.CodeInvalidRequest, "'expire_s'"},
		{"internal action", "auto_redact", "", `{}`, wire.CodeUnknownAction, "auto_redact"},
		{"shortcut of an action without one", "react", "kitchen", `x`, wire.CodeUnknownAction, "no shortcut"},
		{"NUL in a target", "send", "", "{\"to\":\"!a\\u0000:hs\",\"text\":\"a\"}", wire.CodeUnknownTarget, "'to'"},
		{"ensure_dm with a room", "ensure_dm", "", `{"user":"#room:hs"}`, wire.CodeInvalidRequest, "'user'"},
		{"join a user", "join", "", `{"room":"@a:hs"}`, wire.CodeInvalidRequest, "'room'"},
		{"get_event", "get_event", "", `{"to":"k","event_id":"$e"}`, "", ""},
		{"shortcut plain", "send", "kitchen", `Hello there`, "", ""},
		{"shortcut json", "send", "kitchen", `{"markdown":"*hi*"}`, "", ""},
		{"shortcut contradicting to", "send", "kitchen", `{"to":"hall","text":"x"}`, wire.CodeInvalidRequest, "contradicts"},
		{"shortcut empty", "send", "kitchen", ``, wire.CodeInvalidRequest, "exactly one"},
		{"shortcut not utf8", "send", "kitchen", "\xff", wire.CodeInvalidRequest, "UTF-8"},
		{"invite", "invite", "", `{"room":"kitchen","user":"@a:hs","reason":"welcome"}`, "", ""},
		{"kick without user", "kick", "", `{"room":"kitchen"}`, wire.CodeInvalidRequest, "'user'"},
		{"ban a room", "ban", "", `{"room":"kitchen","user":"!r:hs"}`, wire.CodeInvalidRequest, "'user'"},
		{"unban reason too long", "unban", "", `{"room":"k","user":"@a:hs","reason":"` + strings.Repeat("x", 1001) + `"}`, wire.CodeTooLarge, "'reason'"},
		{"set_power_level role", "set_power_level", "", `{"room":"k","user":"@a:hs","role":"moderator"}`, "", ""},
		{"set_power_level level", "set_power_level", "", `{"room":"k","user":"@a:hs","level":-10}`, "", ""},
		{"set_power_level both", "set_power_level", "", `{"room":"k","user":"@a:hs","level":50,"role":"admin"}`, wire.CodeInvalidRequest, "exactly one"},
		{"set_power_level neither", "set_power_level", "", `{"room":"k","user":"@a:hs"}`, wire.CodeInvalidRequest, "exactly one"},
		{"set_power_level unknown role", "set_power_level", "", `{"room":"k","user":"@a:hs","role":"owner"}`, wire.CodeInvalidRequest, "'role'"},
		{"set_power_level level out of range", "set_power_level", "", `{"room":"k","user":"@a:hs","level":1e16}`, wire.CodeInvalidRequest, "'level'"},
		{"set_power_level fraction", "set_power_level", "", `{"room":"k","user":"@a:hs","level":50.5}`, wire.CodeInvalidRequest, "'level'"},
		{"set_power_level level as string", "set_power_level", "", `{"room":"k","user":"@a:hs","level":"50"}`, wire.CodeInvalidRequest, "'level' must be a number"},
		{"set_room", "set_room", "", `{"room":"k","name":"N","topic":"","avatar":"mxc://hs/abc"}`, "", ""},
		{"set_room nothing", "set_room", "", `{"room":"k"}`, wire.CodeInvalidRequest, "at least one"},
		{"set_room bad avatar", "set_room", "", `{"room":"k","avatar":"https://example.org/a.png"}`, wire.CodeInvalidRequest, "'avatar'"},
		{"set_room long topic", "set_room", "", `{"room":"k","topic":"` + strings.Repeat("x", 10001) + `"}`, wire.CodeTooLarge, "'topic'"},
		{"members", "members", "", `{"room":"k","membership":"ban"}`, "", ""},
		{"members bad filter", "members", "", `{"room":"k","membership":"joined"}`, wire.CodeInvalidRequest, "'membership'"},
		{"create_room", "create_room", "", `{"name":"N","topic":"T","alias":"guests","preset":"trusted_private_chat","invite":["@a:hs"],"moderators":["@m:hs"],"encrypted":true,"power_levels":{"users":{"@b:hs":20},"events":{"m.room.topic":0},"kick":60},"is_dm":false,"avatar":"mxc://hs/a","key":"guests","template":"t"}`, "", ""},
		{"create_room empty", "create_room", "", `{}`, "", ""},
		{"broadcast list", "broadcast", "", `{"to":["kitchen","!x:hs","#a:hs","@u:hs","kitchen"],"text":"hi","msgtype":"notice","mentions":["@room"]}`, "", ""},
		{"broadcast group", "broadcast", "", `{"to":"announce","markdown":"**hi**"}`, "", ""},
		{"broadcast one target", "broadcast", "", `{"to":"hall","text":"hi"}`, "", ""},
		{"broadcast media thumbnail not a picture", "broadcast", "", `{"to":"hall","media":{"data":"aGk=","thumbnail":{"data":"aGk="}}}`, wire.CodeInvalidRequest, "'thumbnail' must be a PNG"},
		{"broadcast all, not enabled", "broadcast", "", `{"to":"*","text":"hi"}`, wire.CodeNotAllowed, "BROADCAST_ALL"},
		{"broadcast star in a list", "broadcast", "", `{"to":["*"],"text":"hi"}`, wire.CodeInvalidRequest, "stands alone"},
		{"broadcast no to", "broadcast", "", `{"text":"hi"}`, wire.CodeInvalidRequest, "'to'"},
		{"broadcast empty list", "broadcast", "", `{"to":[],"text":"hi"}`, wire.CodeInvalidRequest, "'to'"},
		{"broadcast to a number", "broadcast", "", `{"to":5,"text":"hi"}`, wire.CodeInvalidRequest, "'to' must be a list"},
		{"broadcast list of numbers", "broadcast", "", `{"to":[1],"text":"hi"}`, wire.CodeInvalidRequest, "'to'"},
		{"broadcast unknown target", "broadcast", "", `{"to":["nowhere"],"text":"hi"}`, wire.CodeUnknownTarget, "'to'"},
		{"broadcast without text", "broadcast", "", `{"to":["kitchen"]}`, wire.CodeInvalidRequest, "exactly one"},
		{"broadcast edit field", "broadcast", "", `{"to":["kitchen"],"text":"a","edit":"$e"}`, wire.CodeInvalidRequest, "'edit'"},
		{"broadcast too many", "broadcast", "", `{"to":[` + strings.Repeat(`"!r:hs",`, 1000) + `"!r:hs"],"text":"a"}`, wire.CodeTooLarge, "at most 1000"},
		{"create_room bad preset", "create_room", "", `{"preset":"open"}`, wire.CodeInvalidRequest, "preset"},
		{"create_room full alias", "create_room", "", `{"alias":"#g:hs"}`, wire.CodeInvalidRequest, "alias"},
		{"create_room key of TARGETS", "create_room", "", `{"key":"kitchen"}`, wire.CodeInvalidRequest, "TARGETS"},
		{"create_room bad key", "create_room", "", `{"key":"a/b"}`, wire.CodeInvalidRequest, "'key'"},
		{"create_room invite a room", "create_room", "", `{"invite":["kitchen"]}`, wire.CodeInvalidRequest, "'invite'"},
		{"create_room unknown power field", "create_room", "", `{"power_levels":{"kik":50}}`, wire.CodeInvalidRequest, "kik"},
		{"create_room level out of range", "create_room", "", `{"power_levels":{"users":{"@a:hs":1e16}}}`, wire.CodeInvalidRequest, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := Default().Parse(tc.action, tc.target, []byte(tc.payload), testTargets)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if req == nil {
					t.Fatal("nil request")
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %s", tc.payload)
			}
			if err.Code != tc.code || !strings.Contains(err.Message, tc.mention) {
				t.Fatalf("error = %v, want %s mentioning %q", err, tc.code, tc.mention)
			}
		})
	}
}

func TestShortcutPlainTextIsText(t *testing.T) {
	req, err := Default().Parse("send", "kitchen", []byte("  Door open \n"), testTargets)
	if err != nil {
		t.Fatal(err)
	}
	send := req.(*actions.Send)
	if send.To.To != "kitchen" || send.Lane() != "!kitchen:hs" || send.Text != "  Door open \n" {
		t.Fatalf("got %+v", send)
	}
}

// TestParseAllowedTargets: with ALLOWED_TARGETS set, every field that names a room or a user is
// checked against it, by friendly name or by what it stands for.
func TestParseAllowedTargets(t *testing.T) {
	allow := targets.New(targets.Config{
		Names:   targets.Names{"kitchen": "!kitchen:hs", "alice": "@alice:hs", "cellar": "!cellar:hs"},
		Allowed: []string{"kitchen", "@alice:hs", "#hall:hs"},
	})
	tests := []struct {
		name, action, payload string
		allowed               bool
	}{
		{"to, friendly name", "send", `{"to":"kitchen","text":"a"}`, true},
		{"to, the room of a friendly name", "send", `{"to":"!kitchen:hs","text":"a"}`, true},
		{"to, friendly name not allowed", "send", `{"to":"cellar","text":"a"}`, false},
		{"to, room not allowed", "send", `{"to":"!other:hs","text":"a"}`, false},
		{"to, user allowed by ID", "send", `{"to":"alice","text":"a"}`, true},
		{"to, alias", "react", `{"to":"#hall:hs","event_id":"$e","key":"x"}`, true},
		{"to, location", "send_location", `{"to":"!other:hs","lat":1,"lon":2}`, false},
		{"to, redact", "redact", `{"to":"!other:hs","event_id":"$e"}`, false},
		{"to, typing", "typing", `{"to":"!other:hs"}`, false},
		{"to, read receipt", "read_receipt", `{"to":"!other:hs","event_id":"$e"}`, false},
		{"to, resolve", "resolve", `{"to":"!other:hs"}`, false},
		{"to, get_event", "get_event", `{"to":"!other:hs","event_id":"$e"}`, false},
		{"room, join", "join", `{"room":"#other:hs"}`, false},
		{"room, join allowed", "join", `{"room":"#hall:hs"}`, true},
		{"room, leave", "leave", `{"room":"!other:hs"}`, false},
		{"room, ensure_encrypted", "ensure_encrypted", `{"room":"!other:hs"}`, false},
		{"user, ensure_dm", "ensure_dm", `{"user":"@bob:hs"}`, false},
		{"user, ensure_dm allowed", "ensure_dm", `{"user":"@alice:hs"}`, true},
		{"room, invite", "invite", `{"room":"!other:hs","user":"@alice:hs"}`, false},
		{"user, invite", "invite", `{"room":"kitchen","user":"@bob:hs"}`, false},
		{"invite allowed", "invite", `{"room":"kitchen","user":"alice"}`, true},
		{"user, kick", "kick", `{"room":"kitchen","user":"@bob:hs"}`, false},
		{"room, ban", "ban", `{"room":"cellar","user":"@alice:hs"}`, false},
		{"user, unban", "unban", `{"room":"kitchen","user":"@bob:hs"}`, false},
		{"user, set_power_level", "set_power_level", `{"room":"kitchen","user":"@bob:hs","role":"admin"}`, false},
		{"room, set_room", "set_room", `{"room":"!other:hs","name":"x"}`, false},
		{"room, members", "members", `{"room":"!other:hs"}`, false},
		{"user, create_room invite", "create_room", `{"invite":["@bob:hs"]}`, false},
		{"user, create_room moderators", "create_room", `{"moderators":["@bob:hs"]}`, false},
		{"user, create_room power_levels", "create_room", `{"power_levels":{"users":{"@bob:hs":50}}}`, false},
		{"create_room allowed", "create_room", `{"invite":["alice"],"moderators":["@alice:hs"]}`, true},
		{"to, broadcast list", "broadcast", `{"to":["kitchen","!other:hs"],"text":"a"}`, false},
		{"to, broadcast allowed", "broadcast", `{"to":["kitchen","alice"],"text":"a"}`, true},
		{"user, options_from", "send", `{"to":"kitchen","text":"a","options":[{"key":"👍","label":"y"}],"options_from":["@bob:hs"]}`, false},
		{"mentions", "send", `{"to":"kitchen","text":"a","mentions":["@bob:hs"]}`, false},
		{"mentions allowed, and @room", "send", `{"to":"kitchen","text":"a","mentions":["@alice:hs","@room"]}`, true},
		{"mentions, a pill in markdown", "send", `{"to":"kitchen","markdown":"hi [Bob](https://matrix.to/#/@bob:hs)"}`, false},
		{"mentions, a matrix: pill in html", "send", `{"to":"kitchen","html":"hi <a href=\"matrix:u/bob:hs\">Bob</a>"}`, false},
		{"mentions, a pill written with an entity", "send", `{"to":"kitchen","html":"<a href=\"https://matrix&#46;to/#/@bob:hs\">Bob</a>"}`, false},
		{"mentions, a markdown pill written with an entity", "send", `{"to":"kitchen","markdown":"<a href=\"https://matrix&#46;to/#/@bob:hs\">Bob</a>"}`, false},
		{"mentions, an allowed pill", "send", `{"to":"kitchen","html":"hi <a href=\"https://matrix.to/#/@alice:hs\">Alice</a>"}`, true},
		{"mentions, send_media", "send_media", `{"to":"kitchen","data":"aGk=","mentions":["@bob:hs"]}`, false},
		{"mentions, a pill in a caption", "send_media", `{"to":"kitchen","data":"aGk=","caption_markdown":"[Bob](https://matrix.to/#/@bob:hs)"}`, false},
		{"mentions, broadcast", "broadcast", `{"to":["kitchen"],"text":"a","mentions":["@bob:hs"]}`, false},
		{"mentions, a pill in a broadcast", "broadcast", `{"to":["kitchen"],"html":"<a href='https://matrix.to/#/@bob:hs'>b</a>"}`, false},
		{"mentions, a pill in broadcast media", "broadcast", `{"to":["kitchen"],"media":{"data":"aGk=","caption_html":"<a href='https://matrix.to/#/@bob:hs'>b</a>"}}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Default().Parse(tc.action, "", []byte(tc.payload), allow)
			if tc.allowed && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.allowed && (err == nil || err.Code != wire.CodeNotAllowed) {
				t.Fatalf("error = %v, want not_allowed", err)
			}
		})
	}
	if _, err := Default().Parse("send", "cellar", []byte("hi"), allow); err == nil || err.Code != wire.CodeNotAllowed {
		t.Fatalf("shortcut to a target not allowed: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("send", `{"id":"1","to":"!a:hs","text":"hi","mentions":["@a:hs"]}`, "")
	f.Add("send", `plain`, "kitchen")
	f.Add("react", `{"to":"k","event_id":"$e","key":"x"}`, "")
	f.Add("typing", `{"to":"k","typing":true,"timeout_ms":10}`, "")
	f.Add("send_location", `{"to":"k","lat":-33.9,"lon":151.2,"description":"x"}`, "")
	f.Add("join", `{"room":"#a:hs","id":"x"}`, "")
	f.Add("ensure_dm", `{"user":"alice"}`, "")
	f.Add("broadcast", `{"to":["kitchen","!r:hs"],"text":"hi"}`, "")
	f.Add("broadcast", `{"to":"announce","markdown":"*hi*"}`, "")
	f.Add("create_room", `{"template":"t","key":"k2","invite":["@a:hs"],"power_levels":{"users":{"@a:hs":50},"kick":10}}`, "")
	f.Add("set_power_level", `{"room":"k","user":"@a:hs","level":-5}`, "")
	f.Add("set_room", `{"room":"k","avatar":"mxc://hs/a"}`, "")
	f.Add("send", `{"to":"k","text":"?","options":[{"key":"👍","label":"y"}],"options_from":["@a:hs"],"single_use":true}`, "")
	f.Add("send", `{"to":"k","text":"s","tag":"w","priority":"high","at":"2030-01-01T00:00:00Z"}`, "")
	f.Add("send_poll", `{"to":"k","question":"?","answers":["a","b"],"max_selections":2,"kind":"undisclosed"}`, "")
	f.Add("outbox_cancel", `{"request_id":"x"}`, "")
	f.Fuzz(func(t *testing.T, action, payload, target string) {
		req, err := Default().Parse(action, target, []byte(payload), testTargets)
		if (req == nil) == (err == nil) {
			t.Fatalf("exactly one of request and error expected: %v %v", req, err)
		}
		if err != nil && (err.Code == "" || err.Message == "") {
			t.Fatalf("error without code or message: %+v", err)
		}
		if d, ok := req.(actions.Durable); ok {
			if _, jerr := json.Marshal(d); jerr != nil {
				t.Fatalf("a valid durable request does not encode: %v", jerr)
			}
			if d.Lane() == "" {
				t.Fatal("a valid durable request without a lane")
			}
		}
	})
}

// FuzzEveryAction decodes and validates arbitrary payloads for every action MQTT clients can
// request (the action picked by index, so that each is reached): the answer is a request or an
// error with a stable code, never both, never a panic.
func FuzzEveryAction(f *testing.F) {
	public := Default().Public()
	for i := range public {
		f.Add(uint16(i), `{"id":"1","to":"kitchen","room":"kitchen","user":"@a:hs","event_id":"$e","text":"hi"}`, "")
		f.Add(uint16(i), `{"id":"x","TO":1e400,"to":"\u0000","text":-0,"text":"dup"}`, "")
	}
	f.Add(uint16(0), "plain text", "kitchen")
	codes := map[string]bool{}
	for _, c := range []string{wire.CodeInvalidRequest, wire.CodeUnknownAction, wire.CodeUnknownTarget, wire.CodeNotAllowed,
		wire.CodeTooLarge, wire.CodeExpired, wire.CodeMatrixError, wire.CodeTimeout} {
		codes[c] = true
	}
	f.Fuzz(func(t *testing.T, index uint16, payload, target string) {
		action := public[int(index)%len(public)].Name
		req, err := Default().Parse(action, target, []byte(payload), testTargets)
		if (req == nil) == (err == nil) {
			t.Fatalf("%s: exactly one of request and error expected: %v %v", action, req, err)
		}
		if err != nil && (!codes[err.Code] || err.Message == "") {
			t.Fatalf("%s: error without a stable code or a message: %+v", action, err)
		}
		if d, ok := req.(actions.Durable); ok {
			if _, jerr := json.Marshal(d); jerr != nil {
				t.Fatalf("%s: a valid durable request does not encode: %v", action, jerr)
			}
		}
	})
}

// TestPublicActions: every action MQTT clients can request is registered once with a help line,
// and the internal ones are not among them.
func TestPublicActions(t *testing.T) {
	for _, s := range Default().Public() {
		if s.Help == "" || s.Internal {
			t.Errorf("action %q: help %q internal %v", s.Name, s.Help, s.Internal)
		}
		if _, durable := s.New().(actions.Durable); !durable {
			if _, immediate := s.New().(actions.Immediate); !immediate {
				t.Errorf("action %q is neither durable nor immediate", s.Name)
			}
		}
	}
	if got := strings.Join(Default().Shortcuts(), ","); got != "send,send_media" {
		t.Errorf("shortcuts = %s", got)
	}
}
