package bridge

import (
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
)

func TestParsePayload(t *testing.T) {
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
		{"unknown field", "send", "", `{"to":"k","txt":"hi"}`, CodeInvalidRequest, "'txt'"},
		{"wrong type", "send", "", `{"to":"k","text":["hi"]}`, CodeInvalidRequest, "'text' must be a string"},
		{"bool as string", "typing", "", `{"to":"k","typing":"true"}`, CodeInvalidRequest, "'typing' must be true or false"},
		{"number as string", "send", "", `{"to":"k","text":"a","expire_s":"5"}`, CodeInvalidRequest, "'expire_s' must be a number"},
		{"not json", "send", "", `hello`, CodeInvalidRequest, "JSON object"},
		{"array", "send", "", `[1]`, CodeInvalidRequest, "JSON object"},
		{"trailing data", "send", "", `{"to":"k","text":"a"} {}`, CodeInvalidRequest, "after the JSON object"},
		{"truncated", "send", "", `{"to":"k"`, CodeInvalidRequest, "not valid JSON"},
		{"missing to", "send", "", `{"text":"a"}`, CodeInvalidRequest, "'to'"},
		{"no body", "send", "", `{"to":"k"}`, CodeInvalidRequest, "exactly one"},
		{"two bodies", "send", "", `{"to":"k","text":"a","markdown":"b"}`, CodeInvalidRequest, "exactly one"},
		{"too large", "send", "", `{"to":"k","text":"` + strings.Repeat("x", maxBodyBytes+1) + `"}`, CodeTooLarge, "60000"},
		{"bad msgtype", "send", "", `{"to":"k","text":"a","msgtype":"image"}`, CodeInvalidRequest, "'msgtype'"},
		{"bad reply_to", "send", "", `{"to":"k","text":"a","reply_to":"nope"}`, CodeInvalidRequest, "'reply_to'"},
		{"edit and reply", "send", "", `{"to":"k","text":"a","edit":"$e","reply_to":"$r"}`, CodeInvalidRequest, "'edit'"},
		{"bad mention", "send", "", `{"to":"k","text":"a","mentions":["bob"]}`, CodeInvalidRequest, "'mentions'"},
		{"negative expiry", "send", "", `{"to":"k","text":"a","expire_s":-1}`, CodeInvalidRequest, "'expire_s'"},
		{"unknown action", "explode", "", `{}`, CodeUnknownAction, "explode"},
		{"location", "send_location", "", `{"id":"l","to":"k","lat":52.37,"lon":4.89,"description":"Home","thread":"$t","expire_s":30,"redact_after_s":60}`, "", ""},
		{"location at 0,0", "send_location", "", `{"to":"k","lat":0,"lon":0}`, "", ""},
		{"location without lon", "send_location", "", `{"to":"k","lat":52.37}`, CodeInvalidRequest, "'lon'"},
		{"location lat out of range", "send_location", "", `{"to":"k","lat":91,"lon":0}`, CodeInvalidRequest, "'lat' must be between -90 and 90"},
		{"location lon out of range", "send_location", "", `{"to":"k","lat":0,"lon":-180.5}`, CodeInvalidRequest, "'lon' must be between -180 and 180"},
		{"location as string", "send_location", "", `{"to":"k","lat":"52.37","lon":4.89}`, CodeInvalidRequest, "'lat' must be a number"},
		{"location text field", "send_location", "", `{"to":"k","lat":1,"lon":2,"text":"x"}`, CodeInvalidRequest, "'text'"},
		{"location negative expiry", "send_location", "", `{"to":"k","lat":1,"lon":2,"expire_s":-5}`, CodeInvalidRequest, "'expire_s'"},
		{"location description too long", "send_location", "", `{"to":"k","lat":1,"lon":2,"description":"` + strings.Repeat("x", maxBodyBytes/4+1) + `"}`, CodeTooLarge, "15000"},
		{"planned action", "send_media", "", `{"to":"k"}`, CodeUnknownAction, "planned"},
		{"react", "react", "", `{"to":"k","event_id":"$e","key":"👍"}`, "", ""},
		{"react no key", "react", "", `{"to":"k","event_id":"$e"}`, CodeInvalidRequest, "'key'"},
		{"redact bad id", "redact", "", `{"to":"k","event_id":"e"}`, CodeInvalidRequest, "'event_id'"},
		{"read receipt", "read_receipt", "", `{"to":"k","event_id":"$e"}`, "", ""},
		{"typing timeout", "typing", "", `{"to":"k","timeout_ms":700000}`, CodeInvalidRequest, "'timeout_ms'"},
		{"join", "join", "", `{"room":"#a:hs"}`, "", ""},
		{"join wrong field", "join", "", `{"to":"#a:hs"}`, CodeInvalidRequest, "'to'"},
		{"ensure_dm", "ensure_dm", "", `{"user":"@a:hs"}`, "", ""},
		{"list_rooms extra", "list_rooms", "", `{"id":"x","all":true}`, CodeInvalidRequest, "'all'"},
		{"shortcut plain", "send", "kitchen", `Hello there`, "", ""},
		{"shortcut json", "send", "kitchen", `{"markdown":"*hi*"}`, "", ""},
		{"shortcut contradicting to", "send", "kitchen", `{"to":"hall","text":"x"}`, CodeInvalidRequest, "contradicts"},
		{"shortcut empty", "send", "kitchen", ``, CodeInvalidRequest, "exactly one"},
		{"shortcut not utf8", "send", "kitchen", "\xff", CodeInvalidRequest, "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parsePayload(tc.action, []byte(tc.payload), tc.target)
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
	req, err := parsePayload(ActionSend, []byte("  Door open \n"), "kitchen")
	if err != nil {
		t.Fatal(err)
	}
	send := req.(*SendRequest)
	if send.To != "kitchen" || send.Text != "  Door open \n" {
		t.Fatalf("got %+v", send)
	}
}

func TestRequestID(t *testing.T) {
	for payload, want := range map[string]string{
		`{"id":"a1","to":5}`: "a1",
		`{"id":5}`:           "",
		`{"id":"x"`:          "",
		`plain`:              "",
	} {
		if got := requestID([]byte(payload)); got != want {
			t.Errorf("requestID(%s) = %q, want %q", payload, got, want)
		}
	}
}

func FuzzParsePayload(f *testing.F) {
	f.Add("send", `{"id":"1","to":"!a:hs","text":"hi","mentions":["@a:hs"]}`, "")
	f.Add("send", `plain`, "kitchen")
	f.Add("react", `{"to":"k","event_id":"$e","key":"x"}`, "")
	f.Add("typing", `{"to":"k","typing":true,"timeout_ms":10}`, "")
	f.Add("send_location", `{"to":"k","lat":-33.9,"lon":151.2,"description":"x"}`, "")
	f.Fuzz(func(t *testing.T, action, payload, target string) {
		if target != "" {
			action = ActionSend
		}
		req, err := parsePayload(action, []byte(payload), target)
		if (req == nil) == (err == nil) {
			t.Fatalf("exactly one of request and error expected: %v %v", req, err)
		}
		if err != nil && (err.Code == "" || err.Message == "") {
			t.Fatalf("error without code or message: %+v", err)
		}
	})
}

func TestMessageContent(t *testing.T) {
	tests := []struct {
		name  string
		req   SendRequest
		check func(t *testing.T, c *event.MessageEventContent)
	}{
		{"markdown", SendRequest{Markdown: "**a**"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.Format != event.FormatHTML || c.FormattedBody != "<strong>a</strong>" || c.MsgType != event.MsgText {
				t.Fatalf("%+v", c)
			}
		}},
		{"plain text stays plain", SendRequest{Text: "<b>a</b>"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.Format != "" || c.Body != "<b>a</b>" {
				t.Fatalf("%+v", c)
			}
		}},
		{"notice", SendRequest{Text: "a", MsgType: "notice"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.MsgType != event.MsgNotice {
				t.Fatalf("%s", c.MsgType)
			}
		}},
		{"mentions", SendRequest{Text: "a", Mentions: []string{"@a:hs", "@room"}}, func(t *testing.T, c *event.MessageEventContent) {
			if !c.Mentions.Room || len(c.Mentions.UserIDs) != 1 {
				t.Fatalf("%+v", c.Mentions)
			}
		}},
		{"no mentions is an empty m.mentions", SendRequest{Text: "@a:hs hi"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.Mentions == nil || len(c.Mentions.UserIDs) != 0 {
				t.Fatalf("%+v", c.Mentions)
			}
		}},
		{"thread fallback", SendRequest{Text: "a", Thread: "$root"}, func(t *testing.T, c *event.MessageEventContent) {
			r := c.RelatesTo
			if r.Type != event.RelThread || r.EventID != "$root" || !r.IsFallingBack || r.InReplyTo.EventID != "$root" {
				t.Fatalf("%+v", r)
			}
		}},
		{"thread reply", SendRequest{Text: "a", Thread: "$root", ReplyTo: "$r"}, func(t *testing.T, c *event.MessageEventContent) {
			r := c.RelatesTo
			if r.Type != event.RelThread || r.IsFallingBack || r.InReplyTo.EventID != "$r" {
				t.Fatalf("%+v", r)
			}
		}},
		{"edit", SendRequest{Markdown: "*b*", Edit: "$orig"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.RelatesTo.Type != event.RelReplace || c.NewContent == nil || c.NewContent.FormattedBody != "<em>b</em>" || !strings.HasPrefix(c.Body, "* ") {
				t.Fatalf("%+v / %+v", c, c.NewContent)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, messageContent(&tc.req)) })
	}
}

func TestLocationContent(t *testing.T) {
	lat, lon := 52.370216, -4.5
	tests := []struct {
		name     string
		req      LocationRequest
		body     string
		relation func(*event.RelatesTo) bool
	}{
		{"described", LocationRequest{Lat: &lat, Lon: &lon, Description: "Front door"}, "Front door (geo:52.370216,-4.5)",
			func(r *event.RelatesTo) bool { return r == nil }},
		{"bare", LocationRequest{Lat: &lat, Lon: &lon}, "Location geo:52.370216,-4.5",
			func(r *event.RelatesTo) bool { return r == nil }},
		{"in a thread", LocationRequest{Lat: &lat, Lon: &lon, Thread: "$root"}, "Location geo:52.370216,-4.5",
			func(r *event.RelatesTo) bool {
				return r.Type == event.RelThread && r.EventID == "$root" && r.IsFallingBack
			}},
		{"reply", LocationRequest{Lat: &lat, Lon: &lon, ReplyTo: "$r"}, "Location geo:52.370216,-4.5",
			func(r *event.RelatesTo) bool { return r.Type == "" && r.GetReplyTo() == "$r" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := json.Marshal(locationContent(&tc.req))
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				event.MessageEventContent
				Location struct {
					URI         string `json:"uri"`
					Description string `json:"description"`
				} `json:"org.matrix.msc3488.location"`
				Asset struct {
					Type string `json:"type"`
				} `json:"org.matrix.msc3488.asset"`
				Text string `json:"org.matrix.msc1767.text"`
			}
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			const geo = "geo:52.370216,-4.5"
			if got.MsgType != event.MsgLocation || got.GeoURI != geo || got.Body != tc.body || got.Text != tc.body {
				t.Errorf("content = %s", raw)
			}
			if got.Location.URI != geo || got.Location.Description != tc.req.Description || got.Asset.Type != "m.pin" {
				t.Errorf("extensible fields = %s", raw)
			}
			if !tc.relation(got.RelatesTo) {
				t.Errorf("relates_to = %+v", got.RelatesTo)
			}
		})
	}
}
