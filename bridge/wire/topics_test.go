package wire

import (
	"strings"
	"testing"
)

func TestRoute(t *testing.T) {
	tp := Topics{Base: "m2m", Shortcuts: []string{"send"}}
	tests := []struct {
		topic, action, target, code string
	}{
		{"m2m/bridge/request/send", "send", "", ""},
		{"m2m/bridge/request/list_rooms", "list_rooms", "", ""},
		{"m2m/bridge/request/", "", "", CodeUnknownAction},
		{"m2m/bridge/request/a/b", "", "", CodeUnknownAction},
		{"m2m/send/kitchen", "send", "kitchen", ""},
		{"m2m/send/!abc:hs", "send", "!abc:hs", ""},
		{"m2m/send/@alice:hs", "send", "@alice:hs", ""},
		{"m2m/send/general:hs", "send", "#general:hs", ""},
		{"m2m/send/", "send", "", CodeInvalidRequest},
		{"m2m/send/a+b", "send", "", CodeInvalidRequest},
		{"m2m/send/a#", "send", "", CodeInvalidRequest},
		{"m2m/send/a/b", "send", "", CodeInvalidRequest},
		{"other/send/x", "", "", CodeUnknownAction},
	}
	for _, tc := range tests {
		t.Run(tc.topic, func(t *testing.T) {
			action, target, err := tp.Route(tc.topic)
			if tc.code != "" {
				if err == nil || err.Code != tc.code {
					t.Fatalf("route(%q) error = %v, want %s", tc.topic, err, tc.code)
				}
				return
			}
			if err != nil || action != tc.action || target != tc.target {
				t.Fatalf("route(%q) = %q, %q, %v", tc.topic, action, target, err)
			}
		})
	}
}

func FuzzRoute(f *testing.F) {
	for _, s := range []string{"m2m/send/kitchen", "m2m/bridge/request/send", "m2m/send/a:b", "m2m/send/#"} {
		f.Add(s)
	}
	tp := Topics{Base: "m2m", Shortcuts: []string{"send"}}
	f.Fuzz(func(t *testing.T, topic string) {
		action, target, err := tp.Route(topic)
		if err != nil {
			return
		}
		if action == "" || strings.ContainsAny(action+target, "+/\x00") {
			t.Fatalf("route(%q) = %q, %q", topic, action, target)
		}
		if strings.Contains(target, "#") && !strings.HasPrefix(target, "#") {
			t.Fatalf("route(%q) target %q", topic, target)
		}
	})
}
