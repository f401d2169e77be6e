package integration

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
)

// hostilePayloads are requests no action takes: each must be answered with one error.
func hostilePayloads() map[string]string {
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	random := make([]byte, 512)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.IntN(256))
	}
	random[0] = 0xff // never valid UTF-8, so never plain text
	return map[string]string{
		"wrong types":       `{"id":"h-types","to":5,"room":true,"user":[],"text":{},"event_id":1}`,
		"huge string":       `{"id":"h-huge","to":"` + strings.Repeat("x", 70000) + `"}`,
		"huge within limit": `{"id":"h-long","tO":"` + strings.Repeat("x", 60000) + `"}`,
		"invalid UTF-8":     "{\"id\":\"h-utf8\",\"to\":\"\xff\xfe\",\"text\":\"\xc3\"}",
		"deep nesting":      `{"id":"h-deep","to":` + deep + `}`,
		"duplicate key":     `{"id":"h-dup","to":"alice","to":"alice","to":"alice"}`,
		"case-variant key":  `{"id":"h-case","To":"alice","TEXT":"x","ID":"y"}`,
		"unknown field":     `{"id":"h-unknown","txt":"typo","bogus":null}`,
		"nested case and repeats": `{"id":"h-nested","media":{"DATA":"x","data":"y","data":"z"},"options":[{"KEY":"a"},{"key":"b","key":"c"}],` +
			`"thumbnail":{"Url":"x"},"power_levels":{"users":{"@a:hs":1,"@a:hs":2}},"x":1}`,
		"random bytes":       string(random),
		"NUL in targets":     `{"id":"h-nul","to":"ali\u0000ce","room":"!a\u0000:hs","user":"@a\u0000b:hs","nul":1}`,
		"huge number":        `{"id":"h-1e400","lat":1e400,"lon":-1e400,"timeout_ms":1e400,"expire_s":1e400,"x":1}`,
		"negative zero":      `{"id":"h-negzero","lat":-0,"to":-0,"typing":-0}`,
		"empty":              ``,
		"null":               `null`,
		"array":              `[{"id":"h-array"}]`,
		"string":             `"h-string"`,
		"truncated":          `{"id":"h-trunc","to":"ali`,
		"trailing garbage":   `{"id":"h-trail"} {"id":"again"}`,
		"id of a wrong type": `{"id":{"nested":true},"nope":1}`,
	}
}

// TestHostileInput publishes a corpus of hostile payloads to every request topic (every
// action, an unknown one, and the send shortcut): each gets exactly one error response with a
// stable code; the bridge stays online, requests queued before them are delivered (one waits in
// the outbox until the flood is under way), and a valid request afterwards works.
func TestHostileInput(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	stable := map[string]bool{"invalid_request": true, "unknown_action": true, "unknown_target": true, "not_allowed": true,
		"too_large": true, "expired": true, "matrix_error": true, "timeout": true}

	// Queued first: durable requests that must survive the flood, one of them waiting in the
	// outbox until the flood is under way.
	h.rec.publish(h.base+"/bridge/request/send", 1, `{"id":"queued","to":"`+room.String()+`","text":"queued before the flood"}`)
	h.rec.publish(h.base+"/bridge/request/send", 1, `{"id":"scheduled","to":"`+room.String()+`","text":"due during the flood","delay_s":3}`)

	type topic struct{ publish, response string }
	var topics []topic
	for _, s := range catalog.Default().Public() {
		topics = append(topics, topic{h.base + "/bridge/request/" + s.Name, h.base + "/bridge/response/" + s.Name})
	}
	topics = append(topics,
		topic{h.base + "/bridge/request/no_such_action", h.base + "/bridge/response/no_such_action"},
		topic{h.base + "/send/alice", h.base + "/bridge/response/send"})
	sent := map[string]int{} // response topic → hostile requests published
	payloads := hostilePayloads()
	for _, tp := range topics {
		for name, payload := range payloads {
			if strings.HasSuffix(tp.publish, "/send/alice") && !strings.HasPrefix(payload, "{") && !strings.ContainsRune(payload, 0xfffd) && name != "random bytes" && name != "empty" {
				continue // the shortcut sends any other UTF-8 text as a message
			}
			before := len(h.rec.all(tp.response))
			h.rec.publish(tp.publish, 1, payload)
			sent[tp.response]++
			var all []message
			eventually(t, 20*time.Second, func() error {
				if all = h.rec.all(tp.response); len(all) <= before {
					return fmt.Errorf("no answer to %q on %s", name, tp.publish)
				}
				return nil
			})
			resp := all[before].json(t)
			e, _ := resp["error"].(map[string]any)
			if resp["status"] != "error" || !stable[fmt.Sprint(e["code"])] || fmt.Sprint(e["message"]) == "" {
				t.Errorf("%s on %s: response %v", name, tp.publish, resp)
			}
		}
	}
	h.ok(h.response("send", "queued"))
	scheduled := h.ok(h.response("send", "scheduled"))
	if body := h.alice.event(t, room, id.EventID(scheduled["event_id"].(string))).Content.AsMessage().Body; body != "due during the flood" {
		t.Fatalf("wrong scheduled message: %q", body)
	}
	// Exactly one answer each: nothing more arrives.
	time.Sleep(time.Second)
	for response, n := range sent {
		got := 0
		for _, m := range h.rec.all(response) {
			if !strings.Contains(string(m.Payload), `"queued"`) && !strings.Contains(string(m.Payload), `"scheduled"`) {
				got++
			}
		}
		if got != n {
			t.Errorf("%s: %d answers to %d hostile requests", response, got, n)
		}
	}
	for _, m := range h.rec.all(h.base + "/bridge/state") {
		if string(m.Payload) != "online" {
			t.Fatalf("bridge state %q during the flood", m.Payload)
		}
	}
	data := h.ok(h.request("send", map[string]any{"to": room.String(), "text": "valid after the flood"}))
	if body := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage().Body; body != "valid after the flood" {
		t.Fatalf("wrong message after the flood: %q", body)
	}
}

// TestNestedFieldsDecodedStrictly: inside nested objects too, a field in other letter case or a
// key given twice is refused with its path (each payload has no other fault).
func TestNestedFieldsDecodedStrictly(t *testing.T) {
	h := newHarness(t, map[string]string{"E2EE": "false"})
	room := h.sharedRoom(nil).String()
	for _, tc := range []struct {
		action, payload, says string
	}{
		{"send", `{"to":"` + room + `","text":"close it?","options":[{"key":"👍","label":"Yes"},{"Key":"👎","label":"No"}]}`, "field 'options[1].Key' is not known"},
		{"broadcast", `{"to":["` + room + `"],"media":{"data":"aGk=","caption":"a","caption":"b"}}`, "field 'media.caption' is given twice"},
		{"create_room", `{"name":"must not exist","power_levels":{"users":{"@a:localhost":50,"@a:localhost":100}}}`, "field 'power_levels.users.@a:localhost' is given twice"},
		{"set_room", `{"room":"` + room + `","avatar":{"URL":"http://x/a.png"}}`, "field 'avatar' must be an mxc:// URI or an object"},
	} {
		t.Run(tc.action, func(t *testing.T) {
			reqID := "nested-" + tc.action
			h.rec.publish(h.base+"/bridge/request/"+tc.action, 1, `{"id":"`+reqID+`",`+tc.payload[1:])
			if msg := h.fail(h.response(tc.action, reqID), "invalid_request"); !strings.Contains(msg, tc.says) {
				t.Fatalf("message %q does not say %q", msg, tc.says)
			}
		})
	}
}
