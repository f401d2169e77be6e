package actions

import (
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
)

func TestMessageContent(t *testing.T) {
	tests := []struct {
		name  string
		req   Send
		check func(t *testing.T, c *event.MessageEventContent)
	}{
		{"markdown", Send{Markdown: "**a**"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.Format != event.FormatHTML || c.FormattedBody != "<strong>a</strong>" || c.MsgType != event.MsgText {
				t.Fatalf("%+v", c)
			}
		}},
		{"plain text stays plain", Send{Text: "<b>a</b>"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.Format != "" || c.Body != "<b>a</b>" {
				t.Fatalf("%+v", c)
			}
		}},
		{"notice", Send{Text: "a", MsgType: "notice"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.MsgType != event.MsgNotice {
				t.Fatalf("%s", c.MsgType)
			}
		}},
		{"mentions", Send{Text: "a", Mentions: []string{"@a:hs", "@room"}}, func(t *testing.T, c *event.MessageEventContent) {
			if !c.Mentions.Room || len(c.Mentions.UserIDs) != 1 {
				t.Fatalf("%+v", c.Mentions)
			}
		}},
		{"no mentions is an empty m.mentions", Send{Text: "@a:hs hi"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.Mentions == nil || len(c.Mentions.UserIDs) != 0 {
				t.Fatalf("%+v", c.Mentions)
			}
		}},
		{"thread fallback", Send{Text: "a", Thread: "$root"}, func(t *testing.T, c *event.MessageEventContent) {
			r := c.RelatesTo
			if r.Type != event.RelThread || r.EventID != "$root" || !r.IsFallingBack || r.InReplyTo.EventID != "$root" {
				t.Fatalf("%+v", r)
			}
		}},
		{"thread reply", Send{Text: "a", Thread: "$root", ReplyTo: "$r"}, func(t *testing.T, c *event.MessageEventContent) {
			r := c.RelatesTo
			if r.Type != event.RelThread || r.IsFallingBack || r.InReplyTo.EventID != "$r" {
				t.Fatalf("%+v", r)
			}
		}},
		{"edit", Send{Markdown: "*b*", Edit: "$orig"}, func(t *testing.T, c *event.MessageEventContent) {
			if c.RelatesTo.Type != event.RelReplace || c.NewContent == nil || c.NewContent.FormattedBody != "<em>b</em>" || !strings.HasPrefix(c.Body, "* ") {
				t.Fatalf("%+v / %+v", c, c.NewContent)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, tc.req.Content()) })
	}
}

func TestLocationContent(t *testing.T) {
	lat, lon := 52.370216, -4.5
	tests := []struct {
		name     string
		req      SendLocation
		body     string
		relation func(*event.RelatesTo) bool
	}{
		{"described", SendLocation{Lat: &lat, Lon: &lon, Description: "Front door"}, "Front door (geo:52.370216,-4.5)",
			func(r *event.RelatesTo) bool { return r == nil }},
		{"bare", SendLocation{Lat: &lat, Lon: &lon}, "Location geo:52.370216,-4.5",
			func(r *event.RelatesTo) bool { return r == nil }},
		{"in a thread", SendLocation{Lat: &lat, Lon: &lon, Thread: "$root"}, "Location geo:52.370216,-4.5",
			func(r *event.RelatesTo) bool {
				return r.Type == event.RelThread && r.EventID == "$root" && r.IsFallingBack
			}},
		{"reply", SendLocation{Lat: &lat, Lon: &lon, ReplyTo: "$r"}, "Location geo:52.370216,-4.5",
			func(r *event.RelatesTo) bool { return r.Type == "" && r.GetReplyTo() == "$r" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := json.Marshal(tc.req.Content())
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
